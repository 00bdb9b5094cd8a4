"""The fully connected part of the hypernetwork: latent -> flat target-network parameters.

HyperSound (hypersound.md §3.2): six dense layers with biases and ELU, sizes
400-768-768-768-768-400, the last of which feeds an output layer producing all generated
parameters at once. That dense output layer has ``400 x P`` weights (13.9 M for HyperSound's
34,741-parameter FMLP), so two cheaper output layers are offered (``head_kind``):

``dense``    ``W h``                                   ``H x P`` weights
``lowrank``  ``V (U h)``, rank ``r``                   ``r (H + P)``
``chunked``  per chunk ``j`` of ``c`` outputs:          ``(H + e) m + m c + (P / c) e``
             ``W2 ELU(W1 [h, e_j])``, learned chunk embeddings ``e_j`` (von Oswald et al. 2020)

Initialisation (hypersound.md §3.6): the output is ``base + scale ⊙ map(h)`` where ``base`` is a
learned vector that starts at the target network's own initial parameters and ``scale`` is a fixed
per-parameter factor (``init_scale`` x the spread of that parameter's initial distribution) set by
the strategy. ``map`` is initialised to unit output variance, so generated weights start as the
target's own initialisation plus a small input-dependent part: near-zero for SIREN (whose
frequencies must grow slowly, §3.6), a moderate perturbation for ReLU networks.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

HEAD_KINDS = ("dense", "lowrank", "chunked")
CHUNK_HIDDEN = 64  # width of the per-chunk MLP of the chunked output layer
CHUNK_EMBEDDING = 16


def _normal_(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
    return nn.init.normal_(weight, std=1.0 / math.sqrt(fan_in))


class ChunkedOutput(nn.Module):
    """``P`` outputs produced ``chunk`` at a time by one small MLP shared across chunks."""

    def __init__(self, in_features: int, out_features: int, chunk: int):
        super().__init__()
        self.out_features, self.chunk = out_features, chunk
        count = math.ceil(out_features / chunk)
        self.embeddings = nn.Parameter(torch.randn(count, CHUNK_EMBEDDING))
        self.inp = nn.Linear(in_features, CHUNK_HIDDEN)
        self.emb = nn.Linear(CHUNK_EMBEDDING, CHUNK_HIDDEN, bias=False)
        self.out = nn.Linear(CHUNK_HIDDEN, chunk, bias=False)
        _normal_(self.inp.weight, in_features + CHUNK_EMBEDDING)
        _normal_(self.emb.weight, in_features + CHUNK_EMBEDDING)
        nn.init.zeros_(self.inp.bias)
        # ELU of a unit-variance input has second moment ~0.6: compensate so outputs stay ~unit.
        _normal_(self.out.weight, int(0.6 * CHUNK_HIDDEN))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # The input and embedding halves of W1 [h, e_j] are applied separately: B + n rows, not B x n.
        hidden = nn.functional.elu(self.inp(h).unsqueeze(1) + self.emb(self.embeddings).unsqueeze(0))
        return self.out(hidden).flatten(1)[:, : self.out_features]


class Head(nn.Module):
    """ELU MLP ``in -> hidden... -> P`` with the output parametrised as ``base + scale ⊙ map(h)``."""

    def __init__(self, in_features: int, base: torch.Tensor, scale: torch.Tensor,
                 hidden: Sequence[int] = (400, 768, 768, 768, 768, 400), kind: str = "dense",
                 rank: int = 64, chunk: int = 4096):
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"head kind must be one of {', '.join(HEAD_KINDS)}, got {kind!r}")
        if base.shape != scale.shape or base.dim() != 1:
            raise ValueError("base and scale must be flat vectors of the same length")
        layers: list[nn.Module] = []
        width = in_features
        for w in map(int, hidden):
            layers += [nn.Linear(width, w), nn.ELU()]
            width = w
        self.mlp = nn.Sequential(*layers)
        p = base.numel()
        if kind == "dense":
            self.map = nn.Linear(width, p, bias=False)
            _normal_(self.map.weight, width)
        elif kind == "lowrank":
            self.map = nn.Sequential(nn.Linear(width, rank, bias=False), nn.Linear(rank, p, bias=False))
            _normal_(self.map[0].weight, width)
            _normal_(self.map[1].weight, rank)
        else:
            self.map = ChunkedOutput(width, p, chunk)
        self.kind = kind
        self.base = nn.Parameter(base.detach().clone().float())
        self.register_buffer("scale", scale.detach().clone().float())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.base + self.scale * self.map(self.mlp(z))

    def output_layer_parameters(self) -> int:
        return sum(p.numel() for p in self.map.parameters())
