"""The benchmarks' clips: every audio file in a folder, mono, resampled, leading silence skipped,
cropped or padded to a fixed length and peak-normalised to 0.9, so every method sees the same input."""

from __future__ import annotations

from pathlib import Path

import numpy as np

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}


def clips(folder: Path, sr: int, samples: int, limit: int):
    """Yields ``(path, x)`` for the first ``limit`` files, ``x`` float32 ``[samples]`` at ``sr``."""
    from hyperaudio import audio

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)[:limit]
    for path in files:
        x, rate = audio.load(path)
        x = audio.resample(audio.to_mono(x), rate, sr)[0]
        start = int(np.argmax(np.abs(x) > 0.02 * np.abs(x).max()))  # skip leading silence
        x = x[start : start + samples]
        x = np.pad(x, (0, samples - len(x)))
        yield path, (0.9 * x / max(np.abs(x).max(), 1e-6)).astype(np.float32)
