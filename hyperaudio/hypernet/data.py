"""Training data for hypernetworks: audio clips decoded once, kept in memory, cropped at random.

Sources (:func:`find_audio`): a folder (searched recursively for files with an extension soundfile
reads), a list file (one path per line, relative to the list's folder; ``#`` comments), a glob
pattern, or a single audio file. :func:`load_clips` decodes every file once: mono (mean of the
channels), resampled with soxr to the model rate (``hypernet.sample_rate``), peak-normalised to 1.
Unreadable and silent files are skipped with a warning naming them; no usable file at all is an
error.

Training crops (:meth:`ClipSet.batch`) are ``hypernet.num_samples`` long: a random window of a
longer clip, a shorter clip zero-padded at the end (as :func:`hyperaudio.hypernet.encode.encode`
pads). Augmentations (hypersound.md §4.1, after RAVE): random crop, random phase mangle (a
second-order all-pass filter at a log-uniform random frequency; magnitudes unchanged, phases
shifted) and dequantization (uniform noise of one step at ``train.dequantize_bits``).

Determinism: every random choice of a step comes from ``numpy.random.default_rng([seed, rank,
step])`` and the order of clips from a permutation per epoch seeded by ``(seed, epoch)``: the
batch of step ``s`` is a pure function of ``(seed, rank, world, s)``. Resuming at step ``s`` thus
reproduces the data stream exactly, with nothing to save but the step. Validation crops are fixed:
the middle ``num_samples`` of each held-out clip.
"""

from __future__ import annotations

import fnmatch
import glob
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import load as load_audio, resample
from ..errors import AudioError, HyperaudioError


class DataError(HyperaudioError):
    """No usable training or validation data."""


#: File extensions scanned in folders, besides those soundfile reports.
EXTRA_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"}
GLOB_CHARS = set("*?[")


def audio_extensions() -> set[str]:
    import soundfile as sf

    return {f".{ext.lower()}" for ext in sf.available_formats()} | EXTRA_EXTENSIONS


def is_pattern(text: str) -> bool:
    return any(c in GLOB_CHARS for c in str(text))


def find_audio(source: str | os.PathLike) -> list[Path]:
    """The audio files a source names: a folder (recursive), a list file, a glob pattern or a file."""
    text = str(source)
    path = Path(text)
    exts = audio_extensions()
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in exts)
    if path.is_file():
        if path.suffix.lower() in exts:
            return [path]
        return _read_list(path)
    if is_pattern(text):
        return sorted(Path(p) for p in glob.glob(text, recursive=True)
                      if Path(p).is_file() and Path(p).suffix.lower() in exts)
    raise DataError(f"{text}: no such folder, list file or audio file")


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read it as a list of audio files ({exc})") from None
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line)
        out.append(p if p.is_absolute() else path.parent / p)
    return out


def split_sources(data: str | os.PathLike | list, val: str | os.PathLike | list | None
                  ) -> tuple[list[Path], list[Path]]:
    """Training and validation files. ``val`` may be a folder, a list file, a file, or a glob pattern
    matched against the training files' paths relative to the data folder (or their names); files
    that are held out never train."""
    train = _many(data)
    if val is None:
        return train, []
    if isinstance(val, (list, tuple)):
        held = _many(val)
    elif is_pattern(str(val)) and not Path(str(val)).exists():
        roots = [Path(str(d)) for d in (data if isinstance(data, (list, tuple)) else [data])]
        held = []
        for f in train:
            rel = _relative(f, roots)
            if fnmatch.fnmatch(rel, str(val)) or fnmatch.fnmatch(f.name, str(val)) or fnmatch.fnmatch(str(f), str(val)):
                held.append(f)
        held += [f for f in find_audio(val) if f not in held]
    else:
        held = find_audio(val)
    held_set = {_same(f) for f in held}
    train = [f for f in train if _same(f) not in held_set]
    return train, held


def _many(sources) -> list[Path]:
    items = sources if isinstance(sources, (list, tuple)) else [sources]
    files: list[Path] = []
    for item in items:
        files += find_audio(item)
    return list(dict.fromkeys(files))


def _relative(f: Path, roots: list[Path]) -> str:
    for root in roots:
        try:
            return str(f.relative_to(root))
        except ValueError:
            continue
    return f.name


def _same(p: Path) -> str:
    try:
        return str(p.resolve())
    except OSError:
        return str(p)


def decode(path: Path, sample_rate: int) -> np.ndarray:
    """One file as mono float32 at ``sample_rate``, peak-normalised to 1; AudioError if unusable."""
    x, sr = load_audio(path)
    mono = x.mean(axis=0, keepdims=True) if x.shape[0] > 1 else x
    if sr != sample_rate:
        mono = resample(mono, sr, sample_rate)
    mono = mono[0]
    peak = float(np.abs(mono).max()) if mono.size else 0.0
    if not peak > 0:
        raise AudioError(f"{path}: silent")
    return (mono / peak).astype(np.float32)


@dataclass
class ClipSet:
    """Decoded clips (mono, model rate, peak 1) and how to cut training and validation crops."""

    clips: list[np.ndarray]
    names: list[str]
    sample_rate: int
    num_samples: int
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def seconds(self) -> float:
        return sum(len(c) for c in self.clips) / self.sample_rate

    # -- sampling ------------------------------------------------------------------------------
    def shard(self, epoch: int, seed: int, rank: int = 0, world: int = 1) -> np.ndarray:
        """This rank's clip order in ``epoch`` (DistributedSampler-style: one permutation per epoch,
        padded by wrapping to a multiple of ``world``, every ``world``-th entry from ``rank``)."""
        n = len(self.clips)
        perm = np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(n)
        total = math.ceil(n / world) * world
        if total > n:
            perm = np.resize(perm, total)  # wraps around, as DistributedSampler pads
        return perm[rank:total:world]

    def indices(self, step: int, batch: int, seed: int, rank: int = 0, world: int = 1) -> tuple[list[int], int, int]:
        """Clip indices of ``step`` for this rank, and the ``(epoch, offset)`` the step starts at."""
        per_rank = math.ceil(len(self.clips) / world)
        position = step * batch
        epoch, offset = divmod(position, per_rank)
        out, e, o = [], epoch, offset
        order = self.shard(e, seed, rank, world)
        while len(out) < batch:
            if o >= per_rank:
                e, o = e + 1, 0
                order = self.shard(e, seed, rank, world)
            take = min(batch - len(out), per_rank - o)
            out += [int(i) for i in order[o : o + take]]
            o += take
        return out, epoch, offset

    def batch(self, step: int, batch: int, tc: dict, rank: int = 0, world: int = 1) -> np.ndarray:
        """The augmented crops ``[batch, num_samples]`` float32 of this rank at ``step``."""
        idx, _, _ = self.indices(step, batch, int(tc["seed"]), rank, world)
        rng = np.random.default_rng([int(tc["seed"]), int(rank), int(step), 0xC407])
        return np.stack([self.crop(self.clips[i], rng, tc) for i in idx]).astype(np.float32)

    def crop(self, clip: np.ndarray, rng: np.random.Generator, tc: dict) -> np.ndarray:
        n = self.num_samples
        spare = len(clip) - n
        start = int(rng.integers(0, spare + 1)) if spare > 0 and tc.get("random_crop", True) else 0
        # A little signal before the crop lets the all-pass filter settle (no start-up transient).
        pre = min(start, 1024)
        x = clip[start - pre : start + n]
        if rng.random() < float(tc.get("phase_mangle", 0.0)):
            freq = log_uniform(rng, float(tc["phase_mangle_min_hz"]), min(float(tc["phase_mangle_max_hz"]),
                                                                          0.45 * self.sample_rate))
            x = phase_mangle(x, freq, float(tc["phase_mangle_amp"]), self.sample_rate)
        x = x[pre:]
        if len(x) < n:
            x = np.pad(x, (0, n - len(x)))
        bits = int(tc.get("dequantize_bits", 0))
        if bits:
            x = dequantize(x, bits, rng)
        return np.asarray(x, dtype=np.float32)

    def validation_crops(self, limit: int = 0) -> np.ndarray:
        """Fixed crops ``[K, num_samples]``: the middle of each clip (padded when shorter)."""
        clips = self.clips if not limit else self.clips[:limit]
        return np.stack([center_crop(c, self.num_samples) for c in clips]).astype(np.float32)


def center_crop(clip: np.ndarray, n: int) -> np.ndarray:
    if len(clip) >= n:
        start = (len(clip) - n) // 2
        return clip[start : start + n]
    return np.pad(clip, (0, n - len(clip)))


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(max(high, low)))))


def allpass_coefficients(freq: float, amp: float, sample_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """RAVE's ``pole_to_z_filter``: a second-order all-pass ``(b, a)`` with poles at radius ``amp``
    and angle ``2π freq / sample_rate`` (``b`` is ``a`` reversed, so ``|H(e^{jω})| = 1``)."""
    omega = 2 * math.pi * freq / sample_rate
    z0 = amp * complex(math.cos(omega), math.sin(omega))
    a = np.array([1.0, -2 * z0.real, abs(z0) ** 2])
    b = a[::-1].copy()
    return b, a


def phase_mangle(x: np.ndarray, freq: float, amp: float, sample_rate: float) -> np.ndarray:
    """Filter ``x`` with :func:`allpass_coefficients`: the magnitude spectrum is kept, phases move."""
    from scipy.signal import lfilter

    b, a = allpass_coefficients(freq, amp, sample_rate)
    return lfilter(b, a, np.asarray(x, dtype=np.float64)).astype(np.float32)


def dequantize(x: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    """RAVE's ``Dequantize``: add uniform noise in ``[0, 2^-bits)``."""
    return (x + rng.random(len(x)) / 2.0**bits).astype(np.float32)


def load_clips(files: list[Path], sample_rate: int, num_samples: int, what: str = "training",
               warn=None) -> ClipSet:
    """Decode ``files``; unreadable or silent ones are skipped with a warning naming each."""
    warn = warn or (lambda message: warnings.warn(message, stacklevel=2))
    clips, names, skipped = [], [], []
    for path in files:
        try:
            clips.append(decode(path, int(sample_rate)))
            names.append(str(path))
        except AudioError as exc:
            skipped.append(str(path))
            warn(f"skipping {what} file {exc}")
    if not clips:
        more = f" ({len(skipped)} unreadable or silent file(s) skipped)" if skipped else ""
        raise DataError(f"no usable {what} audio{more}")
    return ClipSet(clips, names, int(sample_rate), int(num_samples), skipped)


def load_datasets(data, val, config: dict, warn=None) -> tuple[ClipSet, ClipSet | None]:
    """``(train, val)`` ClipSets for a resolved config (``val`` None: no validation)."""
    hc = config["hypernet"]
    if isinstance(data, ClipSet):
        return data, val if isinstance(val, ClipSet) or val is None else load_datasets(val, None, config, warn)[0]
    train_files, val_files = split_sources(data, val if not isinstance(val, ClipSet) else None)
    if not train_files:
        raise DataError(f"no audio files in {data}" + (" (after holding out the validation files)" if val_files else ""))
    train = load_clips(train_files, hc["sample_rate"], hc["num_samples"], "training", warn)
    if isinstance(val, ClipSet):
        return train, val
    if val is not None and not val_files:
        raise DataError(f"no validation audio matches {val}")
    held = load_clips(val_files, hc["sample_rate"], hc["num_samples"], "validation", warn) if val_files else None
    return train, held
