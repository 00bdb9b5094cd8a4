"""Rendering an INR at any sample rate, start, duration and speed.

Time convention: sample ``j`` of a chunk of length ``L`` sits at ``t = -1 + 2 j / (L - 1)``; a
position between samples is a fractional ``j``, so the INR is evaluated as a continuous function.
``start`` and ``duration`` are in seconds of the *source* sound; ``speed`` scales playback time
(0.5 = half speed, twice as long), so the output lasts ``duration / speed`` seconds.

Band-limiting: the source is sampled at an effective rate ``sr / speed``. At or above the native
rate the INR is evaluated directly at the output instants (its own continuous interpolation).
Below it, evaluating the INR at the sparse instants would alias whatever it holds above the new
Nyquist frequency, so we render on the native grid and resample with soxr's band-limited filter.

:func:`render` returns the whole output in memory; :func:`render_to_file` writes the same samples
block by block, so its memory stays flat whatever the length.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .audio import atomic_path, output_format, resample
from .errors import HyperaudioError
from .functional import call_batched, heads, postprocess
from .hya import INR

BLOCK = 1 << 16  # evaluate at most this many instants per batched call (memory bound)
# One output of at most 2^30 samples (all channels): the most a float32 WAV, the default output, can
# hold (its RIFF sizes are 32-bit, so 4 GiB of data; 6.2 h of mono at 48 kHz). FLAC and Ogg could hold
# more, but a longer render is a typo (--duration 1e9, --speed 1e-9) far more often than a wish.
MAX_OUTPUT_SAMPLES = (1 << 32) // 4
# A network with its own postprocess (Siamese SIREN's denoiser) needs the whole signal at once, so
# its output is held in memory: 2^24 samples (6 min at 48 kHz) keep the denoiser's STFTs near 1 GB.
MAX_WHOLE_SAMPLES = 1 << 24


class RenderError(HyperaudioError, ValueError):
    """Render arguments that are invalid or ask for more output than the bounds above allow."""


@dataclass(frozen=True)
class ChunkSpan:
    """One chunk of an INR and how many samples it shares with its neighbours."""

    start: int
    length: int
    prev_overlap: int  # samples shared with the previous chunk (0 if none)
    next_overlap: int

    @property
    def end(self) -> int:
        return self.start + self.length - 1


def chunk_spans(chunks: list[tuple[int, int]]) -> list[ChunkSpan]:
    """The chunks of an INR (``inr.chunks``) with their overlaps."""
    spans = []
    for k, (start, length) in enumerate(chunks):
        prev = max(0, chunks[k - 1][0] + chunks[k - 1][1] - 1 - start) if k > 0 else 0
        nxt = max(0, start + length - 1 - chunks[k + 1][0]) if k < len(chunks) - 1 else 0
        spans.append(ChunkSpan(int(start), int(length), int(prev), int(nxt)))
    return spans


def crossfade_weights(span: ChunkSpan, pos: torch.Tensor) -> torch.Tensor:
    """Linear ramps across the overlap with each neighbouring chunk (normalised by the caller).

    The one definition of the crossfade: rendering, the playback backends and the ONNX export use
    it, so all of them produce the same samples.
    """
    w = torch.ones_like(pos)
    if span.prev_overlap > 0:
        w = torch.minimum(w, ((pos - span.start + 1) / (span.prev_overlap + 1)).clamp(0, 1))
    if span.next_overlap > 0:
        w = torch.minimum(w, ((span.end - pos + 1) / (span.next_overlap + 1)).clamp(0, 1))
    return w


@torch.no_grad()
def evaluate(inr: INR, positions: torch.Tensor) -> torch.Tensor:
    """Raw INR output at fractional native-sample ``positions`` ``[M]`` -> ``[C, H, M]``.

    Positions outside the sound are silent. Chunks are crossfaded where they overlap. The INR's
    ``gain`` scales the output (1.0 unless a hypernetwork encoded peak-normalised audio).
    """
    device = next(iter(inr.params.values())).device
    pos = positions.to(device=device, dtype=torch.float64)
    m = pos.shape[0]
    n_heads = heads(inr.module)
    out = torch.zeros(inr.channels, n_heads, m, device=device)
    wsum = torch.zeros(m, device=device, dtype=torch.float64)
    for k, span in enumerate(chunk_spans(inr.chunks)):
        inside = torch.nonzero((pos >= span.start) & (pos <= span.end)).squeeze(-1)
        if inside.numel() == 0:
            continue
        params = inr.chunk_params(k)
        for block in inside.split(BLOCK):
            p = pos[block]
            t = (-1 + 2 * (p - span.start) / max(span.length - 1, 1)).to(torch.float32).unsqueeze(-1)
            y = call_batched(inr.module, params, t)  # [C, n, H]
            w = crossfade_weights(span, p)
            out[:, :, block] += (w.to(y.dtype) * y.permute(0, 2, 1))
            wsum[block] += w
    out = out / wsum.clamp_min(1e-12).to(out.dtype)
    return out * inr.gain if inr.gain != 1.0 else out


def source_duration(inr: INR, start: float = 0.0, duration: float | None = None) -> float:
    """Seconds of the source a render covers: ``duration``, or from ``start`` to the end."""
    return max(0.0, inr.duration - start) if duration is None else max(0.0, float(duration))


def output_frames(inr: INR, sr: float, start: float = 0.0, duration: float | None = None,
                  speed: float = 1.0) -> int:
    """Frames a render produces; RenderError for invalid arguments or an output over MAX_OUTPUT_SAMPLES.

    Computed in floating point and checked before any allocation, so an infinite or huge request is
    refused instead of overflowing or exhausting memory.
    """
    if not (sr > 0 and math.isfinite(sr)):
        raise RenderError(f"sample rate must be positive and finite, got {sr}")
    if not (speed > 0 and math.isfinite(speed)):
        raise RenderError(f"speed must be positive and finite, got {speed}")
    if not (start >= 0 and math.isfinite(start)):
        raise RenderError(f"start must be a finite number of seconds >= 0, got {start}")
    if duration is not None and not (duration >= 0 and math.isfinite(duration)):
        raise RenderError(f"duration must be a finite number of seconds >= 0, got {duration}")
    frames = source_duration(inr, start, duration) / speed * sr
    if frames * inr.channels > MAX_OUTPUT_SAMPLES:
        raise RenderError(f"the output would have {frames:.3g} frames x {inr.channels} channel(s), over the "
                          f"{MAX_OUTPUT_SAMPLES:,} samples a float32 WAV can hold (render.MAX_OUTPUT_SAMPLES): "
                          "shorten --duration, raise --speed or lower --sr")
    return int(round(frames))


def render(
    inr: INR,
    sr: float,
    start: float = 0.0,
    duration: float | None = None,
    speed: float = 1.0,
    bandlimit: bool = True,
    apply_postprocess: bool = True,
) -> np.ndarray:
    """Render ``[C, M]`` float32 audio at rate ``sr``."""
    n_out = output_frames(inr, sr, start, duration, speed)
    native = inr.sample_rate
    src_duration = source_duration(inr, start, duration)
    effective = sr / speed  # source instants per second of source time
    src_start = start * native
    if n_out == 0:
        return np.zeros((inr.channels, 0), dtype=np.float32)
    if bandlimit and effective < native:
        n_native = int(math.ceil(src_duration * native)) + 1
        pos = src_start + torch.arange(n_native, dtype=torch.float64)
        y = evaluate(inr, pos).cpu().numpy()
        c, h, _ = y.shape
        y = resample(y.reshape(c * h, -1), native, effective).reshape(c, h, -1)
        if y.shape[-1] < n_out:
            y = np.pad(y, ((0, 0), (0, 0), (0, n_out - y.shape[-1])))
        y = y[..., :n_out]
    else:
        pos = src_start + torch.arange(n_out, dtype=torch.float64) * (native / effective)
        y = evaluate(inr, pos).cpu().numpy()
    if apply_postprocess:
        return np.stack([postprocess(inr.module, y[c], sr) for c in range(y.shape[0])]).astype(np.float32)
    return y[:, 0].astype(np.float32)


def render_to_file(
    inr: INR,
    path: str | os.PathLike,
    sr: float,
    start: float = 0.0,
    duration: float | None = None,
    speed: float = 1.0,
    bandlimit: bool = True,
    subtype: str | None = None,
) -> int:
    """Write what :func:`render` returns to ``path`` (atomically; format by extension); returns the frames.

    Evaluated and written block by block (the band-limited path through ``soxr.ResampleStream``), so
    memory stays flat whatever the length. A network with its own postprocess needs the whole signal:
    it is rendered in memory, up to MAX_WHOLE_SAMPLES.
    """
    import soundfile as sf

    path = Path(path)
    fmt = output_format(path)
    n_out = output_frames(inr, sr, start, duration, speed)
    whole = getattr(inr.module, "postprocess", None) is not None
    if whole and n_out * inr.channels > MAX_WHOLE_SAMPLES:
        raise RenderError(f"{inr.config['target']['name']} denoises its whole output at once: at most "
                          f"{MAX_WHOLE_SAMPLES:,} samples (render.MAX_WHOLE_SAMPLES), this render has "
                          f"{n_out * inr.channels:,}")
    if subtype is None and fmt == "WAV":
        subtype = "FLOAT"
    blocks = ([render(inr, sr, start, duration, speed, bandlimit).T] if whole
              else _blocks(inr, sr, start, duration, speed, bandlimit, n_out))
    # soundfile needs an integer rate; rounding a fractional rate only relabels the header.
    with atomic_path(path) as tmp:
        with sf.SoundFile(str(tmp), "w", int(round(sr)), inr.channels, subtype, format=fmt) as f:
            for block in blocks:
                f.write(block)
    return n_out


def _blocks(inr: INR, sr: float, start: float, duration: float | None, speed: float, bandlimit: bool, n_out: int):
    """``[n, C]`` float32 blocks of the first head, ``n_out`` frames in all (networks without postprocess)."""
    native, effective = inr.sample_rate, sr / speed
    src_start = start * native
    if not (bandlimit and effective < native):
        step = native / effective
        for b in range(0, n_out, BLOCK):
            pos = src_start + torch.arange(b, min(b + BLOCK, n_out), dtype=torch.float64) * step
            yield _first_head(evaluate(inr, pos))
        return
    import soxr

    # The native grid render() resamples, fed to the same filter (audio.resample's) in blocks.
    n_native = int(math.ceil(source_duration(inr, start, duration) * native)) + 1
    stream = soxr.ResampleStream(native, effective, inr.channels, dtype="float32", quality="VHQ")
    left = n_out
    for b in range(0, n_native, BLOCK):
        pos = src_start + torch.arange(b, min(b + BLOCK, n_native), dtype=torch.float64)
        y = stream.resample_chunk(_first_head(evaluate(inr, pos)), last=b + BLOCK >= n_native)
        if left > 0 and len(y):
            yield y[:left]
            left -= len(y[:left])
    for b in range(0, left, BLOCK):  # soxr gave fewer frames than asked: silence, as render() pads
        yield np.zeros((min(BLOCK, left - b), inr.channels), dtype=np.float32)


def _first_head(y: torch.Tensor) -> np.ndarray:
    """``[C, H, n]`` -> ``[n, C]`` contiguous float32 (what soundfile and soxr take)."""
    return np.ascontiguousarray(y[:, 0].cpu().numpy().T, dtype=np.float32)
