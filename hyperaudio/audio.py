"""Audio input/output with validation, resampling, and atomic writes.

Convention: audio arrays are float32 ``[C, N]`` (channels first) in [-1, 1].
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

from .errors import AudioError, HyperaudioError

MIN_RATE = 1000
MAX_RATE = 768_000
FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}  # output formats, by extension


def warn(message: str) -> None:
    """Print ``hyperaudio: warning: message`` on stderr: input a user could mean, used as it is."""
    print(f"hyperaudio: warning: {message}", file=sys.stderr)


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


class OutputError(HyperaudioError):
    """An output path that would destroy an input or cannot be written."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: equal once resolved (symlinks, ``..``, relative to the current
    folder), or two hard links to one inode."""
    try:
        if Path(a).resolve() == Path(b).resolve():
            return True
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        return False


def check_output(path: str | os.PathLike, *inputs, flag: str = "-o") -> Path:
    """Refuse, before any work, an output path that is one of ``inputs`` (None entries are skipped)
    or cannot be written: a folder, a path under a regular file, a place the process may not write.

    Writability is tried for real (a temporary file created and removed in the nearest existing
    folder) because permissions alone do not say it: root may write anywhere except /proc or /sys.
    """
    path = Path(path)
    for source in inputs:
        if source is not None and same_file(path, source):
            raise OutputError(f"{flag} {path} is the input {source}: writing it would destroy the input")
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder: name a file in it")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # atomic_path creates the missing folders
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: {folder} is not a folder")
    try:
        # The name atomic_path will use, so a name too long for the folder fails here too.
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: cannot create files in {folder} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)
    return path


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
    promised = wav_promised_frames(path)
    if promised is not None and promised > data.shape[0]:
        warn(f"{path}: cut short: read {data.shape[0]} of the {promised} frames its header promises; "
             "using what is there")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path}: contains NaN or infinite samples")
    check_rate(sr)
    return np.ascontiguousarray(data.T), int(sr)


def wav_promised_frames(path: Path) -> int | None:
    """Frames a RIFF/WAVE file's ``data`` chunk header claims, or None (another format, or a size
    left unknown: 0 or 0xFFFFFFFF, as streaming writers and RF64 files leave it).

    libsndfile silently shortens a truncated file to the frames present; only the header says how
    many were meant to be there.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return None
        align = 0
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            kind, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if kind == b"data":
                return size // align if align and size not in (0, 0xFFFFFFFF) else None
            body = f.read(size + (size & 1)) if kind == b"fmt " else None  # chunks are padded to even sizes
            if body is not None:
                align = struct.unpack("<H", body[12:14])[0] if len(body) >= 14 else 0
            else:
                f.seek(size + (size & 1), os.SEEK_CUR)


def output_format(path: str | os.PathLike) -> str:
    """The soundfile format name an output path's extension asks for, or AudioError."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: unsupported output format (use .wav, .flac, .ogg or .mp3)")
    return fmt


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
    fmt = output_format(path)
    if subtype is None and fmt == "WAV":
        subtype = "FLOAT"
    # soundfile needs an integer rate; rounding a fractional rate only relabels the header.
    with atomic_path(path) as tmp:
        sf.write(str(tmp), x.T, int(round(sr)), format=fmt, subtype=subtype)
    return path


def to_mono(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=0, keepdims=True)
