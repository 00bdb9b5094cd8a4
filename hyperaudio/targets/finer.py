"""FINER target network (kan-fewsound.txt §2 "FINER"; Liu et al. 2024, CVPR)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..functional import in_direct_call
from .siren import SineLayer, scaled_linear, sin_, siren_output


# 2π split for Cody–Waite reduction: the high part has 8 significant bits (201/32), so k · TWO_PI_HI
# is exact in float32 for |k| < 2^16.
TWO_PI_HI = 6.28125
TWO_PI_LO = 2 * math.pi - TWO_PI_HI


def wrap_phase_(a: torch.Tensor) -> torch.Tensor:
    """``a`` minus its nearest multiple of 2π, in place: the same sine within 5e-7 for ``|a| < 4e5``.

    Why: past ``|a| ≈ 1e4`` (measured: fast at 9,000, slow at 12,000) torch's float32 ``sin``
    leaves its fast vectorised path. FINER's first layer reaches ``|a| ≈ 1.3e4``: a ``[2048, 90]``
    sine took 390 µs instead of 69, the reduction costs 75. SIREN's first layer (``|a| ≈ 4e3``) stays
    below.
    """
    k = a.detach().mul(1 / (2 * math.pi)).round_()  # a constant: the gradient of a stays 1
    return a.add_(k, alpha=-TWO_PI_HI).add_(k, alpha=-TWO_PI_LO)


class FinerLayer(SineLayer):
    """``y = sin(ω (|z| + 1) z)`` with ``z = x Wᵀ + b`` and SIREN initialisation of ``W``."""

    def __init__(self, in_features: int, out_features: int, omega: float, first: bool = False):
        super().__init__(in_features, out_features, omega, first)
        self.wrap_phase = first  # the first layer's large bias puts its phases at up to ~1e4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # With u = ω z: ω (|z| + 1) z = u + u |u| / ω, two passes over the activations instead of four.
        u = scaled_linear(x, self.linear.weight, self.linear.bias, self.omega)
        # The scale |z| + 1 is a constant for backprop, as in the FINER authors' code
        # (scale_req_grad=False): gradients then match a SIREN layer of frequency ω (|z| + 1).
        if in_direct_call():  # rendering: in place, one buffer fewer (-8 % for a 2048-sample block)
            phase = u.addcmul_(u, u.abs(), value=1 / self.omega)
        else:  # (addcmul_ has no vmap batching rule, and autograd needs u)
            phase = torch.addcmul(u, u, u.detach().abs(), value=1 / self.omega)
        # onnxruntime's sine has no slow path: in an exported graph the wrap only cost time (-10 %)
        wrap = self.wrap_phase and not torch.onnx.is_in_onnx_export()
        return sin_(wrap_phase_(phase) if wrap else phase)


class FINER(nn.Module):
    """MLP with variable-periodic activations (kan-fewsound.txt §2, "FINER").

    Hidden layers ``y = sin(ω0 (|z| + 1) z)``, ``z = W x + b``, one shared ``ω0``; linear output.
    Weights use SIREN's initialisation; the first layer's bias is drawn from ``U(-k, k)``
    (``k = first_bias_scale``), which sets how far into the fast-oscillating part of the activation
    each first-layer unit starts: the local frequency of unit ``j`` is ``ω0 (2|z_j| + 1) w_j``.

    Defaults: five hidden layers of 90 and ``ω0 = 30`` (the paper's, for every layer). The paper
    leaves ``k`` open; we use ``k = 20`` (common in public FINER code), the best of the values we
    tried against PyTorch's default ``1/sqrt(in) = 1``. With ``t`` in ``[-1, 1]`` over a 32768-sample
    chunk, ``k = 20`` starts first-layer frequencies up to ``30 · 43 / 2π ≈ 205`` cycles per unit of
    ``t`` (≈ 275 Hz); the FINER layers after it mix them into the kHz range. Fitting a 1.5 s
    speech-like clip (300 Adam steps, lr 1e-4, 8192 random samples per step) gave SI-SNR 17.2 dB
    with ``k = 20``, 7.0 dB with ``k = 5``, and nothing at all with ``k = 1`` (the units stay in the
    slow, nearly linear part of the activation). Like SIREN it wants a small learning rate
    (lr 5e-4: 8.1 dB).
    """

    def __init__(
        self,
        hidden: Sequence[int] = (90,) * 5,
        omega_0: float = 30.0,
        first_bias_scale: float = 20.0,
        out_channels: int = 1,
    ):
        super().__init__()
        widths = [1, *map(int, hidden)]
        self.layers = nn.Sequential(
            *(FinerLayer(widths[i], widths[i + 1], omega_0, first=i == 0) for i in range(len(widths) - 1))
        )
        with torch.no_grad():
            self.layers[0].linear.bias.uniform_(-first_bias_scale, first_bias_scale)
        self.output = siren_output(widths[-1], out_channels, omega_0)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.output(self.layers(t))
