"""ONNX export: every built-in target network exports and matches PyTorch; the model's interface;
the onnx playback backend.

Tolerance: ``onnx_export.verify`` accepts a difference of 3x the INR's own float32 resolution (the
larger of PyTorch's float32-vs-float64 error and the output change for a one-ulp change of ``t``)
plus 1e-6 of full scale: two float32 evaluations of one function differ by about that much and no
more (``hyperaudio/onnx_export.py`` lists the measured figures). We also bound the difference
absolutely for the well-conditioned networks.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from hyperaudio import config, hya, onnx_export, render  # noqa: E402
from hyperaudio.errors import HyperaudioError  # noqa: E402
from hyperaudio.functional import stacked_parameters  # noqa: E402
from hyperaudio.hya import INR  # noqa: E402
from hyperaudio.playback import Engine, NullSink, render_to_file  # noqa: E402
from hyperaudio.plugins import get_registry  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


BUILTIN = ["film-siren", "finer", "kan", "nerf", "rff", "siamese-siren", "siren", "wire"]


def perturbed_inr(name: str, chunks=((0, 3000), (2500, 3000)), channels: int = 1, native: float = 22050.0,
                  overrides=()) -> INR:
    """The network's default (preset-size) configuration, its own initialisation perturbed per
    member, as a multi-chunk INR: what a fit produces, without the minutes of fitting."""
    cfg = config.resolve(None, name, list(overrides))
    torch.manual_seed(0)
    module = config.build_target(cfg)
    members = len(chunks) * channels
    gen = torch.Generator().manual_seed(1)
    params = {n: p + 0.05 * p.abs().mean().clamp_min(1e-3) * torch.randn(p.shape, generator=gen)
              for n, p in stacked_parameters(module, members).items()}
    return INR(cfg, module, params, native, chunks[-1][0] + chunks[-1][1], channels, [tuple(c) for c in chunks])


def session(model: bytes):
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def test_every_builtin_target_network_is_registered():
    assert set(BUILTIN) <= set(get_registry().names("target_networks"))


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_target_network_exports_and_matches_torch(name):
    inr = perturbed_inr(name)
    model = onnx_export.export_bytes(inr)
    diff = onnx_export.verify(inr, model)  # raises ExportError beyond the justified tolerance
    # FINER's first layer reaches sine arguments of ~1e4, where a float32 ulp is ~1e-3: float32
    # pins it down to ~1e-4 (see onnx_export), in PyTorch too.
    assert diff < (3e-4 if name == "finer" else 1e-4), diff


@pytest.mark.parametrize("name", ["nerf", "siamese-siren"])
def test_stereo_and_single_chunk_export(name):
    inr = perturbed_inr(name, chunks=((0, 2000),), channels=2)
    model = onnx_export.export_bytes(inr)
    onnx_export.verify(inr, model)
    (heads,) = session(model).run(["heads"], {"position": np.array([10.0, 500.5])})
    assert heads.shape == (2, 2 if name == "siamese-siren" else 1, 2)


def test_interface_names_shapes_units_and_metadata(tmp_path):
    inr = perturbed_inr("nerf", chunks=((0, 1500), (1200, 1500), (2400, 1500)))
    path = onnx_export.export_inr(inr, tmp_path / "m.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    (inp,) = model.graph.input
    assert inp.name == "position" and inp.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert [o.name for o in model.graph.output] == ["audio", "heads"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert float(meta["hyperaudio.sample_rate"]) == 22050.0 and meta["hyperaudio.num_samples"] == "3900"
    assert meta["hyperaudio.target"] == "nerf" and "native samples" in meta["hyperaudio.position_units"]
    assert not list(tmp_path.glob(".*tmp*"))

    s = session(path.read_bytes())
    # Dynamic length, any order, fractional positions, silence outside the sound.
    for m in (1, 7, 10000):
        pos = np.random.default_rng(m).uniform(-5, 3905, m)
        audio, heads = s.run(None, {"position": pos})
        assert audio.shape == (1, m) and heads.shape == (1, 1, m)
        want = render.evaluate(inr, torch.from_numpy(pos))[:, 0].numpy()
        np.testing.assert_allclose(audio, want, atol=1e-6)
    audio, _ = s.run(None, {"position": np.array([-3.0, -0.5, 3900.0, 1e6])})
    assert np.all(audio == 0)
    # Seconds -> positions: rendering at another rate is a linear grid of positions.
    sr = 48000
    pos = np.arange(round(inr.duration * sr)) * inr.sample_rate / sr
    audio, _ = s.run(None, {"position": pos})
    np.testing.assert_allclose(audio, render.render(inr, sr, bandlimit=False), atol=1e-6)


def test_an_unexportable_network_is_an_export_error():
    class Opaque(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, t):
            return torch.from_numpy(np.sin(t.detach().numpy())) * self.w  # leaves the traced graph

    inr = INR({"target": {"name": "opaque"}}, Opaque(), {"w": torch.ones(1, 1)}, 8000.0, 100, 1, [(0, 100)])
    with pytest.raises(onnx_export.ExportError):
        model = onnx_export.export_bytes(inr)
        onnx_export.verify(inr, model)  # traced with constants baked in: wrong at other positions


def test_onnx_backend_plays_through_the_null_sink():
    inr = perturbed_inr("siren", chunks=((0, 6000), (5500, 6000)), native=22050.0)
    engine = Engine(inr, NullSink(), 48000, backend="onnx")
    assert engine.backend.name == "onnx"
    engine.play()
    try:
        assert engine.wait(timeout=10)
    finally:
        engine.stop()
    y = engine.sink.played[engine.stats.lead_frames :][: engine.end_frame, 0]
    want = render.render(inr, 48000)[0]
    assert len(y) == len(want) and engine.stats.underruns == 0
    body = slice(engine.fade, None)  # the start fade-in is intended
    assert np.abs(y[body] - want[body]).max() < 1e-4


def test_onnx_backend_file_render_below_native_rate(tmp_path):
    inr = perturbed_inr("nerf", native=22050.0)
    y = render_to_file(inr, tmp_path / "o.wav", 8000, backend="onnx", speed=1.3)
    np.testing.assert_allclose(y, render.render(inr, 8000, speed=1.3), atol=1e-5)


def test_export_command(tmp_path, capsys):
    from hyperaudio.playback.cli import add_commands

    inr = perturbed_inr("kan", chunks=((0, 2000),))
    src = hya.save(inr, tmp_path / "k.hya")
    parser = argparse.ArgumentParser()
    handlers = add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", str(src), "-o", str(tmp_path / "k.onnx")])
    assert handlers["export"](args) == 0
    out = capsys.readouterr().out
    assert "max abs difference vs torch:" in out and float(out.split(":")[-1]) < 1e-4
    assert (tmp_path / "k.onnx").stat().st_size > 0
    with pytest.raises(HyperaudioError):
        handlers["export"](parser.parse_args(["export", str(src), "-o", str(tmp_path / "k.wav")]))
    with pytest.raises(HyperaudioError):
        handlers["export"](parser.parse_args(["export", str(tmp_path / "missing.hya"), "-o", str(tmp_path / "m.onnx")]))
