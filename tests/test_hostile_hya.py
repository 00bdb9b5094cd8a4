"""Hostile and damaged ``.hya`` files and sizes, through the real CLI (issue #15).

Every case starts from a small valid file this module fits, rewrites its metadata or tensors with
safetensors, and runs ``hyperaudio.cli.main`` in-process: a refusal is exit status 2 with exactly
one ``hyperaudio: error:`` line and no traceback, within 2 GB of peak memory growth, and no output
written over a good one.
"""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hyperaudio import cli, config, fit, hya, limits
from peak_memory import available, peak_rss

SR = 8000
N = 600  # samples: three 256-sample chunks, so chunk lists have something to get wrong
MEMORY_BOUND = 2 << 30

pytestmark = pytest.mark.skipif(not available(), reason="needs /proc/self/clear_refs (Linux) to measure memory")


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """A fitted stereo .hya (nerf, hidden [8]) and its reference WAV."""
    folder = tmp_path_factory.mktemp("valid")
    t = np.arange(N) / SR
    x = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    sf.write(str(folder / "ref.wav"), x.T, SR)
    cfg = config.resolve("nerf-inr", overrides=["target.params.hidden=[8]", "fit.chunk_samples=256",
                                                "fit.overlap_samples=32", "fit.steps=2"])
    path = hya.save(fit.fit(x, SR, cfg, device="cpu", progress=False), folder / "valid.hya")
    return path, folder / "ref.wav"


def contents(path):
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def forge(src, dst, meta=None, config_at=None, tensors=None):
    """A copy of ``src`` with metadata fields replaced (``meta``), one config value replaced
    (``config_at = ("target.params.hidden", value)``) and ``tensors(dict)`` applied."""
    metadata, weights = contents(src)
    metadata.update(meta or {})
    if config_at is not None:
        cfg = json.loads(metadata["config"])
        *path, last = config_at[0].split(".")
        node = cfg
        for part in path:
            node = node[part]
        node[last] = config_at[1]
        metadata["config"] = json.dumps(cfg)
    if tensors is not None:
        weights = tensors(weights)
    save_file(weights, str(dst), metadata=metadata)
    return dst


def run(capsys, *args):
    """``(exit status, stdout, stderr, peak memory growth)`` of one in-process CLI call."""
    capsys.readouterr()
    with peak_rss() as peak:
        status = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err, peak.growth


def assert_refused(result, match):
    status, _, err, growth = result
    assert status == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("hyperaudio: error:")]
    assert len(errors) == 1 and match in errors[0], err
    assert growth < MEMORY_BOUND, f"peak growth {growth / 1e9:.2f} GB"


def first_param(weights):
    return next(k for k in weights if k.startswith("params."))


def with_value(value):
    def change(weights):
        key = first_param(weights)
        weights[key] = weights[key].clone()
        weights[key].view(-1)[3] = value
        return weights

    return change


def with_dtype(dtype, which="params."):
    return lambda weights: {k: (v.to(dtype) if k.startswith(which) else v) for k, v in weights.items()}


# Damaged metadata: refused by every command, info included (it reads the header).
DAMAGED = {
    "rate zero": ({"sample_rate": "0.0"}, "unsupported sample rate"),
    "rate nan": ({"sample_rate": "nan"}, "unsupported sample rate"),
    "rate negative": ({"sample_rate": "-8000"}, "unsupported sample rate"),
    "rate huge": ({"sample_rate": "1e12"}, "unsupported sample rate"),
    "rate text": ({"sample_rate": "fast"}, "not a number"),
    "samples huge": ({"num_samples": str(10**12)}, "num_samples 1000000000000 is outside"),
    "samples float": ({"num_samples": "1e12"}, "is not an integer"),
    "samples zero": ({"num_samples": "0"}, "num_samples 0 is outside"),
    "channels zero": ({"channels": "0"}, "channels 0 is outside"),
    "channels many": ({"channels": "100000"}, "channels 100000 is outside"),
    "version zero": ({"version": "0"}, "version 0 is outside"),
    "version text": ({"version": "one"}, "is not an integer"),
    "version newer": ({"version": "7"}, "newer than this hyperaudio supports"),
    "config list": ({"config": "[1, 2]"}, "config must be a JSON object"),
    "config bad json": ({"config": "{not json"}, "config is not valid JSON"),
    "config deep": ({"config": "[" * 100000}, "config is not valid JSON"),
    "config huge": ({"config": json.dumps({"preset": {"description": "x" * (2 << 20)}})}, "characters long"),
    "info list": ({"info": "[]"}, "info must be a JSON object"),
    "gain huge": ({"gain": "1e30"}, "gain 1e+30 is outside"),
    "gain nan": ({"gain": "nan"}, "gain nan is outside"),
    "gain zero": ({"gain": "0"}, "gain 0 is outside"),
    "chunks empty": ({"chunks": "[]"}, "0 chunks"),
    "chunks object": ({"chunks": "{}"}, "chunks must be a JSON list"),
    "chunks unsorted": ({"chunks": "[[0, 256], [172, 256], [100, 256]]"}, "not after chunk 1"),
    "chunks gap": ({"chunks": "[[0, 200], [300, 256], [344, 256]]"}, "samples 200..299 are in no chunk"),
    "chunks late start": ({"chunks": "[[10, 256], [172, 256], [344, 256]]"}, "first chunk starts at 10, not 0"),
    "chunks negative": ({"chunks": "[[-5, 256], [172, 256], [344, 256]]"}, "first chunk starts at -5, not 0"),
    "chunks floats": ({"chunks": "[[0, 256.0], [172, 256], [344, 256]]"}, "not [start, length] integers"),
    "chunks short": ({"chunks": "[[0, 256], [172, 256], [300, 256]]"}, "before the sound's end (600)"),
    "chunks zero length": ({"chunks": "[[0, 0], [172, 256], [344, 256]]"}, "has length 0"),
    "chunk huge": ({"chunks": json.dumps([[0, 2**40]])}, f"has length {2**40}"),
    "chunk past end": ({"chunks": "[[0, 300], [250, 400], [600, 10]]"}, "past the sound's 600 samples"),
}


@pytest.mark.parametrize("command", ["info", "render", "eval", "play"])
@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_metadata_is_refused_in_one_line(valid, tmp_path, capsys, case, command):
    meta, match = DAMAGED[case]
    bad = forge(valid[0], tmp_path / "bad.hya", meta=meta)
    assert_refused(run(capsys, *cli_args(command, bad, valid[1], tmp_path)), match)
    if command == "render":
        assert (tmp_path / "out.wav").read_bytes() == b"a good earlier render"  # nothing destroyed


def cli_args(command, path, reference, tmp_path):
    out = tmp_path / "out.wav"
    out.write_bytes(b"a good earlier render")
    return {"info": ["info", path], "render": ["render", path, "--sr", SR, "-o", out],
            "eval": ["eval", reference, path], "play": ["play", path, "--null", "-q"]}[command]


# Readable headers whose network or weights are refused when loaded: info shows what the file
# claims without building anything; the commands that need the network refuse.
LOADED = {
    "hidden 1e9": ({"config_at": ("target.params.hidden", [1e9, 1e9])}, "too large"),
    "width 1e6": ({"config_at": ("target.params.encoding_length", 10**6)}, "limits.MAX_WIDTH"),
    "hidden negative": ({"config_at": ("target.params.hidden", [-5])}, "negative dimension"),
    "params a list": ({"config_at": ("target.params", [8])}, "target.params must be a table"),
    "fit not a table": ({"config_at": ("fit", 3)}, "[fit] must be a table"),
    "nan weight": ({"tensors": with_value(float("nan"))}, "holds NaN or infinite values"),
    "inf weight": ({"tensors": with_value(float("inf"))}, "holds NaN or infinite values"),
    "nan buffer": ({"tensors": lambda w: {k: (v * float("nan") if k.startswith("buffers.") else v)
                                           for k, v in w.items()}}, "'buffers.encoding.frequencies' holds NaN"),
}
INFO_REFUSES = {"params a list", "fit not a table"}  # the header's config structure is checked


@pytest.mark.parametrize("command", ["info", "render", "eval", "play"])
@pytest.mark.parametrize("case", list(LOADED))
def test_hostile_network_or_weights_are_refused_when_loaded(valid, tmp_path, capsys, case, command):
    change, match = LOADED[case]
    bad = forge(valid[0], tmp_path / "bad.hya", **change)
    result = run(capsys, *cli_args(command, bad, valid[1], tmp_path))
    if command == "info" and case not in INFO_REFUSES:
        status, out, err, growth = result
        assert status == 0 and "target:      nerf" in out and growth < MEMORY_BOUND, err
    else:
        assert_refused(result, match)


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool])
@pytest.mark.parametrize("command", ["info", "render"])
def test_integer_weights_are_refused(valid, tmp_path, capsys, dtype, command):
    bad = forge(valid[0], tmp_path / "bad.hya", tensors=with_dtype(dtype))
    assert_refused(run(capsys, *cli_args(command, bad, valid[1], tmp_path)), "a .hya stores floating-point weights")


def test_weights_of_the_wrong_row_count_are_refused(valid, tmp_path, capsys):
    bad = forge(valid[0], tmp_path / "bad.hya", tensors=lambda w: {k: v[:-1] for k, v in w.items()})
    assert_refused(run(capsys, "info", bad), "expected [6, ...] (3 chunk(s) x 2 channel(s))")


@pytest.mark.parametrize("dtype, which", [(torch.float16, "params."), (torch.bfloat16, "params."), (torch.float64, "")])
def test_other_float_weights_are_converted_with_one_warning(valid, tmp_path, capsys, dtype, which):
    cast = forge(valid[0], tmp_path / "cast.hya", tensors=with_dtype(dtype, which))  # "": buffers too
    status, _, err, _ = run(capsys, "render", cast, "--sr", SR, "-o", tmp_path / "cast.wav")
    assert status == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("hyperaudio: warning:")]
    assert len(warnings) == 1 and f"converted {str(dtype)[6:]} weights" in warnings[0], err
    original, _ = sf.read(str(tmp_path / "cast.wav"))
    status, out, _, _ = run(capsys, "info", cast)
    assert status == 0 and "weights:" in out
    assert run(capsys, "render", valid[0], "--sr", SR, "-o", tmp_path / "ref.wav")[0] == 0
    reference, _ = sf.read(str(tmp_path / "ref.wav"))
    assert np.abs(original - reference).max() < (0.05 if dtype != torch.float64 else 1e-6)


def test_info_reads_the_header_without_building_the_network(valid, tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("info built the network")

    per_chunk = sum(p.numel() for p in hya.load(valid[0]).params.values()) // 6
    monkeypatch.setattr(config, "build_target", refuse)
    status, out, err, _ = run(capsys, "info", valid[0])
    assert status == 0, err
    assert f"({per_chunk:,} parameters per chunk and channel)" in out and "3 x 256 samples" in out


def test_export_refuses_a_hostile_network_and_writes_nothing(valid, tmp_path, capsys):
    bad = forge(valid[0], tmp_path / "bad.hya", config_at=("target.params.hidden", [1e9, 1e9]))
    onnx = tmp_path / "bad.onnx"
    assert_refused(run(capsys, "export", bad, "-o", onnx), "too large")
    assert not onnx.exists()


def test_a_short_encoded_sound_may_end_inside_its_padded_chunk(valid, tmp_path):
    # hyperaudio encode pads a sound shorter than the model's clip: one chunk longer than the sound.
    ok = forge(valid[0], tmp_path / "short.hya", meta={"num_samples": "500", "chunks": "[[0, 600]]"},
               tensors=lambda w: {k: (v[:2] if k.startswith("params.") else v) for k, v in w.items()})
    assert hya.read_header(ok).chunks == [(0, 600)] and hya.load(ok).num_samples == 500


# -- sizes a fit's settings decide ----------------------------------------------------------------
def test_fit_refuses_a_billion_wide_layer_within_bounded_memory(tmp_path, capsys, write_audio):
    wav = write_audio("in.wav", np.zeros(N, dtype=np.float32), SR)
    # kan's initialisation cannot run on the meta device: with [40, 4000, 4000] the dry run stops at its
    # first layer and the real build is stopped by the registration count, before touching layer 3.
    for inr, hidden in (("siren", "[1000000000]"), ("kan", "[1000000000]"), ("kan", "[40, 4000, 4000]")):
        out = tmp_path / f"{inr}.hya"
        assert_refused(run(capsys, "fit", wav, "--inr", inr, "--set", f"target.params.hidden={hidden}",
                           "--steps", 1, "-q", "-o", out), "limits.MAX_PARAMETERS")
        assert not out.exists()


def test_fit_refuses_up_front_what_its_steps_cannot_hold(tmp_path, capsys, write_audio, monkeypatch):
    monkeypatch.setattr(limits, "available_memory", lambda device: 16 << 30)  # this test's machine
    wav = write_audio("in.wav", np.zeros(8 * 32768, dtype=np.float32), SR)
    out = tmp_path / "big.hya"
    result = run(capsys, "fit", wav, "--inr", "siren", "--set", "target.params.hidden=[3000,3000,3000]",
                 "--steps", 1, "-q", "-o", out)
    assert_refused(result, "lower fit.chunk_batch or fit.chunk_samples")
    assert not out.exists()


def test_no_builtin_preset_is_refused_by_the_fit_memory_estimate(monkeypatch):
    from hyperaudio.plugins import get_registry

    monkeypatch.setattr(limits, "available_memory", lambda device: 6 << 30)  # a small laptop's free memory
    for name in get_registry().names("presets"):
        cfg = config.resolve(name)
        chunk = cfg["fit"]["chunk_samples"]
        limits.check_fit_memory(config.build_target(cfg), cfg, 2, 16 * chunk, torch.device("cpu"))


def test_the_fit_memory_estimate_never_blocks_a_module_it_cannot_measure(monkeypatch):
    class NeedsData(torch.nn.Module):  # .item() has no meaning on the meta device
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def forward(self, t):
            return self.layer(t) * float(t.abs().max().item() > 0)

    monkeypatch.setattr(limits, "available_memory", lambda device: 1)
    cfg = config.resolve("nerf-inr")
    limits.check_fit_memory(NeedsData(), cfg, 1, 1000, torch.device("cpu"))  # no estimate: no refusal
    with pytest.raises(config.ConfigError, match="fit.chunk_batch"):
        limits.check_fit_memory(torch.nn.Linear(1, 1), cfg, 1, 1000, torch.device("cpu"))


def test_build_target_bounds_parameters_modules_and_width():
    base = config.resolve("nerf-inr")

    def build(**params):
        return config.build_target({**base, "target": {"name": "nerf", "params": params}})

    with pytest.raises(config.ConfigError, match="limits.MAX_PARAMETERS"):
        build(hidden=[6000, 6000])
    with pytest.raises(config.ConfigError, match="limits.MAX_TENSORS"):
        build(hidden=[1] * 20000)
    with pytest.raises(limits.TooLarge, match="limits.MAX_MODULES"), limits.bounded_construction():
        torch.nn.Sequential(*[torch.nn.ReLU() for _ in range(limits.MAX_MODULES + 1)])
    with pytest.raises(config.ConfigError, match="limits.MAX_WIDTH"):
        build(hidden=[limits.MAX_WIDTH + 1])
    assert build(hidden=[limits.MAX_WIDTH]) is not None
