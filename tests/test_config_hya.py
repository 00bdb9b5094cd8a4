"""Presets, overrides and the .hya file format."""

import json

import numpy as np
import pytest
import torch

from hyperaudio import config, hya
from hyperaudio.errors import ConfigError, HyaError
from hyperaudio.fit import chunk_layout
from hyperaudio.plugins import get_registry


@pytest.mark.parametrize("name", sorted(n for n in ["kan-inr", "siren-inr", "nerf-inr", "rff-inr", "finer-inr",
                                                      "wire-inr", "siamese-siren", "film-siren"]))
def test_every_builtin_preset_resolves_and_builds(name):
    cfg = config.resolve(name)
    module = config.build_target(cfg)
    y = module(torch.linspace(-1, 1, 16).unsqueeze(-1))
    assert y.shape[0] == 16 and torch.isfinite(y).all()
    assert cfg["preset"]["name"] == name and cfg["preset"]["paper"]


def test_kan_preset_is_the_papers_33768_parameter_network():
    module = config.build_target(config.resolve("kan-inr"))
    assert sum(p.numel() for p in module.parameters()) == 33768


def test_quick_preset_is_the_fast_one_where_there_is_one():
    assert config.quick_preset_for("kan") == "kan-fast"
    assert config.quick_preset_for("nerf") == "nerf-inr"
    cfg = config.resolve(config.quick_preset_for("kan"))
    assert cfg["loss"]["lambda_f"] == 0 and cfg["fit"]["batch_samples"] == 8192


def test_overrides_are_toml_literals_and_validated():
    cfg = config.resolve("kan-inr", overrides=["fit.lr=0.002", "target.params.grid_size=12", "preset.description=x y"])
    assert cfg["fit"]["lr"] == 0.002 and cfg["target"]["params"]["grid_size"] == 12
    assert cfg["preset"]["description"] == "x y"
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        config.resolve("kan-inr", overrides=["fit.lrr=1"])
    with pytest.raises(ConfigError, match="expected float"):
        config.resolve("kan-inr", overrides=["fit.lr=fast"])
    with pytest.raises(ConfigError, match="unknown setting target.params"):
        config.resolve("kan-inr", overrides=["target.params.widht=3"])
    with pytest.raises(ConfigError, match="key=value"):
        config.resolve("kan-inr", overrides=["fit.lr"])
    with pytest.raises(ConfigError, match="unknown preset"):
        config.resolve("no-such-preset")


def test_inr_without_preset_uses_its_default_preset():
    assert config.resolve(None, "kan")["preset"]["name"] == "kan-inr"
    assert config.resolve(None, "siamese-siren")["preset"]["name"] == "siamese-siren"


def test_preset_file_validation(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[target]\nname = "nerf"\n[fit]\nsteps = "many"\n')
    with pytest.raises(ConfigError, match="fit.steps: expected int"):
        config.resolve(str(path))
    path.write_text("[target\n")
    with pytest.raises(ConfigError, match="mine.toml"):
        config.resolve(str(path))


def test_chunk_layout_covers_the_signal_with_overlaps():
    assert chunk_layout(1000, 4096, 256) == [(0, 1000)]
    for n in (4097, 5000, 8000, 40000):
        chunks = chunk_layout(n, 4096, 256)
        assert chunks[0][0] == 0 and chunks[-1][0] + 4096 == n
        for (a, la), (b, _) in zip(chunks, chunks[1:]):
            assert a + la - b >= 256


def _tiny_inr(channels=2, chunks=((0, 64), (48, 64))):
    cfg = config.resolve("nerf-inr", overrides=["target.params.hidden=[8, 8]"])
    module = config.build_target(cfg)
    k = len(chunks) * channels
    params = {n: torch.randn(k, *p.shape) for n, p in module.named_parameters()}
    return hya.INR(cfg, module, params, 22050.0, 112, channels, list(chunks), {"note": "test"})


def test_hya_round_trip(tmp_path):
    inr = _tiny_inr()
    path = hya.save(inr, tmp_path / "x.hya")
    back = hya.load(path)
    assert back.config == inr.config and back.chunks == inr.chunks and back.channels == 2
    assert back.sample_rate == 22050.0 and back.num_samples == 112 and back.info == {"note": "test"}
    for name, p in inr.params.items():
        assert torch.equal(back.params[name], p)
    # A .hya is a plain safetensors file with JSON metadata: no pickle anywhere.
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["config"])["target"]["name"] == "nerf"


def test_hya_bad_files_give_clear_errors(tmp_path):
    path = hya.save(_tiny_inr(), tmp_path / "x.hya")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.hya"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(HyaError, match="corrupt or truncated"):
        hya.load(truncated)
    garbage = tmp_path / "garbage.hya"
    garbage.write_bytes(b"\x80\x04\x95 not a safetensors file at all" * 10)
    with pytest.raises(HyaError, match="not a valid .hya"):
        hya.load(garbage)
    with pytest.raises(HyaError, match="no such file"):
        hya.load(tmp_path / "missing.hya")
    from safetensors.torch import save_file

    plain = tmp_path / "plain.hya"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(HyaError, match="without hyperaudio metadata"):
        hya.load(plain)


def test_hya_from_a_missing_plugin_says_so(tmp_path):
    inr = _tiny_inr()
    inr.config = {**inr.config, "target": {"name": "gabor-from-plugin", "params": {}}}
    path = hya.save(inr, tmp_path / "x.hya")
    with pytest.raises(HyaError, match="plugin that provides it"):
        hya.load(path)


def test_hya_write_is_atomic(tmp_path, monkeypatch):
    path = hya.save(_tiny_inr(), tmp_path / "x.hya")
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", explode)
    with pytest.raises(OSError):
        hya.save(_tiny_inr(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.hya"]


def test_registry_lists_presets_with_their_target():
    presets = get_registry().entries["presets"]
    assert presets["kan-inr"].obj["target"]["name"] == "kan"
    assert np.isclose(config.resolve("kan-inr")["fit"]["lr"], presets["kan-inr"].obj["fit"]["lr"])
