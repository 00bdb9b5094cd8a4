"""Band-limited resampling with torch ops, for encoders that run at a fixed rate (Whisper: 16 kHz).

Polyphase windowed-sinc interpolation (the method of ``torchaudio.functional.resample``, which is
not available here): the rate ratio is reduced to ``new/orig`` by their gcd, ``new`` filters of
``2·width + orig`` taps are applied as one strided ``conv1d`` and their outputs interleaved. The
low-pass cut-off is ``rolloff · min(orig, new) / 2``; the Hann-windowed sinc spans
``lowpass_width`` zero crossings on each side. Differentiable, batch-independent, any length.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F


@lru_cache(maxsize=16)
def _kernel(orig: int, new: int, lowpass_width: int, rolloff: float) -> tuple[torch.Tensor, int]:
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_width * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, :] / orig
    t = (torch.arange(0, -new, -1, dtype=torch.float64)[:, None] / new + idx) * base
    t = t.clamp(-lowpass_width, lowpass_width)
    window = torch.cos(t * math.pi / lowpass_width / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    return (sinc * window * (base / orig)).unsqueeze(1).float(), width  # [new, 1, taps]


def resample(x: torch.Tensor, orig_rate: int, new_rate: int, lowpass_width: int = 6,
             rolloff: float = 0.99) -> torch.Tensor:
    """``x [..., T]`` at ``orig_rate`` -> ``[..., ceil(T · new_rate / orig_rate)]`` at ``new_rate``.

    Integer rates (Hz). Equal rates return ``x`` itself. Zero padding at both ends.
    """
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"rates must be positive integers, got {orig_rate} and {new_rate}")
    if orig_rate == new_rate:
        return x
    g = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // g, new_rate // g
    kernel, width = _kernel(orig, new, int(lowpass_width), float(rolloff))
    shape = x.shape
    length = shape[-1]
    flat = x.reshape(-1, 1, length)
    flat = F.pad(flat, (width, width + orig))
    y = F.conv1d(flat, kernel.to(device=x.device, dtype=x.dtype), stride=orig)  # [N, new, frames]
    y = y.transpose(1, 2).reshape(flat.shape[0], -1)
    out_len = math.ceil(new * length / orig)
    return y[:, :out_len].reshape(*shape[:-1], out_len)
