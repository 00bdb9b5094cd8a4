"""WIRE target network (kan-fewsound.txt §2 "WIRE"; Saragadam et al. 2023, CVPR)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def gabor(real: torch.Tensor, imag: torch.Tensor, omega: float, s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Complex Gabor wavelet ``ψ(z) = exp(i ω z) exp(-|s z|²)`` of ``z = real + i·imag``, as (Re, Im).

    ``exp(iωz - |sz|²) = exp(-ω·imag - s²(real² + imag²)) · (cos(ω·real) + i sin(ω·real))``.
    """
    # Clamped: far outside the window exp() underflows to subnormal floats, on which x86 arithmetic
    # is ~100x slower (the first WIRE version was 7x slower than SIREN). exp(-30) < 1e-13 lies far
    # below float32 resolution of the O(1) activations, so the output does not change.
    envelope = torch.exp((-omega * imag - (s * s) * (real * real + imag * imag)).clamp(min=-30.0))
    phase = omega * real
    return envelope * torch.cos(phase), envelope * torch.sin(phase)


def _uniform(*shape: int, bound: float) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


def _weight_bound(in_features: int, omega: float) -> float:
    # SIREN's hidden bound, sqrt(6/in)/ω: keeps ω|z| of order one in every layer. PyTorch's default
    # 1/sqrt(in) (the WIRE code's) makes |z| ~ 0.3, where exp(-s0²|z|²) ~ e^-9 closes the windows;
    # five layers deep nothing trains (WIRE itself uses three).
    return math.sqrt(6.0 / in_features) / omega


class ComplexLinear(nn.Module):
    """``z = x Wᵀ + b`` over complex numbers, stored as real/imaginary parameter pairs.

    Real tensors only, so safetensors, ``vmap`` and ONNX export work unchanged. Real and imaginary
    parts of ``W`` are ``U(±sqrt(6/in)/ω)``, those of ``b`` PyTorch's ``U(±1/sqrt(in))``.
    """

    def __init__(self, in_features: int, out_features: int, omega: float):
        super().__init__()
        bound = _weight_bound(in_features, omega)
        self.weight_real = _uniform(out_features, in_features, bound=bound)
        self.weight_imag = _uniform(out_features, in_features, bound=bound)
        bound = 1.0 / math.sqrt(in_features)
        self.bias_real = _uniform(out_features, bound=bound)
        self.bias_imag = _uniform(out_features, bound=bound)

    def forward(self, real: torch.Tensor, imag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_real = real @ self.weight_real.T - imag @ self.weight_imag.T + self.bias_real
        out_imag = real @ self.weight_imag.T + imag @ self.weight_real.T + self.bias_imag
        return out_real, out_imag


class ComplexToReal(nn.Module):
    """``Re(x Wᵀ) + b``: WIRE's complex output layer keeping only the real part.

    The imaginary part of that layer's bias never reaches the output, so it is not a parameter.
    """

    def __init__(self, in_features: int, out_features: int, omega: float):
        super().__init__()
        bound = _weight_bound(in_features, omega)
        self.weight_real = _uniform(out_features, in_features, bound=bound)
        self.weight_imag = _uniform(out_features, in_features, bound=bound)
        self.bias = _uniform(out_features, bound=1.0 / math.sqrt(in_features))

    def forward(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        return real @ self.weight_real.T - imag @ self.weight_imag.T + self.bias


class WIRE(nn.Module):
    """Wavelet implicit neural representation (kan-fewsound.txt §2, "WIRE").

    Every hidden layer applies the complex Gabor wavelet ``ψ(z) = e^{iωz} e^{-|sz|²}`` to its
    pre-activation ``z``; the first layer is real-valued (``z = t w + b``), the others complex, and
    the output is the real part of a final complex linear layer, as in the WIRE code. Complex
    numbers are explicit real/imaginary parameter pairs (see :class:`ComplexLinear`).

    Defaults: five hidden layers of 90 complex units (the fewsound paper gives WIRE the same layer
    sizes as SIREN/FINER; in real numbers that is twice SIREN's parameters, ``hidden=(64,) * 5``
    matches them, the WIRE code's ``/sqrt(2)`` rule). The paper gives no ``ω0, s0`` for audio, and
    WIRE's image setting (``ω = 20``, ``s = 10`` everywhere, PyTorch initialisation) learns nothing
    on a 32768-sample chunk: a first-layer atom oscillates at ``20 |w| / 2π ≈ 3`` cycles per unit
    of ``t`` while 1 kHz is 743. Three changes make it fit a 1.5 s speech-like clip (SI-SNR
    19.7 dB after 200 Adam steps at lr 1e-4, 4096 random samples per step; SIREN: 14.9 dB):

    * first layer ``ω_first = 2000`` (SIREN's audio ``ω0``, hypersound.md §4.4) and a wider window
      ``s_first = 3`` (``s_first = 1``: 20.7 dB, nearly a plain sinusoid; 10: 13.9 dB);
    * hidden layers keep WIRE's ``ω0 = 20``, ``s0 = 10``; with ``ω0 = 30`` or ``s0 = 5`` it fits
      nothing, as the envelope ``exp(-ω0 Im z - s0²|z|²)`` can then reach ``exp(ω0² / 4 s0²) > e²``;
    * hidden and output weights use SIREN's bound ``sqrt(6/in)/ω0`` instead of ``1/sqrt(in)``
      (without it nothing trains five layers deep).

    Like SIREN it wants a small learning rate (lr 3e-4 fitted worse than 1e-4). The first layer is
    real, so its large ``ω`` cannot blow the envelope up.
    """

    def __init__(
        self,
        hidden: Sequence[int] = (90,) * 5,
        omega_first: float = 2000.0,
        omega_0: float = 20.0,
        s_first: float = 3.0,
        s_0: float = 10.0,
        out_channels: int = 1,
    ):
        super().__init__()
        widths = [int(w) for w in hidden]
        self.omega_first, self.omega_0 = float(omega_first), float(omega_0)
        self.s_first, self.s_0 = float(s_first), float(s_0)
        self.first = nn.Linear(1, widths[0])
        self.layers = nn.ModuleList(ComplexLinear(a, b, omega_0) for a, b in zip(widths[:-1], widths[1:]))
        self.output = ComplexToReal(widths[-1], out_channels, omega_0)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        z = self.first(t)
        real, imag = gabor(z, torch.zeros_like(z), self.omega_first, self.s_first)
        for layer in self.layers:
            real, imag = gabor(*layer(real, imag), self.omega_0, self.s_0)
        return self.output(real, imag)
