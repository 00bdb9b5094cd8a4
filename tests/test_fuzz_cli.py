"""Property tests of the CLI's numeric arguments (issue #15): whatever the value, ``main`` returns 0
(worked), 2 (refused, one ``hyperaudio: error:`` line) or 130 (interrupted: never here), never
raises otherwise, and grows peak memory by less than 2 GB.

Values: floats (nan, inf, huge, tiny, negative), integers and junk strings, passed as ``--flag=VALUE``
so a leading ``-`` reaches the parser's type check. The work each accepted value starts is kept tiny:
a 20 ms sound and a small network; valid fit budgets and play speeds are drawn from a range that
finishes at once, and the render bound is lowered to 2^18 samples (the same check, a smaller number).
"""

import contextlib

import pytest
import soundfile as sf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import peak_memory
from conftest import chirp
from hyperaudio import config, fit, hya, render
from hyperaudio.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 8000
TINY = ["--set", "target.params.hidden=[8, 8]", "--set", "target.params.encoding_length=2",
        "--set", "loss.lambda_f=0.0", "--set", "fit.eval_every=5"]
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MEMORY_BOUND = 2e9

JUNK = st.sampled_from(["", " ", "abc", "1e", "0x10", "1_000", "--", "nan", "-nan", "inf", "-inf", "+inf",
                        "1e400", "-1e400", "1e-400", "9" * 400, "١٢", "0.0.1", "None", "true", "½"])
FLOATS = st.floats(allow_nan=True, allow_infinity=True).map(repr)
INTS = st.integers(-(10**30), 10**30).map(str)
ANY_NUMBER = st.one_of(FLOATS, INTS, JUNK, st.text(max_size=6))


def mostly(valid, omit=True):
    """Mostly ``valid`` values, else any number or junk (or the flag left out): about a third of the
    draws of four flags then combine into a call that works."""
    return st.one_of(valid, valid, valid, *([st.none()] if omit else []), ANY_NUMBER)


def invalid_or(valid):
    """Values that must be refused (non-positive, non-finite, junk), or ``valid`` ones that work fast."""
    bad = st.one_of(st.floats(max_value=0.0).map(repr), st.integers(max_value=0).map(str), JUNK,
                    st.sampled_from(["nan", "inf", "1e400", "1e-400"]))
    return st.one_of(bad, valid)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 20 ms WAV and a .hya fitted to it (built once for the module)."""
    folder = tmp_path_factory.mktemp("fuzz")
    x = chirp(SR, 0.02, 300, 900)
    sf.write(folder / "in.wav", x, SR)
    cfg = config.resolve(None, "nerf", ["fit.steps=3", "target.params.hidden=[8, 8]",
                                        "target.params.encoding_length=2", "loss.lambda_f=0.0"])
    hya.save(fit.fit(x[None], SR, cfg, progress=False), folder / "in.hya")
    return folder


def check(capsys, argv):
    """Run ``main(argv)`` and assert the property; returns the status."""
    with peak_memory.peak_rss() as peak:
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse: usage errors exit 2
            status = exc.code
    err = capsys.readouterr().err
    assert status in (0, 2), (argv, status, err)
    assert "Traceback" not in err, (argv, err)
    if status == 2:
        errors = [line for line in err.splitlines() if line.startswith("hyperaudio: error:")]
        assert len(errors) == 1, (argv, err)
    assert peak.growth < MEMORY_BOUND, (argv, peak.growth)
    return status


def fuzz(capsys, argv):
    """:func:`check` inside a property, counting each outcome (``--hypothesis-show-statistics``)."""
    status = check(capsys, argv)
    event(f"{argv[0]}: status {status}")
    return status


def flags(**values):
    """``--name=VALUE`` for each drawn value (None: leave the flag out)."""
    return [f"--{name.replace('_', '-')}={value}" for name, value in values.items() if value is not None]


@settings(FUZZ, max_examples=60)
@given(sr=mostly(st.floats(1000, 768_000).map(repr), omit=False), start=mostly(st.floats(0, 0.015).map(repr)),
       duration=mostly(st.floats(1e-3, 0.1).map(repr)), speed=mostly(st.floats(1e-2, 1e2).map(repr)))
def test_render_numeric_arguments(files, capsys, sr, start, duration, speed):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(render, "MAX_OUTPUT_SAMPLES", 1 << 18)
        out = files / "r.wav"
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        status = fuzz(capsys, ["render", str(files / "in.hya"), *flags(sr=sr, start=start, duration=duration,
                                                                         speed=speed), "-o", str(out)])
        assert (status == 0) == out.exists()
        if status == 0:
            assert 0 < sf.info(str(out)).frames <= 1 << 18


@FUZZ
@given(budget=st.one_of(
           st.tuples(st.just("steps"), invalid_or(st.integers(1, 20).map(str))),
           st.tuples(st.just("seconds"), invalid_or(st.floats(1e-12, 0.05).map(repr)))),
       target=st.one_of(st.none(), ANY_NUMBER))
def test_fit_numeric_arguments(files, capsys, budget, target):
    out = files / "f.hya"
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    status = fuzz(capsys, ["fit", str(files / "in.wav"), "--inr", "nerf", *TINY, "-q",
                            *flags(**{budget[0]: budget[1], "target_sisnr": target}), "-o", str(out)])
    assert (status == 0) == out.exists()
    if status == 0:
        assert hya.load(out).info["steps"] > 0


@settings(FUZZ, max_examples=20)
@given(refine=ANY_NUMBER)
def test_encode_refine_argument(files, capsys, refine):
    # No hypernetwork at that path: a valid --refine is parsed and then refused for the missing model.
    out = files / "e.hya"
    assert fuzz(capsys, ["encode", str(files / "no-run"), str(files / "in.wav"), f"--refine={refine}",
                          "-o", str(out)]) == 2
    assert not out.exists()


@settings(FUZZ, max_examples=30)
@given(sr=mostly(st.floats(1000, 768_000).map(repr)), speed=st.one_of(st.none(), invalid_or(st.floats(0.5, 1000).map(repr))),
       start=mostly(st.floats(0, 0.015).map(repr)), gain=mostly(st.floats(-200, 40).map(repr)))
def test_play_numeric_arguments(files, capsys, sr, speed, start, gain):
    # A null sink at real-time pace: a valid speed of at least 0.5 plays the 20 ms in 40 ms or less.
    fuzz(capsys, ["play", str(files / "in.hya"), "--null", "-q", *flags(sr=sr, speed=speed, start=start,
                                                                            gain=gain)])


def test_the_strategies_reach_both_outcomes(files, capsys):
    """The properties above are only worth something if the values both pass and fail."""
    hya_path = str(files / "in.hya")
    assert check(capsys, ["render", hya_path, "--sr=8000", "--speed=2", "-o", str(files / "ok.wav")]) == 0
    assert check(capsys, ["render", hya_path, "--sr=8000", "--speed=1e-300", "-o", str(files / "no.wav")]) == 2
    assert check(capsys, ["play", hya_path, "--null", "-q", "--gain=-1e308"]) == 0
    assert check(capsys, ["play", hya_path, "--null", "-q", "--gain=1e308"]) == 2
