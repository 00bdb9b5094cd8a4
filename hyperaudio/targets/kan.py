"""KAN target network (kan-fewsound.txt §2 "Audio INR", §4.3 and appendix A.1 ablations)."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..functional import in_direct_call
from .encoding import PositionalEncoding


@lru_cache(maxsize=None)
def uniform_bspline_pieces(order: int) -> tuple[tuple[float, ...], ...]:
    """``P[r][p]``: coefficient of ``u^p`` in basis ``c - r`` on knot interval ``c`` (``r, p <= k``).

    The Cox–de Boor recursion run once on polynomials of the local coordinate ``u`` with all knot
    gaps equal: ``B_(c-r),d = (u + r)/d · B_(c-r),d-1 + (d + 1 - r - u)/d · B_(c-r+1),d-1``.
    For ``k = 2``: ``u²/2``, ``(1 + 2u - 2u²)/2``, ``(1 - u)²/2``.
    """
    pieces = [[1.0]]
    for d in range(1, order + 1):
        nxt = []
        for r in range(d + 1):
            poly = [0.0] * (d + 1)
            for p, a in enumerate(pieces[r] if r < d else []):  # (u + r)/d · B_(c-r),d-1
                poly[p] += r / d * a
                poly[p + 1] += a / d
            for p, a in enumerate(pieces[r - 1] if r > 0 else []):  # (d + 1 - r - u)/d · B_(c-r+1),d-1
                poly[p] += (d + 1 - r) / d * a
                poly[p + 1] -= a / d
            nxt.append(poly)
        pieces = nxt
    return tuple(map(tuple, pieces))  # immutable: the result is cached and shared


def column_offsets(grid: torch.Tensor, order: int, n_in: int, device, dtype=torch.int64) -> torch.Tensor:
    """``[in]``: the column of knot interval 0 of each input in :func:`bspline_basis_flat`'s layout
    (``W = G + 2k + 1`` columns per input, the first ``k + 1`` of them margins)."""
    return order + 1 + grid.numel() * torch.arange(n_in, dtype=dtype, device=device)


def bspline_cells(x: torch.Tensor, grid: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where every input falls on a uniform knot vector: ``[N, in]`` -> (column, u), both ``[N, in]``.

    An input in knot interval ``c`` only touches bases ``c-k … c``, whose values are fixed
    polynomials of the local coordinate ``u = (x - t_c)/h`` (:func:`uniform_bspline_pieces`, row
    ``r`` for basis ``c - r``). ``column`` is where basis ``c`` sits in the layout of
    :func:`bspline_basis_flat`, with ``c`` clamped to ``[-1, G + 2k]``: the bases ``c-k … c`` off the
    grid then land in margin columns (the input's own, or the next input's), which the layer
    multiplies by zero. No masks and little integer work; inputs outside ``[t_0, t_last)`` get a zero
    spline, as the reference, and NaN inputs give NaN outputs (NaN · 0 is NaN).
    """
    n_bases = grid.numel() - 1 - order
    s = (x - grid[0]) / (grid[1] - grid[0])
    cell = torch.floor(s)  # piecewise constant: no gradient, like the reference's indicators
    return cell.long().clamp(-1, n_bases + order) + column_offsets(grid, order, x.shape[-1], x.device), s - cell


def bspline_basis_flat(x: torch.Tensor, grid: torch.Tensor, order: int) -> torch.Tensor:
    """B-spline bases of every input on a uniform knot vector, flat: ``[N, in]`` -> ``[N, in·W + k+1]``.

    ``W = G + 2k + 1``: input ``i`` owns columns ``i·W … i·W + W - 1``, ``k + 1`` margin columns and
    then its ``G + k`` bases; ``k + 1`` margin columns close the row. Basis ``j`` equals efficient-KAN's
    dense Cox–de Boor recursion over all ``G + 2k`` knot intervals. The ``k + 1`` non-zero bases of
    each input (:func:`bspline_cells`) are computed on ``[N, k+1, in]`` tensors and scattered into
    this dense layout, so the layer stays a matmul.
    """
    column, u = bspline_cells(x, grid, order)
    u = u.unsqueeze(-2)  # [N, 1, in]
    # Horner with coefficient columns [k+1, 1]: row r of the result is basis cell - r.
    coeffs = torch.tensor(uniform_bspline_pieces(order), dtype=x.dtype, device=x.device).T.unsqueeze(-1)
    values = coeffs[0].expand_as(u) if order == 0 else torch.addcmul(coeffs[order - 1], coeffs[order], u)
    for p in range(order - 2, -1, -1):
        values = torch.addcmul(coeffs[p], values, u)
    index = column.unsqueeze(-2) - torch.arange(order + 1, device=x.device).unsqueeze(-1)  # [N, k+1, in]
    # An expanded scalar: the out-of-place scatter materialises it once, and vmap can batch it.
    zeros = x.new_zeros(()).expand(*x.shape[:-1], x.shape[-1] * grid.numel() + order + 1)
    return zeros.scatter_add(-1, index.flatten(-2), values.flatten(-2))


class SplineTables(NamedTuple):
    """One parameter state of a layer, laid out for :func:`spline_lookup`."""

    origin: float  # t_0, the first knot
    step: float  # h, the knot spacing
    top: int  # the largest knot interval kept, G + 2k
    offset: torch.Tensor  # [in] int32: column of interval 0 of each input (bspline_basis_flat's layout)
    monomials: tuple[torch.Tensor, ...]  # A_p [in·W + k+1, out] for p = 0 … k


def spline_tables(grid: torch.Tensor, order: int, table: torch.Tensor) -> SplineTables:
    """Lay out ``table`` (``[in·W + k+1, out]``, bspline_basis_flat's rows) for :func:`spline_lookup`.

    On knot interval ``c`` the spline term is ``Σ_r table[column - r] B_(c-r)(u)`` with
    ``B_(c-r)(u) = Σ_p P[r][p] u^p`` (:func:`uniform_bspline_pieces`), so it equals
    ``Σ_p A_p[column] u^p`` with ``A_p[column] = Σ_r P[r][p] table[column - r]``: the basis values
    fold into the tables, and the weights left per input are just ``1, u, …, u^k``.
    """
    n_in = (table.shape[0] - order - 1) // grid.numel()
    shifted = [F.pad(table, (0, 0, r, 0))[: table.shape[0]] for r in range(order + 1)]
    pieces = uniform_bspline_pieces(order)
    monomials = tuple(
        sum(pieces[r][p] * shifted[r] for r in range(order + 1)).contiguous() for p in range(order + 1)
    )
    offset = column_offsets(grid, order, n_in, table.device, torch.int32)
    return SplineTables(grid[0].item(), (grid[1] - grid[0]).item(), grid.numel() - 1, offset, monomials)


def spline_lookup(x: torch.Tensor, tables: SplineTables) -> torch.Tensor:
    """``basis(x) @ table`` without the dense basis: ``[N, in]`` -> ``[N, out]`` (:func:`spline_tables`).

    One ``F.embedding_bag`` per power ``p`` sums the rows ``A_p[column]`` of the inputs' knot
    intervals weighted by ``u^p``: ``(k+1)·in·out`` multiply-adds per sample instead of
    ``in·W·out``. The intervals are :func:`bspline_cells`' (same arithmetic, same clamp: inputs off
    the grid land in zero margin rows, NaN gives NaN). No ``vmap`` batching rule exists for
    ``embedding_bag``, so this is for direct calls only.
    """
    s = (x - tables.origin) / tables.step
    cell = torch.floor(s)
    u = s.sub_(cell).view(-1)
    # int32 before the clamp: NaN and huge inputs convert to INT_MIN, which clamps to the margin
    column = cell.int().clamp_(-1, tables.top).add_(tables.offset).view(-1)
    bags = torch.arange(0, column.numel(), x.shape[-1], dtype=torch.int32, device=x.device)
    y, weight = None, None
    for a in tables.monomials:
        term = F.embedding_bag(column, a, bags, mode="sum", per_sample_weights=weight)
        y = term if y is None else y.add_(term)
        weight = u if weight is None else weight * u
    return y


def bspline_basis(x: torch.Tensor, grid: torch.Tensor, order: int) -> torch.Tensor:
    """The bases alone, ``[N, in]`` -> ``[N, in, G+k]`` (see :func:`bspline_basis_flat`)."""
    width = grid.numel()  # W = G + 2k + 1 columns per input, the first k + 1 of them margins
    flat = bspline_basis_flat(x, grid, order)[..., : x.shape[-1] * width]
    return flat.unflatten(-1, (x.shape[-1], width))[..., order + 1 :]


class KANLayer(nn.Module):
    """One efficient-KAN layer: ``y_o = Σ_i W_b[o, i] SiLU(x_i) + s[o, i] Σ_j c[o, i, j] B_j(x_i)``.

    ``W_b = base_weight [out, in]``, spline coefficients ``c = spline_weight [out, in, G+k]`` and
    the per-edge ``s = spline_scaler [out, in]`` (the paper's ``w_s``, "scale spline" enabled); no
    biases, so ``G + k + 2`` parameters per edge. Knots (buffer ``grid``): uniform on ``[-1, 1]``
    with ``G = grid_size`` intervals, extended by ``k = spline_order`` knots on each side.
    Initialisation as efficient-KAN: ``W_b`` and ``s`` Kaiming-uniform with ``a = √5``, ``c`` the
    least-squares spline through uniform noise of amplitude ``scale_noise / G`` at the grid points.
    """

    def __init__(self, in_features: int, out_features: int, grid_size: int = 10, spline_order: int = 2,
                 scale_noise: float = 0.1):
        super().__init__()
        self.spline_order = int(spline_order)
        h = 2.0 / grid_size
        knots = torch.arange(-spline_order, grid_size + spline_order + 1, dtype=torch.float64) * h - 1.0
        self.register_buffer("grid", knots.to(torch.float32))
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, grid_size + spline_order))
        self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters(scale_noise)

    @torch.no_grad()
    def reset_parameters(self, scale_noise: float) -> None:
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5))
        out_features, in_features, n_bases = self.spline_weight.shape
        order = self.spline_order
        knots = self.grid[order : self.grid.numel() - order]  # the G + 1 knots on [-1, 1]
        noise = (torch.rand(knots.numel(), in_features, out_features) - 0.5) * scale_noise / (knots.numel() - 1)
        A = bspline_basis(knots.unsqueeze(-1).expand(-1, in_features), self.grid, order).transpose(0, 1)
        # A: [in, G+1, G+k]
        coeff = torch.linalg.lstsq(A, noise.transpose(0, 1)).solution  # [in, G+k, out]
        self.spline_weight.copy_(coeff.permute(2, 0, 1))
        nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5))

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in·(G+2k+1) + k+1]``: the bases and zero-coefficient margins (:func:`bspline_basis_flat`)."""
        return bspline_basis_flat(x, self.grid, self.spline_order)

    def coefficients(self) -> torch.Tensor:
        """``[out, in·(G+2k+1) + k+1]``, the rows of :meth:`basis`: zero coefficients for the margins."""
        k = self.spline_order
        return F.pad(F.pad(self.spline_weight * self.spline_scaler.unsqueeze(-1), (k + 1, 0)).flatten(1), (0, k + 1))

    def lookup_tables(self) -> SplineTables:
        """:func:`spline_tables` of the current parameters, kept until one of them changes.

        The renderer holds one parameter state for many blocks, so the tables are built once per
        state: keyed on the tensors and their version counters, which every in-place write bumps
        (the renderer's ``copy_``, ``load_state_dict``, an optimiser step); ``.data`` writes bypass it.
        """
        sources = (self.spline_weight, self.spline_scaler, self.grid)
        try:
            versions = tuple(p._version for p in sources)
        except RuntimeError:  # inference tensors have no version counter: nothing to key on
            return spline_tables(self.grid, self.spline_order, self.coefficients().T)
        cached = getattr(self, "_lookup", None)
        if cached is None or cached[1] != versions or any(a is not b for a, b in zip(cached[0], sources)):
            tables = spline_tables(self.grid, self.spline_order, self.coefficients().T)
            cached = self._lookup = (sources, versions, tables)
        return cached[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(F.silu(x), self.base_weight)
        if in_direct_call():
            # Rendering: ~7k multiply-adds per sample instead of the dense matmul's ~36k. Only here:
            # embedding_bag has no vmap batching rule (a batched fitting step: 6x slower).
            return base.add_(spline_lookup(x, self.lookup_tables()))
        # F.linear rather than basis @ coeff.T: its weight gradient is grad.T @ basis, the fast layout
        return base + F.linear(self.basis(x), self.coefficients())


class KAN(nn.Module):
    """Kolmogorov–Arnold network INR (kan-fewsound.txt §2 "Audio INR"; Liu et al. 2024).

    ``f(t) = Φ_4 ∘ Φ_3 ∘ Φ_2 ∘ Φ_1(γ(t))`` where ``γ`` is the NeRF positional encoding and each
    ``Φ`` a :class:`KANLayer`, ``φ(x) = w_b SiLU(x) + w_s spline(x)`` per edge.

    Defaults are the paper's 33,768-parameter model (Table 1): ``encoding_length = 10`` (20
    features), layers ``[20 → 48 → 24 → 12 → 1]``, grid size ``G = 10``, spline order ``k = 2``,
    scale spline enabled: ``2412`` edges × ``(G + k + 2) = 14`` parameters. The B-spline bases are
    computed from the uniform grid in closed form (``k + 1`` non-zero per input) instead of a dense
    Cox–de Boor recursion over all knots: a 32768-sample forward + backward takes about 0.2 s
    instead of 0.8 s on a 2-core CPU (``bench/kan_speed.py``); the tests check both agree. Fitting
    then multiplies the dense ``[N, in·(G+2k+1)]`` basis: ~36k multiply-adds per sample where only
    ~7k touch non-zero bases, because only dense operations batch under ``vmap`` (torch's CSR sparse
    matmul, tried, was no faster). Rendering (:func:`~hyperaudio.functional.in_direct_call`) skips
    the dense basis: :func:`spline_lookup` sums just the coefficient rows each input touches.
    """

    def __init__(
        self,
        encoding_length: int = 10,
        hidden: Sequence[int] = (48, 24, 12),
        grid_size: int = 10,
        spline_order: int = 2,
        out_channels: int = 1,
    ):
        super().__init__()
        self.encoding = PositionalEncoding(encoding_length)
        widths = [self.encoding.out_features, *map(int, hidden), out_channels]
        self.layers = nn.Sequential(
            *(KANLayer(widths[i], widths[i + 1], grid_size, spline_order) for i in range(len(widths) - 1))
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.layers(self.encoding(t))
