"""NeRF / FMLP target network (hypersound.md §3.1; kan-fewsound.txt §2)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .encoding import PositionalEncoding


def relu_mlp(in_features: int, hidden: Sequence[int], out_features: int) -> nn.Sequential:
    """Dense layers with biases and ReLU between them, linear output (PyTorch default init)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, int(width)), nn.ReLU()]
        in_features = int(width)
    layers.append(nn.Linear(in_features, out_features))
    return nn.Sequential(*layers)


class NeRF(nn.Module):
    """Fourier-mapped MLP, "FMLP" in HyperSound (hypersound.md §3.1, eq. 2), "NeRF" in kan-fewsound §2.

    ``f(t) = MLP_ReLU(γ(t))`` with ``γ(t) = [sin(2^0 π t), cos(2^0 π t), …, sin(2^(L-1) π t),
    cos(2^(L-1) π t)]`` (``2L`` features, no raw ``t``).

    Defaults: ``L = encoding_length = 10``; HyperSound's five hidden layers of width 90
    (compression ratio 1x at 32768 samples, §4.2); linear output layer; PyTorch's default
    (Kaiming-uniform) initialisation.
    """

    def __init__(self, encoding_length: int = 10, hidden: Sequence[int] = (90,) * 5, out_channels: int = 1):
        super().__init__()
        self.encoding = PositionalEncoding(encoding_length)
        self.mlp = relu_mlp(self.encoding.out_features, hidden, out_channels)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encoding(t))
