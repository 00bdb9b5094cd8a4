"""FiLM-conditioned SIREN (conditional-inr-synthesis.txt, PCINR; π-GAN, Chan et al. 2021)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .siren import SIREN, sin_, siren_uniform_


class FiLMSineLayer(nn.Module):
    """``h = sin(ω γ ⊙ (W x + b) + β)``: a SIREN layer with a FiLM frequency ``γ`` and phase ``β``."""

    def __init__(self, in_features: int, out_features: int, omega: float, first: bool = False):
        super().__init__()
        self.omega = float(omega)
        self.linear = nn.Linear(in_features, out_features)
        siren_uniform_(self.linear.weight, self.omega, first)
        self.gamma = nn.Parameter(torch.ones(out_features))
        self.beta = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ω γ ⊙ (W x + b) + β = (ω γ ⊙ W) x + (ω γ ⊙ b + β): scaling the small weight matrix instead
        # of the large activations leaves a single pass (the sine) after the matrix product.
        scale = self.omega * self.gamma
        return sin_(F.linear(x, scale.unsqueeze(-1) * self.linear.weight,
                             torch.addcmul(self.beta, scale, self.linear.bias)))


class FiLMSIREN(SIREN):
    """Periodic conditional INR (PCINR; conditional-inr-synthesis.txt) with π-GAN FiLM layers.

    Hidden layer ``i``: ``h_i = sin(γ'_i ⊙ (W_i h_(i-1) + b_i) + β_i)`` with per-unit frequency
    ``γ'_i`` and phase ``β_i``; linear output. The FiLM vectors are what a latent code or
    hypernetwork supplies (``modulation_parameters``); ``W_i, b_i`` can stay shared.

    We store ``γ'_i = ω_i γ_i``, with a fixed SIREN frequency ``ω_i`` and a learned ``γ_i``
    initialised to 1 (``β_i`` to 0), so that the modulations stay of order one whatever ``ω``
    (π-GAN does the same with ``frequencies * 15 + 30``). At initialisation the network is exactly
    a :class:`~hyperaudio.targets.siren.SIREN` with SIREN weight initialisation.

    Defaults: five hidden layers of 90 and SIREN's audio frequencies ``ω_0 = 2000`` (first
    layer), ``ω_i = 30`` (hypersound.md §4.4), with which an unconditioned FiLM-SIREN fits a 1.5 s
    clip like SIREN does. The PCINR paper gives no values and reports that results are very
    sensitive to them; lower them for signals with less high-frequency content.
    """

    layer = FiLMSineLayer

    @property
    def modulation_parameters(self) -> list[str]:
        return [f"layers.{i}.{name}" for i in range(len(self.layers)) for name in ("gamma", "beta")]
