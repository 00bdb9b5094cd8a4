"""Input encodings shared by the target networks.

Both lift the scalar time coordinate ``t`` (``[N, 1]`` in ``[-1, 1]``) to sinusoidal features so
that the network after them is not limited by the spectral bias of a plain MLP. Their frequencies
are fixed, so they live in buffers: a hypernetwork never generates them and ``.hya`` files store
them once.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionalEncoding(nn.Module):
    """NeRF positional encoding (hypersound.md §3.1 eq. 2; siamese-siren.txt §2 eq. 3).

    ``γ(t) = [t?, sin(s^0 π t), cos(s^0 π t), …, sin(s^(L-1) π t), cos(s^(L-1) π t)]``

    ``L = num_frequencies``, ``s = scale`` (2 in every paper used here). The features are
    interleaved per frequency exactly as in eq. 2. ``include_input`` prepends the raw ``t``, as the
    Siamese SIREN code does (``2L + 1`` features); NeRF/FMLP and KAN use the ``2L`` sinusoids only.
    """

    def __init__(self, num_frequencies: int = 10, scale: float = 2.0, include_input: bool = False):
        super().__init__()
        self.include_input = include_input
        exponents = torch.arange(num_frequencies, dtype=torch.float64)
        self.register_buffer("frequencies", (math.pi * float(scale) ** exponents).to(torch.float32))

    @property
    def out_features(self) -> int:
        return 2 * self.frequencies.numel() + int(self.include_input)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t * self.frequencies  # [N, L]
        features = torch.stack((torch.sin(angles), torch.cos(angles)), dim=-1).flatten(-2)
        return torch.cat((t, features), dim=-1) if self.include_input else features


class FourierFeatures(nn.Module):
    """Gaussian random Fourier features (Tancik et al. 2020; kan-fewsound.txt §2, "RFF").

    ``γ(t) = [cos(2π B t), sin(2π B t)]`` with ``B ∈ R^{m×1}``, ``B_j ~ N(0, σ²)``.

    ``B`` is in cycles per unit of ``t``. It is drawn from a generator seeded with ``seed`` (not
    the global RNG) so that every instance built from the same hyperparameters, e.g. one per chunk
    when fitting or when loading a file, shares the same features.
    """

    def __init__(self, num_features: int, sigma: float, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(int(seed))
        self.register_buffer("B", torch.randn(num_features, 1, generator=generator) * float(sigma))

    @property
    def out_features(self) -> int:
        return 2 * self.B.shape[0]

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        projection = (2 * math.pi) * (t @ self.B.T)  # [N, m]
        return torch.cat((torch.cos(projection), torch.sin(projection)), dim=-1)
