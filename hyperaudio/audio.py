"""Audio input/output with validation, resampling, and atomic writes.

Convention: audio arrays are float32 ``[C, N]`` (channels first) in [-1, 1].
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import AudioError

MIN_RATE = 1000
MAX_RATE = 768_000


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    Readers never see a half-written file, and a crash leaves any previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_rate(sr: float) -> float:
    if not np.isfinite(sr) or not MIN_RATE <= sr <= MAX_RATE:
        raise AudioError(f"unsupported sample rate {sr:g} Hz (supported: {MIN_RATE}-{MAX_RATE} Hz)")
    return float(sr)


def load(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read any format soundfile reads; returns ``([C, N] float32, rate)`` or raises AudioError."""
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioError(f"{path}: not an audio file soundfile can read ({exc})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: contains no samples")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path}: contains NaN or infinite samples")
    check_rate(sr)
    return np.ascontiguousarray(data.T), int(sr)


def resample(x: np.ndarray, sr_in: float, sr_out: float) -> np.ndarray:
    """Band-limited resampling of ``[C, N]`` audio with soxr (very high quality)."""
    import soxr

    if sr_in == sr_out:
        return x
    y = soxr.resample(np.ascontiguousarray(x.T, dtype=np.float32), float(sr_in), float(sr_out), quality="VHQ")
    return np.ascontiguousarray(y.T, dtype=np.float32)


def save(path: str | os.PathLike, x: np.ndarray, sr: float, subtype: str | None = None) -> Path:
    """Write ``[C, N]`` audio atomically; the format follows the file extension."""
    import soundfile as sf

    path = Path(path)
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: unsupported output format (use .wav, .flac, .ogg or .mp3)")
    if subtype is None and fmt == "WAV":
        subtype = "FLOAT"
    # soundfile needs an integer rate; rounding a fractional rate only relabels the header.
    with atomic_path(path) as tmp:
        sf.write(str(tmp), x.T, int(round(sr)), format=fmt, subtype=subtype)
    return path


def to_mono(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=0, keepdims=True)
