"""Plain sampled audio as a playback source, so an original plays through the same engine as its INR.

The engine asks its backend for the sound along linear grids of fractional source positions
(``backends``). :class:`SampledSound` stands in for an INR (rate, length, channels) and
:class:`SampledBackend` answers those requests from the samples themselves.

Between samples it interpolates linearly, which would be a poor resampler on its own, so a sampled
sound asks the engine for ``interpolation="resample"``: every voice then reads the sound on its own
native grid (integer positions, exact samples; a fractional offset only after a seek or loop wrap)
and soxr does the rate conversion, band-limited in both directions. At the native rate and speed 1
the engine plays the samples unchanged; through a file sink the result equals
``hyperaudio.audio.resample`` (the same soxr call), which tests/test_playback_sampled.py checks.
"""

from __future__ import annotations

import numpy as np

from ..audio import check_rate
from .errors import PlaybackError


class SampledSound:
    """``audio`` ``[C, N]`` (or ``[N]``) float at ``sample_rate``, shaped like an INR for the engine."""

    # The engine's default above the native rate; linear interpolation between samples would image.
    interpolation = "resample"
    module = None  # no target network: nothing to postprocess

    def __init__(self, audio: np.ndarray, sample_rate: float):
        audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
        if audio.ndim != 2 or audio.shape[1] == 0:
            raise PlaybackError(f"expected [channels, samples] audio, got shape {audio.shape}")
        if not np.all(np.isfinite(audio)):
            raise PlaybackError("cannot play audio with NaN or infinite samples")
        self.audio = np.ascontiguousarray(audio)
        self.sample_rate = check_rate(float(sample_rate))
        self.channels, self.num_samples = audio.shape
        self.config: dict = {}

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate


class SampledBackend:
    """Linear interpolation of the samples at ``anchor + (k0 + j) * inc``; silence outside the sound."""

    name = "samples"
    heads = 1

    def __init__(self, sound: SampledSound):
        import torch

        self.sound = sound
        self.channels = sound.channels
        self.device = torch.device("cpu")
        # One zero frame past the end, so the right neighbour of the last sample needs no branch.
        self._padded = np.concatenate([sound.audio, np.zeros((sound.channels, 1), np.float32)], axis=1)

    def submit(self, anchor: float, inc: float, k0: int, n: int):
        from .backends import Pending

        pos = np.arange(k0, k0 + n, dtype=np.float64) * inc + anchor
        return Pending(value=self.evaluate(pos))

    def evaluate(self, positions: np.ndarray) -> np.ndarray:
        """``[n, channels]`` float32 at fractional sample ``positions``."""
        pos = np.asarray(positions, dtype=np.float64)
        last = self.sound.num_samples - 1
        inside = (pos >= 0) & (pos <= last)
        p = np.where(inside, pos, 0.0)
        i = np.floor(p).astype(np.int64)
        frac = (p - i).astype(np.float32)
        left, right = self._padded[:, i], self._padded[:, i + 1]
        y = left + (right - left) * frac
        y[:, ~inside] = 0.0
        return np.ascontiguousarray(y.T, dtype=np.float32)
