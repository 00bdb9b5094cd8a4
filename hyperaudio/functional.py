"""The target-network contract and its batched functional path.

A **target network** is an ordinary ``torch.nn.Module``:

* ``forward(t)`` takes time coordinates ``t`` of shape ``[N, 1]`` in ``[-1, 1]`` and returns
  amplitudes of shape ``[N, C * H]``: ``C`` output channels (1 = mono) times ``H`` heads
  (``H = module.heads``, default 1; Siamese SIREN has two heads that each approximate the signal).
* Optional attributes a module may define (plain modules need none of them):

  ``generatable_parameters``  names of parameters a hypernetwork may generate (default: all)
  ``modulation_parameters``   names of FiLM modulations (for the ``film`` strategy)
  ``heads``                   number of output heads (default 1)
  ``postprocess(y, sr)``      numpy ``[H, M]`` -> ``[M]`` applied per channel after rendering
                              (default: the first head)

Because the contract is that small, a third party's plain ``nn.Sequential(nn.Linear(1, 64), ...)``
works with every hypernetwork strategy: :func:`call_batched` drives any module with a batch of
parameters supplied from outside, ``{name: tensor[B, *shape]}`` -> ``[B, N, C * H]``, through
``torch.func.functional_call`` under ``vmap``. Parameters missing from the dict are taken from the
module itself and shared across the batch.

While the renderer calls a module directly (one parameter set held by the module itself, no
``vmap``, no autograd, no tracing), :func:`in_direct_call` is True: a module may take an
inference-only path then (KAN: a sparse lookup that ``vmap`` cannot batch).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Mapping

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap


_direct = threading.local()


@contextmanager
def direct_call():
    """Mark calls in this block (this thread) as direct: see :func:`in_direct_call`."""
    before = getattr(_direct, "on", False)
    _direct.on = True
    try:
        with torch.inference_mode():
            yield
    finally:
        _direct.on = before


def in_direct_call() -> bool:
    """True inside :func:`direct_call`: the module holds the parameters, the input is a plain
    ``[N, 1]`` tensor, and no gradient, ``vmap`` or tracing is involved."""
    return getattr(_direct, "on", False)


def parameter_shapes(module: nn.Module) -> dict[str, torch.Size]:
    """Every parameter of ``module`` with its shape (buffers excluded)."""
    return {name: p.shape for name, p in module.named_parameters()}


def generatable_parameters(module: nn.Module) -> list[str]:
    """Names of the parameters a hypernetwork may generate, in registration order."""
    names = list(dict(module.named_parameters()))
    declared = getattr(module, "generatable_parameters", None)
    if declared is None:
        return names
    declared = list(declared() if callable(declared) else declared)
    unknown = sorted(set(declared) - set(names))
    if unknown:
        raise ValueError(f"{type(module).__name__}.generatable_parameters names unknown parameters: {unknown}")
    return [n for n in names if n in set(declared)]


def modulation_parameters(module: nn.Module) -> list[str]:
    """Names of FiLM modulation parameters, or an empty list if the module declares none."""
    declared = getattr(module, "modulation_parameters", None)
    if declared is None:
        return []
    return list(declared() if callable(declared) else declared)


def heads(module: nn.Module) -> int:
    return int(getattr(module, "heads", 1))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def call_batched(module: nn.Module, params: Mapping[str, torch.Tensor], t: torch.Tensor) -> torch.Tensor:
    """Run ``module`` once per batch member with externally supplied parameters.

    ``params``: ``{name: tensor[B, *shape]}`` for any subset of the module's parameters.
    ``t``: ``[N, 1]`` (shared by the batch) or ``[B, N, 1]`` (one grid per member).
    Returns ``[B, N, C * H]``.
    """
    if not params:
        raise ValueError("call_batched needs at least one batched parameter")
    shapes = parameter_shapes(module)
    batch = None
    for name, value in params.items():
        if name not in shapes:
            raise KeyError(f"{type(module).__name__} has no parameter {name!r}")
        if tuple(value.shape[1:]) != tuple(shapes[name]):
            raise ValueError(
                f"parameter {name!r}: expected [B, {', '.join(map(str, shapes[name]))}], got {list(value.shape)}"
            )
        if batch is None:
            batch = value.shape[0]
        elif value.shape[0] != batch:
            raise ValueError("all batched parameters must share the batch size")
    t_dim = 0 if t.dim() == 3 else None
    if batch == 1:
        # The common single-sound case: skip vmap's batching-rule overhead.
        out = functional_call(module, {n: v[0] for n, v in params.items()}, (t[0] if t_dim == 0 else t,), strict=False)
        return out.unsqueeze(0)

    def one(p, tt):
        return functional_call(module, p, (tt,), strict=False)

    return vmap(one, in_dims=(0, t_dim), randomness="different")(dict(params), t)


def stacked_parameters(module: nn.Module, batch: int, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Copies of the module's own parameters, stacked ``batch`` times: ``{name: [batch, *shape]}``."""
    own = dict(module.named_parameters())
    names = list(own) if names is None else names
    return {n: own[n].detach().unsqueeze(0).repeat(batch, *([1] * own[n].dim())).clone() for n in names}


def fresh_parameters(module_factory, batch: int, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """``batch`` independently initialised parameter sets, each from a new module instance.

    Each instance draws its own initialisation (useful when fitting many chunks at once: every
    chunk starts from the target network's own initial distribution, not from a copy).
    """
    modules = [module_factory() for _ in range(batch)]
    names = list(dict(modules[0].named_parameters())) if names is None else names
    return {n: torch.stack([dict(m.named_parameters())[n].detach() for m in modules]).clone() for n in names}


def postprocess(module: nn.Module, y: np.ndarray, sr: float) -> np.ndarray:
    """Combine the ``H`` heads of one channel, ``[H, M]`` -> ``[M]``, as the module prescribes."""
    fn = getattr(module, "postprocess", None)
    if fn is not None:
        return np.asarray(fn(y, sr), dtype=np.float32)
    return np.asarray(y[0], dtype=np.float32)
