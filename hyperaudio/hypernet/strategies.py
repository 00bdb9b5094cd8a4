"""Hypernetwork strategies: how generated weights become target-network parameters.

A strategy is built for one target network, ``cls(target, **params)``, and declares

* which parameters the head generates (``generated``: name -> shape) and how each starts
  (``head_init``: the starting value and the spread of its input-dependent part, §3.6);
* which parameters it learns itself, shared by every sound (``shared_parameter``);
* optionally a conditioning vector appended to the encoder's latent (``conditioning``);
* ``combine(generated, step)``: the batch ``{name: [B, *shape]}`` handed to the target network
  through :func:`hyperaudio.functional.call_batched`. Parameters it leaves out are the target's
  own (frozen) values.

Built-ins: ``standard``, ``shared``, ``additive``, ``multiplicative`` (hypersound.md §3.5,
Table 1), ``fewsound`` (kan-fewsound.txt §3) and ``film`` (conditional-inr-synthesis.txt).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..functional import generatable_parameters, modulation_parameters


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot contain dots


def spread(value: torch.Tensor) -> float:
    """The scale of a parameter's initial distribution: its std, or its magnitude if constant."""
    std = float(value.std()) if value.numel() > 1 else 0.0
    return std if std > 0 else max(float(value.abs().mean()), 1.0)


def layer_groups(target: nn.Module, names: list[str]) -> list[list[str]]:
    """``names`` grouped by the module that owns them (``mlp.0.weight`` and ``mlp.0.bias`` form one
    layer), in registration order: a target network's "layers" without knowing its class."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.rpartition(".")[0], []).append(name)
    return list(groups.values())


class Strategy(nn.Module):
    """Base class. Subclasses call :meth:`generate` and :meth:`share` in their constructor."""

    def __init__(self, target: nn.Module, init_scale: float = 0.1):
        super().__init__()
        if init_scale < 0:
            raise ValueError("init_scale must be >= 0")
        self.init_scale = float(init_scale)
        self.generated: dict[str, torch.Size] = {}
        self._head_init: dict[str, tuple[torch.Tensor, float]] = {}
        self.shared = nn.ParameterDict()
        self._initial = {n: p.detach().clone() for n, p in target.named_parameters()}

    @staticmethod
    def supports(target: nn.Module) -> bool:
        return True

    # -- declarations ----------------------------------------------------------------------------
    def generate(self, name: str, start: torch.Tensor, spread_: float) -> None:
        """The head generates ``name``, starting at ``start`` plus ``init_scale * spread_`` noise."""
        self.generated[name] = start.shape
        self._head_init[name] = (start.detach().clone(), self.init_scale * spread_)

    def share(self, name: str, value: torch.Tensor) -> None:
        self.shared[_key(name)] = nn.Parameter(value.detach().clone())

    def shared_parameter(self, name: str) -> nn.Parameter:
        return self.shared[_key(name)]

    def initial(self, name: str) -> torch.Tensor:
        """The target network's own initial value of ``name``."""
        return self._initial[name]

    # -- what the hypernetwork uses --------------------------------------------------------------
    def head_init(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat ``(base, scale)`` for :class:`~hyperaudio.hypernet.head.Head`, in ``generated`` order."""
        base = torch.cat([self._head_init[n][0].flatten().float() for n in self.generated])
        scale = torch.cat([torch.full((self._head_init[n][0].numel(),), self._head_init[n][1])
                           for n in self.generated])
        return base, scale

    @property
    def condition_dim(self) -> int:
        return 0

    def conditioning(self) -> torch.Tensor | None:
        """A vector ``[condition_dim]`` appended to every latent, or ``None``."""
        return None

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[B, P]`` head output -> ``{name: [B, *shape]}``."""
        out, i = {}, 0
        for name, shape in self.generated.items():
            n = shape.numel()
            out[name] = flat[:, i : i + n].reshape(flat.shape[0], *shape)
            i += n
        return out

    def expand_shared(self, batch: int) -> dict[str, torch.Tensor]:
        return {name: self.shared_parameter(name).unsqueeze(0).expand(batch, *self.shared_parameter(name).shape)
                for name in self.shared_names()}

    def shared_names(self) -> list[str]:
        return [k.replace("__", ".") for k in self.shared.keys()]

    def combine(self, generated: Mapping[str, torch.Tensor], step: int | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class Standard(Strategy):
    """HyperSound's standard variant (Table 1): every generatable parameter comes from the head."""

    def __init__(self, target: nn.Module, init_scale: float = 0.1):
        super().__init__(target, init_scale)
        for name in generatable_parameters(target):
            self.generate(name, self.initial(name), spread(self.initial(name)))

    def combine(self, generated, step=None):
        return dict(generated)


class Shared(Strategy):
    """HyperSound's shared variant (Table 1, Table 3): the first ``shared_layers`` layers are
    learned once for all sounds, the others generated. Sharing one layer works best (§4.5)."""

    def __init__(self, target: nn.Module, shared_layers: int = 1, init_scale: float = 0.1):
        super().__init__(target, init_scale)
        groups = layer_groups(target, generatable_parameters(target))
        if not 0 < shared_layers < len(groups):
            raise ValueError(f"shared_layers must be in [1, {len(groups) - 1}] for a target network "
                             f"with {len(groups)} layers, got {shared_layers}")
        for i, group in enumerate(groups):
            for name in group:
                if i < shared_layers:
                    self.share(name, self.initial(name))
                else:
                    self.generate(name, self.initial(name), spread(self.initial(name)))

    def combine(self, generated, step=None):
        batch = next(iter(generated.values())).shape[0]
        return {**self.expand_shared(batch), **generated}


class Additive(Strategy):
    """HyperSound's additive variant (Table 1): ``θ = θs + θh``, ``θs`` learned and shared."""

    neutral = 0.0

    def __init__(self, target: nn.Module, init_scale: float = 0.1):
        super().__init__(target, init_scale)
        for name in generatable_parameters(target):
            value = self.initial(name)
            self.share(name, value)
            # θh starts at the operation's neutral element, so θ starts at the target's own init.
            self.generate(name, torch.full_like(value, self.neutral), self._relative_spread(value))

    def _relative_spread(self, value: torch.Tensor) -> float:
        return spread(value)

    @staticmethod
    def apply(shared: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        return shared + generated

    def combine(self, generated, step=None):
        return {name: self.apply(self.shared_parameter(name), value) for name, value in generated.items()}


class Multiplicative(Additive):
    """HyperSound's multiplicative variant (Table 1): ``θ = θs ⊙ θh``, ``θs`` learned and shared."""

    neutral = 1.0

    def _relative_spread(self, value: torch.Tensor) -> float:
        return 1.0  # θh multiplies: its noise is relative to θs already

    @staticmethod
    def apply(shared: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        return shared * generated


class FewSound(Strategy):
    """FewSound (kan-fewsound.txt §3, eq. 1): universal weights ``θ`` updated per sound,
    ``θ' = θ + α Δθ`` with ``Δθ = H(E(x), G(θ))``.

    ``G`` (the universal-weight encoder) is a linear layer + ELU from the flattened universal
    weights to ``universal_dim`` features, appended to the sound's latent. ``α`` ramps linearly from
    0 to 1 over the first ``alpha_ramp_steps`` training steps (as HyperMAML's gradual switch from
    the universal weights to the generated update, in the FewSound code); it is 1 at inference.
    """

    def __init__(self, target: nn.Module, universal_dim: int = 64, alpha_ramp_steps: int = 500,
                 init_scale: float = 0.1):
        super().__init__(target, init_scale)
        if universal_dim < 1 or alpha_ramp_steps < 0:
            raise ValueError("universal_dim must be >= 1 and alpha_ramp_steps >= 0")
        names = generatable_parameters(target)
        for name in names:
            value = self.initial(name)
            self.share(name, value)
            self.generate(name, torch.zeros_like(value), spread(value))
        total = sum(self.initial(n).numel() for n in names)
        self.universal_encoder = nn.Sequential(nn.Linear(total, universal_dim), nn.ELU())
        self.alpha_ramp_steps = int(alpha_ramp_steps)

    @property
    def condition_dim(self) -> int:
        return self.universal_encoder[0].out_features

    def conditioning(self) -> torch.Tensor:
        flat = torch.cat([self.shared_parameter(n).flatten() for n in self.generated])
        return self.universal_encoder(flat)

    def alpha(self, step: int | None) -> float:
        if step is None or self.alpha_ramp_steps == 0:
            return 1.0
        return min(1.0, step / self.alpha_ramp_steps)

    def combine(self, generated, step=None):
        a = self.alpha(step)
        return {name: self.shared_parameter(name) + a * delta for name, delta in generated.items()}


class FiLM(Strategy):
    """PCINR (conditional-inr-synthesis.txt): the target network's weights are learned once and
    shared; the head produces only its FiLM modulations (``modulation_parameters``)."""

    @staticmethod
    def supports(target: nn.Module) -> bool:
        return bool(modulation_parameters(target))

    def __init__(self, target: nn.Module, init_scale: float = 0.1):
        super().__init__(target, init_scale)
        modulations = modulation_parameters(target)
        if not modulations:
            raise ValueError(f"{type(target).__name__} declares no modulation_parameters: the film strategy "
                             "needs a FiLM-modulated target network such as film-siren")
        for name in modulations:
            self.generate(name, self.initial(name), spread(self.initial(name)))
        for name in generatable_parameters(target):
            if name not in modulations:
                self.share(name, self.initial(name))

    def combine(self, generated, step=None):
        batch = next(iter(generated.values())).shape[0]
        return {**self.expand_shared(batch), **generated}


BUILTIN = {
    "standard": (Standard, "every generatable parameter generated by the hypernetwork", "hypersound.md §3.2"),
    "shared": (Shared, "first k layers learned and shared, the rest generated", "hypersound.md §3.5, Table 3"),
    "additive": (Additive, "theta = theta_shared + theta_generated", "hypersound.md §3.5, Table 1"),
    "multiplicative": (Multiplicative, "theta = theta_shared * theta_generated", "hypersound.md §3.5, Table 1"),
    "fewsound": (FewSound, "universal weights + generated update H(E(x), G(theta)) with alpha ramp",
                 "kan-fewsound.txt §3"),
    "film": (FiLM, "shared target weights; only FiLM modulations generated (PCINR)",
             "conditional-inr-synthesis.txt"),
}
