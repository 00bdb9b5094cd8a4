"""ONNX export of a trained hypernetwork: every exportable encoder agrees with torch; the one that
cannot be traced (spectrogram: pyworld) gives a clear error; the CLI writes and checks the file."""

import json

import numpy as np
import pytest
import torch

from hyperaudio.cli import main
from hyperaudio.hypernet import onnx_export as hyper_onnx
from hyperaudio.hypernet.model import build, save_model
from hyperaudio.onnx_export import ExportError
from hyperaudio.plugins import get_registry, reset_registry
from test_hypernet_build import PLUGIN_DISTS, _encoder_or_skip, tiny_config

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def _plugins(monkeypatch):
    monkeypatch.setenv("HYPERAUDIO_LOAD_PLUGINS", PLUGIN_DISTS)
    reset_registry()
    torch.manual_seed(0)


@pytest.mark.parametrize("encoder", ["soundstream", "snac", "whisper-lora"])
@pytest.mark.parametrize("strategy", ["standard", "fewsound"])
def test_exported_hypernetwork_matches_torch(encoder, strategy):
    cls = _encoder_or_skip(get_registry(), encoder)
    cfg = tiny_config(cls, encoder, strategy, "nerf")
    model = build(cfg)
    data = hyper_onnx.export_bytes(model, cfg)
    assert hyper_onnx.verify(model, data) < 1e-4


def test_spectrogram_encoder_is_refused_clearly():
    cls = _encoder_or_skip(get_registry(), "spectrogram")
    cfg = tiny_config(cls, "spectrogram", "standard", "nerf")
    with pytest.raises(ExportError, match="encoder 'spectrogram'"):
        hyper_onnx.export_bytes(build(cfg), cfg)


def test_export_command_writes_a_verified_model(tmp_path, capsys):
    import onnx
    import onnxruntime as ort

    cls = _encoder_or_skip(get_registry(), "soundstream")
    cfg = tiny_config(cls, "soundstream", "shared", "siren")
    model = build(cfg)
    save_model(model, cfg, tmp_path / "model.safetensors")
    out = tmp_path / "hyper.onnx"
    assert main(["export", str(tmp_path), "-o", str(out)]) == 0
    assert "max abs difference vs torch" in capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["hyperaudio.format"] == "hyperaudio.hypernet.onnx"
    shapes = json.loads(meta["hyperaudio.parameters"])
    assert shapes == {n: list(p.shape) for n, p in model.target.named_parameters()}
    # Another host: ONNX gives the parameters, the target network renders the clip.
    audio = (0.3 * np.sin(np.linspace(0, 60, model.num_samples))).astype(np.float32)[None]
    outputs = ort.InferenceSession(str(out)).run(None, {"audio": audio})
    params = {n: torch.from_numpy(v) for n, v in zip(shapes, outputs)}
    with torch.no_grad():
        expected = model.reconstruct(torch.from_numpy(audio))
        got = model.render(params, model.num_samples)
    assert torch.allclose(got, expected, atol=1e-4)
    assert main(["export", str(tmp_path / "missing"), "-o", str(tmp_path / "x.onnx")]) == 2
