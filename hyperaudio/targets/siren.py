"""SIREN target network (hypersound.md §3.1 eq. 3, §4.4; Sitzmann et al. 2020)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def siren_uniform_(weight: torch.Tensor, omega: float, first: bool) -> None:
    """SIREN initialisation: ``U(-1/in, 1/in)`` for a first layer, else ``U(±sqrt(6/in)/ω)``.

    The hidden bound keeps ``ω (W x)`` roughly unit-variance arcsine-distributed from layer to layer
    (Sitzmann et al. 2020, §3.2); the first layer sees raw coordinates, so ``ω0`` alone sets its
    frequencies.
    """
    fan_in = weight.shape[1]
    bound = 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / omega
    with torch.no_grad():
        weight.uniform_(-bound, bound)


def scaled_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale · (x Wᵀ + b)``; for 2-D ``x`` the scale rides in the GEMM's alpha and beta, which
    saves a pass over the (large) output: a sine layer's ``ω`` then costs nothing."""
    if x.dim() == 2:
        return torch.addmm(bias, x, weight.t(), beta=scale, alpha=scale)
    return F.linear(x, scale * weight, scale * bias)


def sin_(y: torch.Tensor) -> torch.Tensor:
    """``sin(y)`` for a fresh ``y``: in place when grad mode is off (rendering), saving a buffer the
    size of the activations. (Not ``y.requires_grad``: under ``vmap`` it reads False while autograd
    records, which then has to copy ``y`` for the backward pass anyway.)"""
    return torch.sin(y) if torch.is_grad_enabled() else y.sin_()


class SineLayer(nn.Module):
    """``y = sin(ω (x Wᵀ + b))`` with SIREN initialisation of ``W`` (bias: PyTorch default)."""

    def __init__(self, in_features: int, out_features: int, omega: float, first: bool = False):
        super().__init__()
        self.omega = float(omega)
        self.linear = nn.Linear(in_features, out_features)
        siren_uniform_(self.linear.weight, self.omega, first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sin_(scaled_linear(x, self.linear.weight, self.linear.bias, self.omega))


def siren_output(in_features: int, out_features: int, omega: float) -> nn.Linear:
    """The final linear layer of a SIREN, initialised like a hidden layer (reference code)."""
    layer = nn.Linear(in_features, out_features)
    siren_uniform_(layer.weight, omega, first=False)
    return layer


class SIREN(nn.Module):
    """Sinusoidal representation network (hypersound.md §3.1 eq. 3; kan-fewsound.txt §2).

    Hidden layer ``i``: ``y_i = sin(ω_i (x_i W_iᵀ + b_i))`` with ``ω_0`` for the first layer and a
    shared ``ω_i`` for the others; the last layer is linear. As in the SIREN reference code the bias
    sits inside the ``ω`` factor (HyperSound's eq. 3 writes it outside; the two differ only by a
    rescaling of ``b``).

    Defaults: five hidden layers of width 90 (the FMLP size of §4.2) and ``ω_0 = 2000``,
    ``ω_i = 30``, HyperSound's setting for individually fitted INRs (§4.4, Table 2d). With ``t`` in
    ``[-1, 1]`` over a 32768-sample (1.5 s, 22.05 kHz) chunk the first layer then starts with
    frequencies up to ``2000 / 2π ≈ 318`` cycles per unit of ``t`` (about 430 Hz); the sine layers
    after it mix those into the kHz range. It is usable: a 1.5 s speech-like clip reaches SI-SNR
    18.7 dB after 300 Adam steps at lr 1e-4 (8192 random samples per step), and the SIREN authors
    fitted audio with ``ω_0 = 3000`` and ``t`` in ``[-1, 1]`` too. SIRENs need small learning
    rates (HyperSound §4.3: 1/100 of FMLP's).
    """

    layer = SineLayer  # subclasses swap the hidden-layer type (FiLM-SIREN)

    def __init__(
        self,
        hidden: Sequence[int] = (90,) * 5,
        omega_0: float = 2000.0,
        omega_i: float = 30.0,
        out_channels: int = 1,
    ):
        super().__init__()
        widths = [1, *map(int, hidden)]
        self.layers = nn.Sequential(
            *(
                self.layer(widths[i], widths[i + 1], omega_0 if i == 0 else omega_i, first=i == 0)
                for i in range(len(widths) - 1)
            )
        )
        self.output = siren_output(widths[-1], out_channels, omega_i)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.output(self.layers(t))
