"""A 1-D multi-resolution grid INR: Instant-NGP's encoding, reduced to one dimension (time).

``levels`` feature grids cover ``t`` in ``[-1, 1]`` at resolutions growing geometrically from
``base_resolution`` to ``max_resolution`` cells. Each grid stores ``features`` learnable values per
vertex; a time ``t`` reads every level by linear interpolation between its two neighbouring
vertices, the per-level features are concatenated, and a small ReLU MLP maps them to amplitudes.
A level with more vertices than ``table_size`` is *hashed* into a table of that size (vertex ``i``
lives at ``(i * 2654435761) mod table_size``), as in Instant-NGP; ``table_size = 0`` keeps every
level dense. Coarse levels capture the envelope, fine ones the waveform detail, so the network
fits quickly with a large learning rate (1e-2).

Reference: T. Müller, A. Evans, C. Schied, A. Keller, "Instant Neural Graphics Primitives with a
Multiresolution Hash Encoding", SIGGRAPH 2022 (§3, eq. 3-4 for the resolutions).

It honours hyperaudio's target-network contract: ``forward(t [N, 1]) -> [N, out_channels]``,
point-wise, with every tensor a parameter (no buffers), so hypernetworks can generate the grids
and the MLP through ``hyperaudio.functional.call_batched``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

PRIME = 2654435761  # Instant-NGP's first hashing prime


def level_resolutions(levels: int, base_resolution: int, max_resolution: int) -> list[int]:
    """Cells per level: ``floor(base * b**l)`` with ``b`` chosen so the last level has ``max_resolution``."""
    if levels == 1:
        return [int(base_resolution)]
    growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / (levels - 1))
    return [int(math.floor(base_resolution * growth**level + 1e-6)) for level in range(levels)]


class GridINR(nn.Module):
    """Multi-resolution 1-D feature grids with linear interpolation, followed by a small MLP."""

    # Small hyperparameters for the conformance kit (hyperaudio.testing): three levels, one hashed.
    conformance_params = {"levels": 3, "features": 2, "base_resolution": 4, "max_resolution": 64,
                          "table_size": 32, "hidden": [16]}

    def __init__(
        self,
        levels: int = 12,
        features: int = 2,
        base_resolution: int = 16,
        max_resolution: int = 16384,
        table_size: int = 8192,
        hidden: Sequence[int] = (64, 64),
        out_channels: int = 1,
        init_scale: float = 1e-4,
    ):
        super().__init__()
        if levels < 1 or features < 1 or out_channels < 1:
            raise ValueError("levels, features and out_channels must be at least 1")
        if not 1 <= base_resolution <= max_resolution:
            raise ValueError("need 1 <= base_resolution <= max_resolution")
        if table_size < 0:
            raise ValueError("table_size must be >= 0 (0 = no hashing)")
        self.resolutions = level_resolutions(levels, base_resolution, max_resolution)
        self.hashed = [bool(table_size) and r + 1 > table_size for r in self.resolutions]
        self.grids = nn.ParameterList(
            nn.Parameter(torch.empty(table_size if h else r + 1, features).uniform_(-init_scale, init_scale))
            for r, h in zip(self.resolutions, self.hashed)
        )
        layers: list[nn.Module] = []
        width = levels * features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, out_channels))
        self.mlp = nn.Sequential(*layers)

    def encode(self, t: torch.Tensor) -> torch.Tensor:
        """``[N, 1]`` times in ``[-1, 1]`` -> ``[N, levels * features]`` interpolated grid features."""
        u = ((t[:, 0] + 1.0) * 0.5).clamp(0.0, 1.0)
        feats = []
        for grid, res, hashed in zip(self.grids, self.resolutions, self.hashed):
            x = u * res
            cell = torch.floor(x).clamp(max=res - 1)
            w = (x - cell).unsqueeze(-1)
            i0 = cell.long()
            i1 = i0 + 1
            if hashed:
                size = grid.shape[0]
                i0 = torch.remainder(i0 * PRIME, size)
                i1 = torch.remainder(i1 * PRIME, size)
            feats.append(grid[i0] * (1.0 - w) + grid[i1] * w)
        return torch.cat(feats, dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encode(t))

    def extra_repr(self) -> str:
        levels = ", ".join(f"{r}{'#' if h else ''}" for r, h in zip(self.resolutions, self.hashed))
        return f"resolutions=[{levels}] (# = hashed)"
