"""hyperaudio-whisper's own tests: the conformance kit, Whisper's front end, LoRA and local checkpoints."""

import importlib.metadata
import math

import numpy as np
import pytest
import torch

pytest.importorskip("hyperaudio_whisper",
                    reason="hyperaudio-whisper is not installed (pip install -e plugins/whisper-encoder)")

from hyperaudio.testing import check_plugin, parametrize_with_checks  # noqa: E402
from hyperaudio_whisper import CheckpointError, WhisperLoRAEncoder  # noqa: E402

TINY = {"d_model": 16, "layers": 1, "heads": 2, "ffn_dim": 32, "lora_rank": 2, "latent_channels": 4}


@parametrize_with_checks(encoders=[WhisperLoRAEncoder,
                                   (WhisperLoRAEncoder, {**TINY, "lora_rank": 0, "latent_channels": 0}),
                                   (WhisperLoRAEncoder, {**TINY, "full_context": True, "sample_rate": 16000})])
def test_conformance(check):
    check()


def _tone(sr, seconds, f=220.0, seed=0):
    t = np.arange(int(sr * seconds)) / sr
    noise = 0.05 * np.random.default_rng(seed).standard_normal(len(t))
    return torch.from_numpy((0.5 * np.sin(2 * np.pi * f * t) + noise).astype(np.float32))


def test_latent_at_22050_hz():
    enc = WhisperLoRAEncoder(**TINY).eval()  # sample_rate defaults to 22050
    for samples, positions in ((33075, 75), (32768, 75), (1, 1), (100, 1), (22050, 50)):
        with torch.no_grad():
            z = enc(torch.randn(2, samples) * 0.1)
        assert z.shape == (2, positions, 4) == (2, enc.frames(samples), 4) and torch.isfinite(z).all()


def test_front_end_is_whispers():
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80)
    enc = WhisperLoRAEncoder(sample_rate=16000, **TINY)
    assert np.allclose(enc.mel_filters.numpy(), fe.mel_filters.T, atol=1e-7)  # librosa's Slaney filters
    x = _tone(16000, 1.0)
    ref = fe(x.numpy(), sampling_rate=16000, return_tensors="pt").input_features  # padded to 30 s
    mel, frames, silence = enc.log_mel(x[None])
    assert frames == 100 and mel.shape == (1, 80, 102)
    assert torch.allclose(mel, ref[..., :102], atol=1e-4)
    assert torch.allclose(ref[..., 102:], silence.expand(1, 80, 3000 - 102), atol=1e-4)


def test_resampled_front_end_at_22050_hz_matches_whisper_on_a_soxr_resampled_clip():
    soxr = pytest.importorskip("soxr")
    from transformers import WhisperFeatureExtractor

    x = _tone(22050, 1.0)
    ref = WhisperFeatureExtractor(feature_size=80)(soxr.resample(x.numpy(), 22050, 16000), sampling_rate=16000,
                                                   return_tensors="pt").input_features
    enc = WhisperLoRAEncoder(**TINY)
    from hyperaudio.encoders import resample

    mel, frames, _ = enc.log_mel(resample(x[None], 22050, 16000))
    assert frames == 100
    assert (mel[..., :frames] - ref[..., :frames]).abs().mean() < 0.02


def test_full_context_equals_whispers_own_forward_on_30_s_features():
    from transformers import WhisperFeatureExtractor

    torch.manual_seed(0)
    enc = WhisperLoRAEncoder(sample_rate=16000, full_context=True, **{**TINY, "latent_channels": 0}).eval()
    x = _tone(16000, 0.5)
    ref = WhisperFeatureExtractor(feature_size=80)(x.numpy(), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        z = enc(x[None])
        expected = enc.whisper(ref).last_hidden_state[:, : z.shape[1]]
    assert z.shape == (1, 25, 16) and torch.allclose(z, expected, atol=1e-4)


def test_lora_trains_only_the_adapters_and_the_projection():
    enc = WhisperLoRAEncoder(**TINY).train()
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("project.") for n in trainable)
    assert any("q_proj.lora_A" in n for n in trainable) and any("v_proj.lora_B" in n for n in trainable)
    assert not any("k_proj" in n for n in trainable)
    enc(torch.randn(2, 4096)).square().mean().backward()
    assert all(p.grad is not None for n, p in enc.named_parameters() if p.requires_grad)
    full = WhisperLoRAEncoder(**{**TINY, "lora_rank": 0})
    frozen = {n for n, p in full.named_parameters() if not p.requires_grad}
    assert frozen == {"whisper.embed_positions.weight"}


def test_clips_over_30_s_are_refused():
    enc = WhisperLoRAEncoder(sample_rate=8000, **TINY)
    with pytest.raises(ValueError, match="at most 30 s"):
        enc(torch.zeros(1, 8000 * 31))


def _save_checkpoint(folder, cls_name="WhisperForConditionalGeneration", seed=3):
    import transformers

    from hyperaudio_whisper.encoder import _random_config

    torch.manual_seed(seed)
    config = _random_config(16, 1, 2, 32)
    config.vocab_size, config.max_source_positions, config.max_target_positions = 64, 150, 32
    config.pad_token_id = config.bos_token_id = config.eos_token_id = config.decoder_start_token_id = 1
    model = getattr(transformers, cls_name)(config)
    model.save_pretrained(str(folder))
    return model.get_encoder()


@pytest.mark.parametrize("cls_name", ["WhisperForConditionalGeneration", "WhisperModel"])
def test_pretrained_local_folder(tmp_path, cls_name):
    reference = _save_checkpoint(tmp_path / "ckpt", cls_name)
    enc = WhisperLoRAEncoder(pretrained=str(tmp_path / "ckpt"), lora_rank=2, latent_channels=4)
    ours = {k.replace(".base_layer", ""): v for k, v in enc.whisper.state_dict().items() if "lora_" not in k}
    theirs = reference.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert enc.max_positions == 150  # from the checkpoint's config: at most 3 s
    with torch.no_grad():
        z = enc.eval()(torch.randn(1, 22050))
    assert z.shape == (1, 50, 4)
    with pytest.raises(ValueError, match="at most 3 s"):
        enc(torch.zeros(1, 22050 * 4))


def test_missing_or_bad_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        WhisperLoRAEncoder(pretrained=str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="config.json"):
        WhisperLoRAEncoder(pretrained=str(tmp_path))
    with pytest.raises(CheckpointError, match="does not exist"):
        WhisperLoRAEncoder(pretrained="openai/whisper-tiny")  # a hub id is not a local folder: never downloaded
    folder = tmp_path / "no-weights"
    folder.mkdir()
    _save_checkpoint(tmp_path / "src")
    (folder / "config.json").write_text((tmp_path / "src" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="cannot load"):
        WhisperLoRAEncoder(pretrained=str(folder))
    assert issubclass(CheckpointError, ValueError)


def test_frames_formula():
    enc = WhisperLoRAEncoder(**TINY)
    assert enc.frames(33075) == math.ceil(math.ceil(33075 * 16000 / 22050 / 160) / 2) == 75


def _installed() -> bool:
    try:
        importlib.metadata.distribution("hyperaudio-whisper")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _installed(), reason="hyperaudio-whisper is not installed (pip install .)")
def test_installed_plugin_registers_through_its_entry_point(hyperaudio_plugins):
    plugin_registry = hyperaudio_plugins("hyperaudio-whisper")  # the conformance kit's fixture
    assert plugin_registry.plugins["hyperaudio-whisper"].status == "ok"
    entry = plugin_registry.get("encoders", "whisper-lora")
    assert entry.obj is WhisperLoRAEncoder and entry.dist == "hyperaudio-whisper"
    check_plugin("hyperaudio-whisper", plugin_registry)


def test_registering_does_not_import_transformers():
    import subprocess
    import sys

    code = "import sys, hyperaudio_whisper.plugin; print(sorted({'transformers', 'peft'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"  # `hyperaudio list` stays fast
