"""Hostile arguments, output paths, signals and devices (issue #15): each refused in one line with
status 2 before any work, within bounded memory, and no file destroyed or left half-written."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import peak_memory
from conftest import chirp
from hyperaudio import audio, config, fit, hya, render
from hyperaudio.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 8000
TINY = ["--set", "target.params.hidden=[16, 16]", "--set", "target.params.encoding_length=4",
        "--set", "loss.lambda_f=0.0"]
FIT = ["--inr", "nerf", *TINY, "-q"]
ROOT = Path(__file__).resolve().parents[1]


def tiny_config(steps=5):
    return config.resolve(None, "nerf", [f"fit.steps={steps}", "target.params.hidden=[16, 16]",
                                         "target.params.encoding_length=4", "loss.lambda_f=0.0"])


@pytest.fixture(scope="module")
def stereo_hya(tmp_path_factory):
    """A fitted stereo .hya of 0.25 s at 8 kHz (tiny network, a few steps: only its shape matters)."""
    x = np.stack([chirp(SR, 0.25, 200, 800), chirp(SR, 0.25, 300, 1200)])
    path = tmp_path_factory.mktemp("hya") / "s.hya"
    hya.save(fit.fit(x, SR, tiny_config(), progress=False), path)
    return path


@pytest.fixture
def wav(write_audio):
    return write_audio("in.wav", chirp(SR, 0.25), SR)


def run(argv):
    """``main(argv)``'s status; argparse's SystemExit counts as its code, as a shell would see it."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


def refused(capsys, status):
    """Assert a refusal: status 2 and stderr exactly one ``hyperaudio: error:`` line; returns the line."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("hyperaudio: error:"), err
    assert "Traceback" not in err
    return lines[0]


def failed_after_work(capsys, status):
    """Assert a failure once the work is done: status 2, the progress lines, then one error line; returns it."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2 and "Traceback" not in err, err
    assert [line for line in lines if line.startswith("hyperaudio: error:")] == lines[-1:], err
    return lines[-1]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes: nothing changed, nothing added (no temp file left)."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a fit, an encoding or a render starts: a refusal must come before any work."""
    def started(*args, **kwargs):
        raise AssertionError("the work started before the arguments were refused")

    import hyperaudio.hypernet.encode as encode

    for module, name in [(fit, "fit"), (encode, "encode"), (render, "render"), (render, "render_to_file")]:
        monkeypatch.setattr(module, name, started, raising=False)


# -- 1: an output that is one of the inputs ---------------------------------------------------------
def same_file_cases(tmp_path, wav, hya_path):
    local = tmp_path / "s.hya"
    local.write_bytes(hya_path.read_bytes())
    os.link(local, tmp_path / "hard.onnx")
    (tmp_path / "link.wav").symlink_to(wav)
    (tmp_path / "sub").mkdir()
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo_8000.wav").write_bytes(wav.read_bytes())
    return {
        "fit IN -o IN": ["fit", wav, *FIT, "-o", wav],
        "fit IN -o sub/../IN": ["fit", wav, *FIT, "-o", tmp_path / "sub" / ".." / "in.wav"],
        "fit IN -o symlink to IN": ["fit", wav, *FIT, "-o", tmp_path / "link.wav"],
        "render IN -o IN": ["render", local, "--sr", SR, "-o", local],
        "encode IN -o IN": ["encode", tmp_path / "run", wav, "-o", wav],
        "encode -o the model": ["encode", local, wav, "-o", local],
        "eval --plot the reference": ["eval", wav, local, "--plot", wav],
        "export -o a hard link of IN": ["export", local, "-o", tmp_path / "hard.onnx"],
        "demo --input a file it writes": ["demo", "--input", out / "demo_8000.wav", "-o", out],
    }


@pytest.mark.parametrize("case", ["fit IN -o IN", "fit IN -o sub/../IN", "fit IN -o symlink to IN", "render IN -o IN",
                                  "encode IN -o IN", "encode -o the model", "eval --plot the reference",
                                  "export -o a hard link of IN", "demo --input a file it writes"])
def test_an_output_that_is_an_input_is_refused_before_any_work(tmp_path, wav, stereo_hya, capsys, no_work, case):
    argv = same_file_cases(tmp_path, wav, stereo_hya)[case]
    before = snapshot(tmp_path)
    line = refused(capsys, run(argv))
    assert "is the input" in line and "destroy" in line
    assert snapshot(tmp_path) == before


def test_same_file_sees_through_relative_paths_symlinks_and_hard_links(tmp_path, monkeypatch):
    a = tmp_path / "a.wav"
    a.write_bytes(b"x")
    os.link(a, tmp_path / "hard.wav")
    (tmp_path / "soft.wav").symlink_to(a)
    monkeypatch.chdir(tmp_path)
    assert audio.same_file("a.wav", a) and audio.same_file("./x/../a.wav", a)
    assert audio.same_file(tmp_path / "hard.wav", a) and audio.same_file("soft.wav", "hard.wav")
    assert not audio.same_file("b.wav", a) and not audio.same_file(tmp_path / "hard.wav", "missing.wav")


# -- 2, 3: render arguments --------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--sr", "1"], "unsupported sample rate"),
    (["--sr", "1e7"], "unsupported sample rate"),
    (["--sr", "nan"], "--sr: must be a finite number"),
    (["--sr", "8000", "--start", "nan"], "--start: must be a finite number"),
    (["--sr", "8000", "--start", "inf"], "--start: must be a finite number"),
    (["--sr", "8000", "--start", "-1"], "--start: must be >= 0"),
    (["--sr", "8000", "--duration", "inf"], "--duration: must be a finite number"),
    (["--sr", "8000", "--duration", "-1"], "--duration: must be positive"),
    (["--sr", "8000", "--speed", "1e-9"], "float32 WAV can hold"),
    (["--sr", "8000", "--duration", "1e9"], "float32 WAV can hold"),
    (["--sr", "8000", "--speed", "inf"], "--speed: must be a finite number"),
    (["--sr", "8000", "--duration", "1e-9"], "shorter than one sample"),
    (["--sr", "8000", "--start", "9"], "past the end"),
])
def test_render_refuses_bad_arguments_within_bounded_memory(tmp_path, stereo_hya, capsys, args, message):
    out = tmp_path / "r.wav"
    with peak_memory.peak_rss() as peak:
        status = run(["render", stereo_hya, *args, "-o", out])
    assert message in refused(capsys, status)
    assert peak.growth < 200e6, peak.growth  # a 1e9-second render would need terabytes
    assert list(tmp_path.iterdir()) == []


def test_render_warns_about_a_duration_past_the_end_and_pads_with_silence(tmp_path, stereo_hya, capsys):
    out = tmp_path / "r.wav"
    assert run(["render", stereo_hya, "--sr", SR, "--duration", "0.5", "-o", out]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hyperaudio: warning:")]
    assert len(warnings) == 1 and "past the end" in warnings[0]
    y, _ = sf.read(out, always_2d=True)
    assert y.shape == (4000, 2) and np.all(y[2100:] == 0) and np.any(y[:2000] != 0)


@pytest.mark.parametrize("kw", [dict(sr=8000), dict(sr=48000, start=0.05, duration=0.3),
                                dict(sr=22050, speed=3.1), dict(sr=4000), dict(sr=3000, speed=0.7, start=0.1),
                                dict(sr=5000, duration=0.4)])
def test_render_to_file_writes_the_samples_render_returns(tmp_path, stereo_hya, monkeypatch, kw):
    # Blocks of 300 frames: every case crosses block boundaries, at the output rate and (sr / speed below
    # 8 kHz) on the native grid that soxr's stream resamples.
    monkeypatch.setattr(render, "BLOCK", 300)
    inr = hya.load(stereo_hya)
    want = render.render(inr, **kw)
    frames = render.render_to_file(inr, tmp_path / "r.wav", **kw)
    got, rate = sf.read(tmp_path / "r.wav", dtype="float32", always_2d=True)
    assert frames == want.shape[1] > 2 * 300 and rate == kw["sr"]
    np.testing.assert_allclose(got.T, want, atol=1e-6)


def test_render_to_file_holds_a_whole_signal_only_for_a_network_with_its_own_postprocess(tmp_path, stereo_hya,
                                                                                          monkeypatch):
    inr = hya.load(stereo_hya)
    inr.module.postprocess = lambda y, sr: 0.5 * y[0] + 0.25 * np.roll(y[0], 1)  # not block-local
    want = render.render(inr, 12000)
    render.render_to_file(inr, tmp_path / "r.flac", 12000, subtype="PCM_24")
    got, _ = sf.read(tmp_path / "r.flac", dtype="float32", always_2d=True)
    np.testing.assert_allclose(got.T, want, atol=1e-6)
    monkeypatch.setattr(render, "MAX_WHOLE_SAMPLES", 1000)
    with pytest.raises(render.RenderError, match="whole output at once"):
        render.render_to_file(inr, tmp_path / "long.wav", 12000)
    assert not (tmp_path / "long.wav").exists()


def test_a_long_render_streams_to_disk_in_flat_memory(tmp_path, stereo_hya):
    if not peak_memory.available():
        pytest.skip("no resettable peak-memory counter here")
    inr = hya.load(stereo_hya)
    # 160 s at 48 kHz, stereo: 61 MB of float32 output, 123 MB of float64 positions if held whole.
    with peak_memory.peak_rss() as peak:
        frames = render.render_to_file(inr, tmp_path / "long.wav", 48000, duration=160.0)
    assert frames == 160 * 48000 and sf.info(tmp_path / "long.wav").frames == frames
    assert peak.growth < 40e6, peak.growth


def test_the_output_bound_is_what_a_float32_wav_holds(stereo_hya):
    inr = hya.load(stereo_hya)
    limit = render.MAX_OUTPUT_SAMPLES // inr.channels
    rate = 32768  # a power of two: limit / rate * rate is exactly limit
    assert render.output_frames(inr, rate, duration=limit / rate) == limit
    with pytest.raises(render.RenderError, match="float32 WAV"):
        render.output_frames(inr, rate, duration=(limit + 1) / rate)
    for bad in [dict(speed=float("nan")), dict(start=float("inf")), dict(duration=float("inf")), dict(sr=0.0)]:
        with pytest.raises(render.RenderError):
            render.output_frames(inr, **{"sr": 8000.0, **bad})


# -- 2: a WAV cut short --------------------------------------------------------------------------------
@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_a_truncated_wav_is_read_with_one_warning(tmp_path, capsys, subtype):
    whole = tmp_path / "whole.wav"
    sf.write(whole, chirp(SR, 0.5), SR, subtype=subtype)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    x, _ = audio.load(whole)
    assert x.shape[1] == 4000 and capsys.readouterr().err == ""
    y, _ = audio.load(cut)
    lines = capsys.readouterr().err.strip().splitlines()
    assert 1500 < y.shape[1] < 2000
    assert len(lines) == 1 and lines[0].startswith("hyperaudio: warning:")
    assert f"read {y.shape[1]} of the 4000 frames" in lines[0]


def test_fit_goes_on_with_a_truncated_wav(tmp_path, capsys):
    whole = tmp_path / "whole.wav"
    sf.write(whole, chirp(SR, 0.5), SR)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:5000])
    assert run(["fit", cut, *FIT, "--steps", "2", "-o", tmp_path / "o.hya"]) == 0
    assert "of the 4000 frames its header promises" in capsys.readouterr().err
    assert hya.load(tmp_path / "o.hya").num_samples < 4000


# -- 4: output paths, checked before the work, and a fit never lost -------------------------------------
def unwritable(tmp_path, name):
    (tmp_path / "a_file").write_text("a file, not a folder\n")
    (tmp_path / "a_folder").mkdir()
    return {"an existing folder": tmp_path / "a_folder", "under a regular file": tmp_path / "a_file" / name,
            "deep under a regular file": tmp_path / "a_file" / "x" / "y" / name,
            "/sys": Path("/sys") / name, "/proc/1": Path("/proc/1") / name}


def commands(wav, hya_path, out):
    return {
        "fit": ["fit", wav, *FIT, "--steps", "1", "-o", out],
        "render": ["render", hya_path, "--sr", SR, "-o", out],
        "encode": ["encode", "no-such-run", wav, "-o", out],
        "eval --plot": ["eval", wav, hya_path, "--plot", out],
        "export": ["export", hya_path, "-o", out],
    }


@pytest.mark.parametrize("where", ["an existing folder", "under a regular file", "deep under a regular file",
                                   "/sys", "/proc/1"])
@pytest.mark.parametrize("command", ["fit", "render", "encode", "eval --plot", "export"])
def test_an_output_that_cannot_be_written_is_refused_before_the_work(tmp_path, wav, stereo_hya, capsys, no_work,
                                                                      where, command):
    name = {"render": "x.wav", "eval --plot": "x.png", "export": "x.onnx"}.get(command, "x.hya")
    out = unwritable(tmp_path, name)[where]
    if not out.parent.is_dir() and where in ("/sys", "/proc/1"):
        pytest.skip(f"no {out.parent} here")
    before = snapshot(tmp_path)
    line = refused(capsys, run(commands(wav, stereo_hya, out)[command]))
    assert str(out) in line
    assert snapshot(tmp_path) == before


def test_a_fit_whose_output_cannot_be_written_at_the_end_is_saved_elsewhere(tmp_path, wav, capsys, monkeypatch):
    # The output folder is fine when checked, then replaced by a regular file while the fit runs.
    folder = tmp_path / "out"
    folder.mkdir()
    real_fit = fit.fit

    def fit_then_break_the_folder(*args, **kwargs):
        inr = real_fit(*args, **kwargs)
        folder.rmdir()
        folder.write_text("now a file\n")
        return inr

    monkeypatch.setattr(fit, "fit", fit_then_break_the_folder)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    line = failed_after_work(capsys, run(["fit", wav, *FIT, "--steps", "3", "-o", folder / "o.hya"]))
    assert "the fit is saved as" in line
    rescued = Path(line.rsplit("saved as ", 1)[1])
    assert rescued.parent == tmp_path / "cwd"
    assert hya.load(rescued).info["steps"] == 3


def test_a_save_that_fails_is_rescued_beside_the_output(tmp_path, wav, capsys, monkeypatch):
    real_save, calls = hya.save, []

    def disk_full_once(inr, path):
        calls.append(Path(path))
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real_save(inr, path)

    monkeypatch.setattr(hya, "save", disk_full_once)
    line = failed_after_work(capsys, run(["fit", wav, *FIT, "--steps", "2", "-o", tmp_path / "o.hya"]))
    assert "No space left on device" in line and str(calls[1]) in line
    assert calls[1].parent == tmp_path and not (tmp_path / "o.hya").exists()
    assert hya.load(calls[1]).info["steps"] == 2


# -- 5: signals ----------------------------------------------------------------------------------------
def test_a_fit_with_no_step_never_replaces_an_existing_output(tmp_path, wav, stereo_hya, capsys, monkeypatch):
    out = tmp_path / "o.hya"
    out.write_bytes(stereo_hya.read_bytes())
    before = snapshot(tmp_path)

    def interrupted(*args, **kwargs):  # Ctrl-C during the first step
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(fit, "call_batched", interrupted)
        assert run(["fit", wav, *FIT, "--steps", "5", "-o", out]) == 130
    assert "interrupted before the first step" in capsys.readouterr().err
    assert snapshot(tmp_path) == before
    # A time budget spent before the first step has nothing to save either.
    line = failed_after_work(capsys, run(["fit", wav, *FIT, "--seconds", "1e-9", "-o", out]))
    assert "nothing learnt" in line
    assert snapshot(tmp_path) == before


def start_fit(tmp_path, wav, out, *extra):
    err = open(tmp_path / "stderr.txt", "w")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "hyperaudio.cli", "fit", str(wav), "--inr", "nerf", *extra,
                             "--seconds", "60", "-o", str(out)], cwd=tmp_path, stderr=err, env=env)
    return proc, tmp_path / "stderr.txt"


def wait_for(proc, log: Path, text: str):
    """Poll the child's stderr until ``text`` appears (or the child ends)."""
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text(errors="replace")
        time.sleep(0.01)


def test_sigterm_mid_fit_saves_what_was_learnt(tmp_path, wav):
    out = tmp_path / "o.hya"
    proc, log = start_fit(tmp_path, wav, out, *TINY)
    try:
        wait_for(proc, log, " step ")  # the progress bar shows a step: the fit is under way
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130
    finally:
        proc.kill()
    err = log.read_text()
    assert "Traceback" not in err and "interrupted: saved the progress so far" in err
    info = hya.load(out).info
    assert info["steps"] > 0 and info["interrupted"]


def test_sigint_before_the_first_step_keeps_the_existing_output(tmp_path, write_audio, stereo_hya):
    # The default network on 6 s at 16 kHz: its first step takes about a second, ample time to
    # interrupt once the progress bar (created just before the loop) appears.
    wav = write_audio("long.wav", chirp(16000, 6.0), 16000)
    out = tmp_path / "o.hya"
    out.write_bytes(stereo_hya.read_bytes())
    before = out.read_bytes()
    proc, log = start_fit(tmp_path, wav, out)
    try:
        wait_for(proc, log, "%|")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        proc.kill()
    err = log.read_text()
    assert "Traceback" not in err and " step " not in err, err
    assert "nothing learnt" in err and out.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.hya.")]  # no temp file left


# -- 6: devices ----------------------------------------------------------------------------------------
def missing_cuda() -> str:
    """A CUDA device this machine lacks: ``cuda`` without CUDA, else one past the last GPU."""
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "missing cuda"])
@pytest.mark.parametrize("command", ["fit", "encode", "train"])
def test_an_unknown_device_is_refused_naming_the_devices_there_are(tmp_path, wav, capsys, no_work, command,
                                                                   device):
    device = missing_cuda() if device == "missing cuda" else device
    argv = {"fit": ["fit", wav, *FIT, "--steps", "1", "-o", tmp_path / "o.hya"],
            "encode": ["encode", "no-such-run", wav, "-o", tmp_path / "o.hya"],
            "train": ["train", "--preset", "hypersound-nerf", "--data", tmp_path, "--steps", "1", "-q",
                      "-o", tmp_path / "run"]}[command]
    line = refused(capsys, run([*argv, "--device", device]))
    assert f"no device '{device}'" in line and "devices here: auto, cpu" in line
    assert not (tmp_path / "o.hya").exists() and not (tmp_path / "run").exists()


def test_pick_device():
    assert fit.pick_device("cpu").type == "cpu" and fit.pick_device("auto").type in ("cpu", "cuda")
    assert fit.pick_device(torch.device("cpu")).type == "cpu"
    assert fit.available_devices()[0] == "cpu"
    with pytest.raises(fit.DeviceError, match="devices here"):
        fit.pick_device(missing_cuda())


def test_play_refuses_an_unknown_device_and_plays_cuda_on_the_cpu_when_there_is_none(stereo_hya, capsys):
    line = refused(capsys, run(["play", stereo_hya, "--null", "-q", "--device", "tpu"]))
    assert "unknown device 'tpu'" in line and "devices here: auto, cpu" in line
    if torch.cuda.is_available():
        refused(capsys, run(["play", stereo_hya, "--null", "-q", "--device", missing_cuda()]))
        return
    assert run(["play", stereo_hya, "--null", "-q", "--device", "cuda", "--start", "0.2"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["hyperaudio: warning: --device cuda: no usable CUDA device here; playing on the CPU"]


# -- argparse: one line too ------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["render", "x.hya", "--sr", "fast", "-o", "y.wav"], "render: argument --sr: not a number: 'fast'"),
    (["fit", "x.wav", "--steps", "1e5", "-o", "y.hya"], "fit: argument --steps: not an integer: '1e5'"),
    (["fit", "x.wav", "--target-sisnr", "nan", "-o", "y.hya"], "--target-sisnr: must be a finite number"),
    (["encode", "run", "x.wav", "--refine", "-3", "-o", "y.hya"], "--refine: must be >= 0"),
    (["render", "x.hya"], "the following arguments are required"),
    (["nope"], "invalid choice"),
])
def test_argument_errors_are_one_line(capsys, argv, message):
    assert message in refused(capsys, run(argv))
