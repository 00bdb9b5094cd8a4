"""hyperaudio-snac's own tests: the conformance kit, latent shapes and loading local checkpoints."""

import argparse
import importlib.metadata
import json

import pytest
import torch

pytest.importorskip("hyperaudio_snac", reason="hyperaudio-snac is not installed (pip install -e plugins/snac-encoder)")

from hyperaudio.encoders import resample  # noqa: E402
from hyperaudio.testing import check_plugin, parametrize_with_checks  # noqa: E402
from hyperaudio_snac import CheckpointError, SNACEncoder  # noqa: E402

# A SNAC small enough to build in milliseconds; its encoder matches SNACEncoder(**TINY).
TINY_SNAC = {"sampling_rate": 16000, "encoder_dim": 4, "encoder_rates": [2, 4], "decoder_dim": 16,
             "decoder_rates": [4, 2], "attn_window_size": None, "codebook_size": 16, "codebook_dim": 2,
             "vq_strides": [2, 1], "noise": True, "depthwise": True}
TINY = {"encoder_dim": 4, "encoder_rates": [2, 4], "latent_channels": 3}
ATTENTION = {"encoder_dim": 16, "encoder_rates": [2, 2], "attn_window_size": 4, "latent_channels": 0,
             "codec_rate": 16000}


@parametrize_with_checks(encoders=[SNACEncoder, (SNACEncoder, ATTENTION)])
def test_conformance(check):
    check()


def test_default_latent_for_hypersound_clip():
    enc = SNACEncoder().eval()  # 24 kHz model's architecture at the input rate: hop 512
    with torch.no_grad():
        z = enc(torch.randn(1, 32768) * 0.1)
    assert z.shape == (1, 64, 32) and torch.isfinite(z).all()
    assert sum(p.numel() for n, p in enc.named_parameters() if n.startswith("encoder.")) == 6_690_672


@pytest.mark.parametrize("samples", [1, 100, 2047, 2048, 2049, 5000])
def test_any_length_pads_to_whole_hops(samples):
    enc = SNACEncoder(**TINY).eval()
    with torch.no_grad():
        z = enc(torch.randn(2, samples))
    assert z.shape == (2, enc.frames(samples), 3) == (2, max(1, -(-samples // 8)), 3)


def test_attention_pads_to_whole_windows_and_resamples():
    enc = SNACEncoder(**ATTENTION).eval()  # 22050 -> 16000 Hz, hop 4, windows of 4 frames
    with torch.no_grad():
        z = enc(torch.randn(1, 1000))
    n = -(-1000 * 16000 // 22050)  # 726 samples at 16 kHz -> 182 frames -> 184 (whole windows)
    assert n == 726 and z.shape == (1, 184, 64) == (1, enc.frames(1000), 64)


def test_same_architecture_as_the_snac_package():
    from snac import SNAC

    ours = SNACEncoder(**TINY).encoder.state_dict()
    theirs = SNAC(**TINY_SNAC).encoder.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def _tiny_snac(seed=1):
    from snac import SNAC

    torch.manual_seed(seed)
    return SNAC(**TINY_SNAC)


def _same_encoder(enc, snac) -> bool:
    ours, theirs = enc.encoder.state_dict(), snac.encoder.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_pretrained_folder_like_the_published_checkpoints(tmp_path):
    snac = _tiny_snac()
    torch.save(snac.state_dict(), tmp_path / "pytorch_model.bin")  # full SNAC state dict, as published
    (tmp_path / "config.json").write_text(json.dumps(TINY_SNAC))
    enc = SNACEncoder(pretrained=str(tmp_path))  # the architecture and rate come from config.json
    assert _same_encoder(enc, snac)
    assert enc.codec_rate == 16000 and enc.sample_rate == 22050
    x = torch.randn(1, 4410)
    x16 = resample(x, 22050, 16000)  # 3200 samples at the checkpoint's rate: whole hops, no padding
    with torch.no_grad():
        expected = enc.project(snac.encoder(x16.unsqueeze(1))).transpose(1, 2)
        assert x16.shape[-1] == 3200 and torch.allclose(enc(x), expected, atol=1e-5)


def test_pretrained_safetensors_file_with_keywords(tmp_path):
    from safetensors.torch import save_file

    snac = _tiny_snac(seed=2)
    path = tmp_path / "encoder-only.safetensors"
    save_file({k: v.contiguous() for k, v in snac.encoder.state_dict().items()}, str(path))
    enc = SNACEncoder(pretrained=str(path), **TINY)
    assert _same_encoder(enc, snac) and enc.codec_rate == 22050


def test_pretrained_legacy_weight_norm_keys(tmp_path):
    snac = _tiny_snac(seed=3)
    legacy = {k.replace("parametrizations.weight.original0", "weight_g")
               .replace("parametrizations.weight.original1", "weight_v"): v for k, v in snac.state_dict().items()}
    torch.save({"state_dict": legacy}, tmp_path / "old.pth")
    assert _same_encoder(SNACEncoder(pretrained=str(tmp_path / "old.pth"), **TINY), snac)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        SNACEncoder(pretrained=str(tmp_path / "nope.pth"))
    with pytest.raises(CheckpointError, match="holds none of"):
        SNACEncoder(pretrained=str(tmp_path))
    assert issubclass(CheckpointError, ValueError)  # the hypernetwork builder reports it as a config error


def test_bad_checkpoints_are_refused(tmp_path):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot load"):
        SNACEncoder(pretrained=str(garbage), **TINY)
    pickled = tmp_path / "full-module.pth"
    torch.save(argparse.Namespace(weights=torch.zeros(2)), pickled)  # arbitrary pickled objects are refused
    with pytest.raises(CheckpointError, match="cannot load"):
        SNACEncoder(pretrained=str(pickled), **TINY)
    state = tmp_path / "state.pth"
    torch.save(_tiny_snac().state_dict(), state)
    with pytest.raises(CheckpointError, match="does not fit"):
        SNACEncoder(pretrained=str(state), encoder_dim=8, encoder_rates=[2, 4])


def _installed() -> bool:
    try:
        importlib.metadata.distribution("hyperaudio-snac")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _installed(), reason="hyperaudio-snac is not installed (pip install .)")
def test_installed_plugin_registers_through_its_entry_point(hyperaudio_plugins):
    plugin_registry = hyperaudio_plugins("hyperaudio-snac")  # the conformance kit's fixture
    assert plugin_registry.plugins["hyperaudio-snac"].status == "ok"
    entry = plugin_registry.get("encoders", "snac")
    assert entry.obj is SNACEncoder and entry.dist == "hyperaudio-snac"
    check_plugin("hyperaudio-snac", plugin_registry)


def test_registering_does_not_import_snac():
    import subprocess
    import sys

    code = "import sys, hyperaudio_snac.plugin; print('snac' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"  # `hyperaudio list` stays fast
