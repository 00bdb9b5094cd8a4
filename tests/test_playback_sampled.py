"""Plain audio through the playback engine (``SampledSound``): what the desktop app's A/B switch plays."""

from __future__ import annotations

import numpy as np
import pytest

from hyperaudio.audio import resample
from hyperaudio.playback import Engine, NullSink, PlaybackError, SampledSound, render_to_file
from hyperaudio.playback.sampled import SampledBackend


def tone(sr: int, seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return np.stack([0.5 * np.sin(2 * np.pi * freq * (1 + 0.5 * c) * t) for c in range(channels)]).astype(np.float32)


def test_backend_interpolates_between_samples_and_is_silent_outside():
    x = np.array([[0.0, 1.0, -1.0, 0.5]], np.float32)
    backend = SampledBackend(SampledSound(x, 8000))
    got = backend.evaluate(np.array([-1.0, 0.0, 0.5, 1.25, 3.0, 3.5]))[:, 0]
    np.testing.assert_allclose(got, [0.0, 0.0, 0.5, 0.5, 0.5, 0.0])
    np.testing.assert_array_equal(backend.submit(1.0, 1.0, 1, 2).result()[:, 0], [-1.0, 0.5])


def test_native_rate_plays_the_samples_unchanged(tmp_path):
    x = tone(22050, 0.4, channels=2)
    y = render_to_file(SampledSound(x, 22050), tmp_path / "same.wav")
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("rate,speed", [(8000, 1.0), (48000, 1.0), (44100, 0.5)])
def test_other_rates_and_speeds_equal_soxr_resampling(tmp_path, rate, speed):
    x = tone(22050, 0.5)
    y = render_to_file(SampledSound(x, 22050), tmp_path / "r.wav", rate, speed=speed)
    want = resample(x, 22050 * speed, rate)
    n = min(y.shape[1], want.shape[1])
    assert abs(y.shape[1] - round(x.shape[1] / 22050 / speed * rate)) <= 1
    np.testing.assert_allclose(y[:, :n], want[:, :n], atol=1e-5)


def test_live_playback_with_seek_and_loop_through_a_null_sink():
    x = tone(16000, 1.0)
    engine = Engine(SampledSound(x, 16000), NullSink(pace=4.0), 48000, loop=(0.2, 0.6))
    assert engine.interpolation == "resample"
    engine.play()
    try:
        engine.seek(0.3)
        import time

        time.sleep(0.3)
        assert 0.2 <= engine.position <= 0.6 + 1e-3
    finally:
        engine.stop()
    played = engine.sink.played[engine.stats.lead_frames:]
    assert np.abs(played).max() > 0.4 and engine.stats.underruns == 0


def test_rejects_bad_audio():
    with pytest.raises(PlaybackError):
        SampledSound(np.array([[np.nan, 0.0]]), 8000)
    with pytest.raises(PlaybackError):
        SampledSound(np.zeros((1, 0)), 8000)
