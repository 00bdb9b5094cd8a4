"""The built-in encoders (soundstream, spectrogram) and the torch resampler they share with plugins."""

import math

import numpy as np
import pytest
import torch

from hyperaudio.encoders import SoundStreamEncoder, SpectrogramEncoder, resample
from hyperaudio.plugins import get_registry
from hyperaudio.testing import parametrize_with_checks

HAS_PYWORLD = True
try:
    from hyperaudio.encoders.spectrogram import import_pyworld

    import_pyworld()
except ImportError:
    HAS_PYWORLD = False
needs_pyworld = pytest.mark.skipif(not HAS_PYWORLD, reason="pyworld is not installed (hyperaudio[encoders])")

TINY_SPECTRO = {**SpectrogramEncoder.conformance_params, "pitch": False}


@parametrize_with_checks(encoders=[SoundStreamEncoder, (SoundStreamEncoder, {"channels": 2, "latent_channels": 3}),
                                   (SpectrogramEncoder, TINY_SPECTRO)])
def test_conformance(check):
    check()


@needs_pyworld
@parametrize_with_checks(encoders=[SpectrogramEncoder])
def test_conformance_with_pitch_features(check):
    check()


def test_registered_as_builtins():
    registry = get_registry()
    assert registry.get("encoders", "soundstream").obj is SoundStreamEncoder
    assert registry.get("encoders", "spectrogram").obj is SpectrogramEncoder
    assert registry.get("encoders", "soundstream").dist == "hyperaudio"


def test_core_never_imports_the_heavy_plugin_dependencies():
    import os
    import subprocess
    import sys

    code = ("import sys, hyperaudio.encoders, hyperaudio.plugins as p; p.get_registry(); "
            "print(sorted(m for m in ('transformers', 'peft', 'snac', 'pyworld', 'librosa') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HYPERAUDIO_LOAD_PLUGINS": ""})
    assert out.stdout.strip() == "[]"


# -- soundstream -----------------------------------------------------------------------------------
def test_soundstream_latent_is_hypersounds_103_by_32():
    enc = SoundStreamEncoder().eval()
    with torch.no_grad():
        z = enc(torch.randn(1, 32768) * 0.1)
    assert z.shape == (1, 103, 32) and torch.isfinite(z).all()


@pytest.mark.parametrize("samples", [1, 7, 320, 321, 4096, 33075])
def test_soundstream_any_length(samples):
    enc = SoundStreamEncoder(channels=2, latent_channels=3).eval()
    with torch.no_grad():
        z = enc(torch.randn(2, samples))
    frames = samples
    for s in (2, 4, 5, 8):
        frames = math.ceil(frames / s)
    assert z.shape == (2, frames, 3) and enc.frames(samples) == frames


def test_soundstream_is_causal():
    enc = SoundStreamEncoder(channels=2, latent_channels=3).eval()
    x = torch.randn(1, 3200)
    y = x.clone()
    y[:, 1600:] = torch.randn(1, 1600)  # change the second half only
    with torch.no_grad():
        a, b = enc(x), enc(y)
    assert torch.allclose(a[:, :5], b[:, :5]) and not torch.allclose(a[:, -1], b[:, -1])


def test_soundstream_weight_norm_option():
    plain = SoundStreamEncoder(channels=2, latent_channels=3)
    normed = SoundStreamEncoder(channels=2, latent_channels=3, weight_norm=True)
    assert not any("parametrizations" in n for n, _ in plain.named_parameters())
    assert any(n.endswith("original0") for n, _ in normed.named_parameters())


def test_soundstream_default_size():
    assert sum(p.numel() for p in SoundStreamEncoder().parameters()) == 1_173_536


# -- spectrogram -----------------------------------------------------------------------------------
def _harmonic(sr, seconds, f0, amplitude=0.8):
    t = np.arange(int(sr * seconds)) / sr
    x = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 12))
    return torch.from_numpy((amplitude * x / np.abs(x).max()).astype(np.float32))


@pytest.mark.parametrize("samples", [1, 100, 257, 32768])
def test_spectrogram_any_length(samples):
    enc = SpectrogramEncoder(**TINY_SPECTRO).eval()
    with torch.no_grad():
        z = enc(torch.randn(2, samples) * 0.1)
    assert z.shape == (2, 1 + samples // 64, 4) == (2, enc.frames(samples), 4)


def test_spectrogram_default_latent():
    enc = SpectrogramEncoder(pitch=False).eval()
    with torch.no_grad():
        z = enc(torch.randn(1, 32768) * 0.1)
    assert z.shape == (1, 129, 32)


def test_loudness_is_a_weighted_db_of_full_scale():
    enc = SpectrogramEncoder(pitch=False)
    t = torch.arange(22050) / 22050
    sine = torch.sin(2 * torch.pi * 1000 * t)  # A-weighting is 0 dB at 1 kHz; mean square 1/2 = -3 dB
    loud = enc.frame_features(torch.stack([sine, 0.1 * sine, torch.zeros_like(sine)]))["loudness"][:, 5:-5]
    assert torch.allclose(loud[0], torch.tensor(-3.01), atol=0.05)
    assert torch.allclose(loud[1], torch.tensor(-23.01), atol=0.05)
    assert (loud[2] == -100).all()
    low = enc.frame_features(torch.sin(2 * torch.pi * 100 * t)[None])["loudness"][0, 5:-5]
    assert torch.allclose(low, torch.tensor(-3.01 - 19.1), atol=0.3)  # A(100 Hz) = -19.1 dB


@needs_pyworld
def test_pitch_features_on_a_harmonic_signal():
    enc = SpectrogramEncoder()
    x = torch.stack([_harmonic(22050, 1.0, 150.0), _harmonic(22050, 1.0, 310.0), 0.1 * torch.randn(22050)])
    feats = enc.frame_features(x)
    f0, ap = feats["f0"], feats["aperiodicity"]
    assert f0.shape == (3, 87) and ap.shape == (3, 87, 4)
    inner = slice(5, -5)
    assert torch.allclose(f0[0, inner], torch.tensor(150.0), rtol=0.01)
    assert torch.allclose(f0[1, inner], torch.tensor(310.0), rtol=0.01)
    assert (f0[2] == 0).float().mean() > 0.8  # white noise is mostly unvoiced
    assert ap[0, inner, 0].max() < 0.1 and ap[1, inner, 0].max() < 0.1  # periodic in the lowest band
    assert ap[2, inner, 0].min() > 0.9  # noise is aperiodic


@needs_pyworld
def test_spectrogram_silence_and_shape_with_pitch():
    enc = SpectrogramEncoder().eval()
    with torch.no_grad():
        z = enc(torch.zeros(2, 32768))  # the hypernetwork probes the latent shape with zeros
        feats = enc.frame_features(torch.zeros(1, 1000))
    assert z.shape == (2, 129, 32) and torch.isfinite(z).all()
    assert (feats["f0"] == 0).all() and (feats["loudness"] == -100).all()
    assert enc.n_features == 7


def test_spectrogram_without_pyworld_is_a_clear_error(monkeypatch):
    import sys

    import hyperaudio.encoders.spectrogram as spectro

    monkeypatch.setitem(sys.modules, "pyworld", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"hyperaudio\[encoders\]"):
        spectro.import_pyworld()


# -- resampling ------------------------------------------------------------------------------------
@pytest.mark.parametrize("orig,new", [(22050, 16000), (16000, 22050), (44100, 16000), (48000, 16000)])
def test_resample_matches_soxr_in_the_passband(orig, new):
    soxr = pytest.importorskip("soxr")
    t = np.arange(orig) / orig
    x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    ours = resample(torch.from_numpy(x)[None], orig, new)[0].numpy()
    ref = soxr.resample(x, orig, new)
    assert len(ours) == math.ceil(len(x) * new / orig)
    n = min(len(ours), len(ref))
    inner = slice(200, n - 200)
    assert np.abs(ours[inner] - ref[inner]).max() < 2e-3


def test_resample_removes_content_above_the_new_nyquist():
    t = torch.arange(22050) / 22050
    y = resample(torch.sin(2 * torch.pi * 10000 * t)[None], 22050, 16000)  # 10 kHz > 8 kHz
    assert y[0, 200:-200].abs().max() < 0.01


def test_resample_identity_shapes_and_gradient():
    x = torch.randn(2, 3, 1000, requires_grad=True)
    assert resample(x, 16000, 16000) is x
    y = resample(x, 22050, 16000)
    assert y.shape == (2, 3, math.ceil(1000 * 16000 / 22050))
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert resample(torch.randn(1, 1), 22050, 16000).shape == (1, 1)
