"""Hypernetwork training data: sources, splits, decoding, crops and RAVE's augmentations."""

import numpy as np
import pytest
import torch
import soundfile as sf

from conftest import chirp, speechlike
from hyperaudio import config
from hyperaudio.hypernet import data

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 8000
N = 2048


def _tc(**changes):
    return {**config.DEFAULTS["train"], **changes}


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "audio"
    (root / "spk1").mkdir(parents=True)
    (root / "spk2").mkdir()
    sf.write(str(root / "spk1" / "a.wav"), speechlike(16000, 0.5, seed=1), 16000)
    sf.write(str(root / "spk1" / "b.flac"), 0.1 * speechlike(SR, 0.2, seed=2), SR)  # short and quiet
    sf.write(str(root / "spk2" / "c.ogg"), np.stack([chirp(22050, 0.4), chirp(22050, 0.4)]).T, 22050)
    (root / "spk2" / "notes.txt").write_text("not audio")
    return root


def test_sources_folder_list_and_glob(folder, tmp_path):
    files = data.find_audio(folder)
    assert [f.name for f in files] == ["a.wav", "b.flac", "c.ogg"]  # recursive, audio only, sorted
    listing = tmp_path / "list.txt"
    listing.write_text("# training clips\naudio/spk1/a.wav\n\n" + str(folder / "spk2" / "c.ogg") + "\n")
    assert [f.name for f in data.find_audio(listing)] == ["a.wav", "c.ogg"]
    assert [f.name for f in data.find_audio(str(folder / "**" / "*.wav"))] == ["a.wav"]
    with pytest.raises(data.DataError, match="no such folder"):
        data.find_audio(tmp_path / "missing")


def test_validation_split_by_folder_list_or_pattern(folder):
    train, val = data.split_sources(folder, "spk2/*")  # a pattern picks held-out files of the data
    assert [f.name for f in train] == ["a.wav", "b.flac"] and [f.name for f in val] == ["c.ogg"]
    train, val = data.split_sources(folder, folder / "spk1")  # a folder inside the data is held out too
    assert [f.name for f in train] == ["c.ogg"] and [f.name for f in val] == ["a.wav", "b.flac"]
    train, val = data.split_sources(folder, None)
    assert len(train) == 3 and val == []


def test_decoding_mono_resampled_normalised_and_skipping(folder, recwarn):
    (folder / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    (folder / "silent.wav").write_bytes(b"")
    sf.write(str(folder / "zeros.wav"), np.zeros(500, dtype=np.float32), SR)
    messages = []
    clips = data.load_clips(data.find_audio(folder), SR, N, warn=messages.append)
    assert len(clips) == 3 and clips.sample_rate == SR
    assert len(messages) == 3  # each unreadable or silent file is named in its own warning
    for name in ("broken.wav", "silent.wav", "zeros.wav"):
        assert sum(name in m for m in messages) == 1, messages
    for clip in clips.clips:
        assert clip.ndim == 1 and clip.dtype == np.float32 and np.isclose(np.abs(clip).max(), 1.0)
    assert len(clips.clips[0]) == pytest.approx(0.5 * SR, abs=2)  # 16 kHz -> 8 kHz


def test_empty_data_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = config.resolve("debug-standard")
    with pytest.raises(data.DataError, match="no audio files"):
        data.load_datasets(tmp_path / "empty", None, cfg)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.wav").write_bytes(b"garbage")
    with pytest.raises(data.DataError, match="no usable training audio"):
        data.load_datasets(tmp_path / "bad", None, cfg, warn=lambda m: None)


def test_batches_are_deterministic_sharded_and_padded(folder):
    clips = data.load_clips(data.find_audio(folder), SR, N)
    tc = _tc(seed=3)
    a, b = clips.batch(7, 4, tc), clips.batch(7, 4, tc)
    assert a.shape == (4, N) and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, clips.batch(8, 4, tc))
    # Two ranks see disjoint halves of every epoch (3 clips pad to 4, DistributedSampler-style).
    seen = [clips.shard(0, 3, r, 2) for r in range(2)]
    assert sorted(np.concatenate(seen).tolist())[:3] == [0, 1, 2] and len(seen[0]) == len(seen[1]) == 2
    # The short clip (0.2 s < 2048 samples) is zero-padded at the end.
    short = clips.crop(clips.clips[1], np.random.default_rng(0), _tc(phase_mangle=0.0, dequantize_bits=0))
    assert np.all(short[len(clips.clips[1]):] == 0) and np.array_equal(short[: len(clips.clips[1])], clips.clips[1])
    # Validation crops are fixed: the middle of each clip.
    v = clips.validation_crops()
    assert np.array_equal(v, clips.validation_crops()) and v.shape == (3, N)
    mid = (len(clips.clips[0]) - N) // 2
    assert np.array_equal(v[0], clips.clips[0][mid : mid + N])


def test_phase_mangle_is_all_pass():
    b, a = data.allpass_coefficients(700.0, 0.99, SR)
    from scipy.signal import freqz

    _, h = freqz(b, a, worN=512)
    assert np.allclose(np.abs(h), 1.0, atol=1e-9)  # |H| = 1 at every frequency
    assert np.ptp(np.unwrap(np.angle(h))) > 1.0  # ... while the phase turns
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1 << 15).astype(np.float32)
    y = data.phase_mangle(x, 700.0, 0.99, SR)
    # Magnitude spectrum preserved (up to the filter's start-up transient), waveform changed.
    mx, my = np.abs(np.fft.rfft(x)), np.abs(np.fft.rfft(y))
    assert np.median(np.abs(my - mx) / mx) < 0.02
    assert np.abs(np.angle(np.fft.rfft(y) / np.fft.rfft(x))).mean() > 0.05
    assert np.sqrt(np.mean((y - x) ** 2)) > 0.1


def test_dequantize_and_augmented_crop():
    rng = np.random.default_rng(0)
    x = np.zeros(1000, dtype=np.float32)
    y = data.dequantize(x, 16, rng)
    assert 0 <= y.min() and y.max() < 2.0**-16 and y.std() > 0
    clips = data.ClipSet([chirp(SR, 1.0)], ["c"], SR, N)
    plain = clips.crop(clips.clips[0], np.random.default_rng(1), _tc(phase_mangle=0.0, dequantize_bits=0,
                                                                    random_crop=False))
    assert np.array_equal(plain, clips.clips[0][:N])
    mangled = clips.crop(clips.clips[0], np.random.default_rng(1), _tc(phase_mangle=1.0, random_crop=False))
    assert mangled.shape == (N,) and not np.allclose(mangled, plain, atol=1e-3)
