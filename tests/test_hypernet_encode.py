"""Encoding with a hypernetwork: .hya round trip, gain, stereo, long inputs, refinement, bad input."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import chirp, speechlike
from hyperaudio import config, fit, hya, metrics, render
from hyperaudio.cli import main
from hyperaudio.hypernet.encode import encode
from hyperaudio.hypernet.model import build, save_model

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 16000  # the input rate; the debug model runs at 8 kHz with 2048-sample clips


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder holding an (untrained) debug model: encoding mechanics do not need a good one."""
    cfg = config.resolve("debug-standard")
    torch.manual_seed(0)
    model = build(cfg)
    run = tmp_path_factory.mktemp("run")
    save_model(model, cfg, run / "model.safetensors")
    return run


def _sisnr(x, y):
    n = min(x.shape[-1], y.shape[-1])
    return metrics.evaluate(x[..., :n], y[..., :n], SR, ["si-snr"])["si-snr"]


def test_cli_encode_render_round_trip_stereo_long_and_gain(run_dir, tmp_path, write_audio, capsys):
    x = speechlike(SR, 1.2, seed=3)
    stereo = np.stack([0.3 * x, 0.1 * chirp(SR, 1.2)])
    src = write_audio("in.wav", stereo, SR)
    out = tmp_path / "in.hya"
    assert main(["encode", str(run_dir), str(src), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "SI-SNR" in err and "dB" in err and " s" in err
    inr = hya.load(out)
    assert inr.channels == 2 and inr.sample_rate == 8000 and inr.num_samples == int(1.2 * 8000)
    assert len(inr.chunks) > 3 and all(length == 2048 for _, length in inr.chunks)  # several chunks
    assert inr.gain == pytest.approx(np.abs(stereo).max(), rel=0.02)  # the peak at the model rate
    wav = tmp_path / "out.wav"
    assert main(["render", str(out), "--sr", str(SR), "-o", str(wav)]) == 0
    y, sr = sf.read(str(wav), always_2d=True)
    assert sr == SR and y.shape == (stereo.shape[1], 2)

    # The level is restored: half the input level gives exactly half the output (same weights).
    quiet = encode(run_dir, 0.5 * stereo, SR, device="cpu")
    loud = encode(run_dir, stereo, SR, device="cpu")
    assert quiet.gain == pytest.approx(0.5 * loud.gain, rel=1e-6)
    assert all(torch.equal(quiet.params[k], loud.params[k]) for k in loud.params)
    np.testing.assert_allclose(render.render(quiet, SR), 0.5 * render.render(loud, SR), rtol=1e-5, atol=1e-7)
    # Channels are encoded separately: swapping them swaps their weights.
    swapped = encode(run_dir, stereo[::-1].copy(), SR, device="cpu")
    k = len(loud.chunks)
    for name, p in loud.params.items():
        q = swapped.params[name].view(k, 2, *p.shape[1:])
        torch.testing.assert_close(q.flip(1), p.view(k, 2, *p.shape[1:]), atol=1e-5, rtol=1e-4)


def test_short_input_is_padded_to_one_model_length_chunk(run_dir):
    x = 0.2 * speechlike(SR, 0.05, seed=1)  # 400 samples at 8 kHz < 2048
    inr = encode(run_dir, x, SR, device="cpu")
    assert inr.chunks == [(0, 2048)] and inr.num_samples == 400 and inr.channels == 1
    assert render.render(inr, SR).shape == (1, len(x))


def test_refine_improves_sisnr(run_dir, tmp_path, write_audio, capsys):
    x = 0.4 * speechlike(SR, 0.3, seed=2)
    plain = encode(run_dir, x, SR, device="cpu")
    refined = encode(run_dir, x, SR, refine_steps=30, device="cpu")
    before, after = _sisnr(x, render.render(plain, SR)[0]), _sisnr(x, render.render(refined, SR)[0])
    assert after > before + 1.0, (before, after)
    assert refined.info["refine_steps"] == 30 and refined.gain == plain.gain
    src = write_audio("x.wav", x, SR)
    assert main(["encode", str(run_dir / "model.safetensors"), str(src), "-o", str(tmp_path / "x.hya"),
                 "--refine", "5", "-q"]) == 0
    assert "refined 5 steps per chunk" in capsys.readouterr().err
    # More chunks than one refinement group (fit.chunk_batch): still counted per chunk.
    long = encode(run_dir, 0.4 * speechlike(SR, 3.0, seed=3), SR, refine_steps=2, device="cpu")
    assert len(long.chunks) > long.config["fit"]["chunk_batch"] and long.info["refine_steps"] == 2


def test_gain_applies_everywhere_an_inr_is_evaluated(tmp_path):
    cfg = config.resolve(None, "nerf", ["fit.steps=2", "target.params.hidden=[8]", "fit.chunk_samples=256",
                                        "fit.overlap_samples=32"])
    inr = fit.fit(chirp(4000, 0.15)[None], 4000, cfg, progress=False)  # 600 samples: 3 chunks
    pos = torch.linspace(-2, inr.num_samples + 2, 997, dtype=torch.float64)
    base = render.evaluate(inr, pos)
    inr.gain = 0.25
    torch.testing.assert_close(render.evaluate(inr, pos), 0.25 * base)
    # .hya keeps it; files written before the field existed load with gain 1.0.
    path = hya.save(inr, tmp_path / "g.hya")
    assert hya.load(path).gain == 0.25
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    del meta["gain"]
    save_file(tensors, str(tmp_path / "old.hya"), metadata=meta)
    assert hya.load(tmp_path / "old.hya").gain == 1.0
    # Playback's torch backend (block path and generic positions).
    from hyperaudio.playback.backends import make_backend

    backend = make_backend(inr, "torch", device="cpu")
    np.testing.assert_allclose(backend.evaluate(pos.numpy()), (0.25 * base[:, 0]).numpy().T, rtol=1e-5, atol=1e-7)
    block = backend.submit(0.0, 1.0, 0, inr.num_samples).result()
    np.testing.assert_allclose(block[:, 0], render.evaluate(inr, torch.arange(inr.num_samples,
                                                                              dtype=torch.float64))[0, 0].numpy(),
                               rtol=1e-5, atol=1e-7)
    # ONNX export bakes the gain in (verify compares with render.evaluate, which applies it).
    onnx_export = pytest.importorskip("hyperaudio.onnx_export")
    pytest.importorskip("onnxruntime")
    model = onnx_export.export_bytes(inr)
    onnx_export.verify(inr, model)


def test_bad_inputs_exit_2_with_one_line(run_dir, tmp_path, write_audio, capsys):
    src = write_audio("in.wav", 0.3 * speechlike(SR, 0.2), SR)
    (tmp_path / "empty").mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    cases = [
        ["encode", str(tmp_path / "missing-run"), str(src), "-o", str(tmp_path / "a.hya")],
        ["encode", str(corrupt), str(src), "-o", str(tmp_path / "b.hya")],
        ["encode", str(run_dir), str(tmp_path / "missing.wav"), "-o", str(tmp_path / "c.hya")],
        ["train", "--preset", "debug-standard", "--data", str(tmp_path / "empty"), "-o", str(tmp_path / "r1"), "-q"],
        ["train", "--preset", "debug-standard", "--data", str(tmp_path / "nowhere"), "-o", str(tmp_path / "r2"), "-q"],
        ["train", "--preset", "no-such-preset", "--data", str(tmp_path / "empty"), "-o", str(tmp_path / "r3")],
        ["train", "--resume", "-o", str(tmp_path / "r4")],
        ["train", "--preset", "debug-standard", "--data", str(tmp_path / "empty"), "-o", str(tmp_path / "r5"),
         "--set", "train.lr=-1"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("hyperaudio: error: "), (argv, err)
    assert not (tmp_path / "a.hya").exists() and not (tmp_path / "b.hya").exists()


def test_encode_json_info_is_serialisable(run_dir):
    inr = encode(run_dir, 0.1 * chirp(SR, 0.3), SR, device="cpu")
    json.dumps(inr.info)
    assert inr.info["chunks"] == len(inr.chunks) and inr.info["encoder"] == "soundstream"
