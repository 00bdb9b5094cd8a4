"""SoundStream-style convolutional encoder (hypersound.md §3.2; kan-fewsound.txt §2, Table 5)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class CausalConv1d(nn.Conv1d):
    """``Conv1d`` padded on the left by ``dilation · (kernel - 1)``: ``ceil(T / stride)`` outputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.dilation[0] * (self.kernel_size[0] - 1), 0)))


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1, wn: bool = False) -> nn.Module:
    conv = CausalConv1d(in_ch, out_ch, kernel, stride=stride, dilation=dilation)
    return nn.utils.parametrizations.weight_norm(conv) if wn else conv


class ResidualUnit(nn.Module):
    """``x + Conv1x1(ELU(Conv_k(x, dilation)))``."""

    def __init__(self, channels: int, dilation: int, kernel: int, wn: bool):
        super().__init__()
        self.block = nn.Sequential(_conv(channels, channels, kernel, dilation=dilation, wn=wn), nn.ELU(),
                                   _conv(channels, channels, 1, wn=wn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class EncoderBlock(nn.Sequential):
    """Residual units (dilations 1, 3, 9) at ``N/2`` channels, then a strided conv (kernel ``2s``) to ``N``."""

    def __init__(self, channels: int, stride: int, kernel: int, dilations: Sequence[int], wn: bool):
        half = channels // 2
        layers: list[nn.Module] = []
        for d in dilations:
            layers += [ResidualUnit(half, int(d), kernel, wn), nn.ELU()]
        layers.append(_conv(half, channels, 2 * stride, stride=stride, wn=wn))
        super().__init__(*layers)


class SoundStreamEncoder(nn.Module):
    """SoundStream encoder as used by HyperSound (hypersound.md §3.2) and FewSound (kan-fewsound.txt §2).

    ``CausalConv(1→C, 7)``, four encoder blocks with ``2C, 4C, 8C, 16C`` channels and strides
    ``2, 4, 5, 8`` (three residual units each: kernel 7, dilations 1/3/9), ELU between all layers,
    then ``CausalConv(16C→D, 3)``. Convolutions are causal (left-padded, as SoundStream), so every
    strided layer gives ``ceil(T / s)`` frames and any length ``T >= 1`` works.

    ``forward(x [B, T]) -> [B, frames, D]`` with ``frames = ceil(T / 320)`` (rounded up layer by
    layer): 32,768 samples give HyperSound's ``103 × 32`` latent. No normalisation by default
    (as the reference implementation); ``weight_norm=True`` reparametrises every convolution.

    Defaults: ``C = channels = 16``, ``D = latent_channels = 32``, ``strides = (2, 4, 5, 8)``,
    ``kernel_size = 7``, ``dilations = (1, 3, 9)``, ``weight_norm = False``.
    """

    conformance_params = {"channels": 2, "latent_channels": 4, "strides": [2, 4], "weight_norm": True}
    conformance_samples = 2048

    def __init__(self, channels: int = 16, latent_channels: int = 32, strides: Sequence[int] = (2, 4, 5, 8),
                 kernel_size: int = 7, dilations: Sequence[int] = (1, 3, 9), weight_norm: bool = False):
        super().__init__()
        strides, dilations = [int(s) for s in strides], [int(d) for d in dilations]
        if channels < 1 or latent_channels < 1 or kernel_size < 1 or not strides or min(strides) < 1:
            raise ValueError("channels, latent_channels, kernel_size and strides must be positive "
                             "(at least one stride)")
        if not dilations or min(dilations) < 1:
            raise ValueError("dilations must be positive (at least one)")
        wn = bool(weight_norm)
        layers: list[nn.Module] = [_conv(1, channels, kernel_size, wn=wn), nn.ELU()]
        width = channels
        for stride in strides:
            layers += [EncoderBlock(2 * width, stride, kernel_size, dilations, wn), nn.ELU()]
            width *= 2
        layers.append(_conv(width, latent_channels, 3, wn=wn))
        self.layers = nn.Sequential(*layers)
        self.strides = tuple(strides)

    def frames(self, samples: int) -> int:
        """Latent frames for ``samples`` input samples."""
        for s in self.strides:
            samples = -(-samples // s)
        return samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"expected a waveform batch [B, T], got shape {list(x.shape)}")
        return self.layers(x.unsqueeze(1)).transpose(1, 2)
