"""hyperaudio-recipes' own tests: the conformance kit on the encoder and on every shipped preset."""

import importlib.metadata
from importlib import resources

import pytest
import torch

from hyperaudio.testing import check_plugin, parametrize_with_checks
from hyperaudio_recipes import WaveConvEncoder

PRESETS = {p.name[:-5]: str(p) for p in resources.files("hyperaudio_recipes").joinpath("presets").iterdir()
           if p.name.endswith(".toml")}


@parametrize_with_checks(encoders=[WaveConvEncoder, (WaveConvEncoder, {"channels": [4], "latent_dim": 3})],
                         presets=PRESETS)
def test_conformance(check):
    check()


def test_presets_are_shipped():
    assert set(PRESETS) == {"kan-small", "nerf-small"}


@pytest.mark.parametrize("samples", [1, 100, 32768])
def test_encoder_accepts_any_length(samples):
    enc = WaveConvEncoder(channels=[8, 8], latent_dim=5).eval()
    with torch.no_grad():
        z = enc(torch.randn(2, samples))
    assert z.shape == (2, 5) and torch.isfinite(z).all()


def test_encoder_rejects_a_channel_axis():
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        WaveConvEncoder()(torch.randn(2, 1, 100))


def _installed() -> bool:
    try:
        importlib.metadata.distribution("hyperaudio-recipes")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _installed(), reason="hyperaudio-recipes is not installed (pip install .)")
def test_installed_plugin_registers_through_its_entry_point(hyperaudio_plugins):
    registry = hyperaudio_plugins("hyperaudio-recipes")
    assert registry.plugins["hyperaudio-recipes"].status == "ok"
    assert registry.get("encoders", "wave-conv").obj is WaveConvEncoder
    assert {"kan-small", "nerf-small"} <= set(registry.names("presets"))
    check_plugin("hyperaudio-recipes", registry)
