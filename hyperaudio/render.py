"""Rendering an INR at any sample rate, start, duration and speed.

Time convention: sample ``j`` of a chunk of length ``L`` sits at ``t = -1 + 2 j / (L - 1)``; a
position between samples is a fractional ``j``, so the INR is evaluated as a continuous function.
``start`` and ``duration`` are in seconds of the *source* sound; ``speed`` scales playback time
(0.5 = half speed, twice as long), so the output lasts ``duration / speed`` seconds.

Band-limiting: the source is sampled at an effective rate ``sr / speed``. At or above the native
rate the INR is evaluated directly at the output instants (its own continuous interpolation).
Below it, evaluating the INR at the sparse instants would alias whatever it holds above the new
Nyquist frequency, so we render on the native grid and resample with soxr's band-limited filter.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np
import torch

from .audio import resample
from .functional import call_batched, heads, postprocess
from .hya import INR

BLOCK = 1 << 16  # evaluate at most this many instants per batched call (memory bound)


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
    if not (sr > 0 and math.isfinite(sr)):
        raise ValueError(f"sample rate must be positive, got {sr}")
    if not (speed > 0 and math.isfinite(speed)):
        raise ValueError(f"speed must be positive, got {speed}")
    if start < 0:
        raise ValueError("start must be >= 0")
    native = inr.sample_rate
    available = max(0.0, inr.duration - start)
    src_duration = available if duration is None else max(0.0, float(duration))
    n_out = int(round(src_duration / speed * sr))
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
