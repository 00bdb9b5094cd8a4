"""A small raw-waveform encoder: strided 1-D convolutions, global pooling, a linear projection.

Contract (hyperaudio encoders): an ``nn.Module`` whose ``forward`` maps a waveform ``[B, T]`` to a
latent ``[B, latent_dim]``; each latent depends only on its own waveform (GroupNorm normalises per
example, never across the batch), and any ``T >= 1`` works (the convolutions pad, and the pooling
is global), so the same encoder serves every clip length.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class WaveConvEncoder(nn.Module):
    """``[B, T]`` -> ``[B, latent_dim]``: conv stack (GroupNorm + GELU), mean and max pooling, linear."""

    conformance_params = {"channels": [8, 16], "kernel_size": 9, "stride": 4, "latent_dim": 16}
    conformance_samples = 2048

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 128), kernel_size: int = 9, stride: int = 4,
                 latent_dim: int = 256):
        super().__init__()
        if not channels or kernel_size < 1 or stride < 1 or latent_dim < 1:
            raise ValueError("need at least one conv layer and positive kernel_size, stride and latent_dim")
        layers: list[nn.Module] = []
        width = 1
        for c in map(int, channels):
            layers += [nn.Conv1d(width, c, kernel_size, stride=stride, padding=kernel_size // 2),
                       nn.GroupNorm(1, c), nn.GELU()]
            width = c
        self.convs = nn.Sequential(*layers)
        self.project = nn.Linear(2 * width, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"expected a waveform batch [B, T], got shape {list(x.shape)}")
        h = self.convs(x.unsqueeze(1))  # [B, C, T']
        pooled = torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=-1)
        return self.project(pooled)
