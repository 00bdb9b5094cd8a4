"""A hypernetwork: encoder -> (latent, conditioning) -> head -> strategy -> target-network parameters.

``θ_x = H(x)``, ``x̂(t) = T(t, θ_x)`` (hypersound.md §3, eq. 1). Any registered encoder, any
registered strategy and any registered target network combine: the target network is driven with
the generated batch of parameters through :func:`hyperaudio.functional.call_batched`.

A trained model is one safetensors file (``model.safetensors``) whose metadata holds the resolved
config; :func:`load_model` rebuilds the modules from the registry and loads the tensors (no pickle).
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import torch
from torch import nn

from ..audio import atomic_path
from ..config import build_target, validate
from ..errors import ConfigError, HyaError
from ..fit import time_grid
from ..functional import call_batched, heads
from ..hya import read_safetensors
from .head import HEAD_KINDS, Head
from .strategies import Strategy

FORMAT = "hyperaudio.hypernet"
VERSION = 1
# The presets' hypernetworks have 0.01-21 M parameters (fewsound-nerf the largest). Training keeps about
# 32 bytes per parameter (weight, gradient, two AdamW moments, and the rollback copy of weight and
# moments), so 2^26 (67 M) is 2.1 GB before any activation: three times the largest preset, and a
# head or encoder widened by --set to need many GB is refused before anything is allocated.
MAX_PARAMETERS = 1 << 26
TRAIN_BYTES_PER_PARAMETER = 32


class HyperNetwork(nn.Module):
    """``forward(wave [B, T]) -> {name: [B, *shape]}``; :meth:`reconstruct` renders them on the clip's grid."""

    def __init__(self, encoder: nn.Module, strategy: Strategy, target: nn.Module, num_samples: int,
                 hidden=(400, 768, 768, 768, 768, 400), head_kind: str = "dense", head_rank: int = 64,
                 head_chunk: int = 4096):
        super().__init__()
        self.encoder, self.strategy, self.target = encoder, strategy, target
        self.num_samples = int(num_samples)
        # The target network's own parameters are constants here: the strategy decides what is
        # generated and what is learned (shared); whatever it leaves out keeps the target's values.
        target.requires_grad_(False)
        was_training = encoder.training
        encoder.eval()
        with torch.no_grad():
            latent = encoder(torch.zeros(1, self.num_samples))
        encoder.train(was_training)
        self.latent_shape = tuple(latent.shape[1:])
        base, scale = strategy.head_init()
        self.head = Head(latent[0].numel() + strategy.condition_dim, base, scale, hidden, head_kind,
                         head_rank, head_chunk)

    def latent(self, wave: torch.Tensor) -> torch.Tensor:
        z = self.encoder(wave).flatten(1)
        cond = self.strategy.conditioning()
        if cond is not None:
            z = torch.cat([z, cond.unsqueeze(0).expand(z.shape[0], -1)], dim=1)
        return z

    def forward(self, wave: torch.Tensor, step: int | None = None) -> dict[str, torch.Tensor]:
        if wave.dim() != 2:
            raise ValueError(f"expected a waveform batch [B, T], got shape {list(wave.shape)}")
        generated = self.strategy.split(self.head(self.latent(wave)))
        return self.strategy.combine(generated, step)

    def render(self, params: dict[str, torch.Tensor], length: int | None = None) -> torch.Tensor:
        """Evaluate generated parameters on a clip's time grid: ``[B, H, length]`` (H = heads)."""
        t = time_grid(length or self.num_samples, next(iter(params.values())).device)
        return call_batched(self.target, params, t).transpose(1, 2)

    def reconstruct(self, wave: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """``[B, T]`` -> ``[B, H, T]``: every head of the target network approximates the input."""
        return self.render(self(wave, step), wave.shape[-1])

    def full_parameters(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every target parameter for each batch member (what a ``.hya`` file stores)."""
        batch = next(iter(params.values())).shape[0]
        out = {}
        for name, own in self.target.named_parameters():
            value = params.get(name)
            out[name] = value if value is not None else own.detach().unsqueeze(0).expand(batch, *own.shape)
        return out

    @property
    def heads(self) -> int:
        return heads(self.target)


def _registered(kind: str, name: str):
    from ..plugins import RegistryError, get_registry

    try:
        return get_registry().get(kind, name).obj
    except RegistryError as exc:
        raise ConfigError(str(exc)) from None


def _construct(label: str, cls, params: dict, **injected):
    """``cls(**params)``, with ``injected`` keywords passed only where the constructor takes them."""
    try:
        signature = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        signature = {}
    extra = {k: v for k, v in injected.items() if k in signature and k not in params}
    try:
        return cls(**params, **extra)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{label}: {exc}") from None


def validate_hypernet(config: dict, target: nn.Module) -> None:
    """Checks beyond :func:`hyperaudio.config.validate` that only matter when building a hypernetwork
    (``target``: the configured target network, whose support the strategy is asked about)."""
    hc = config["hypernet"]
    if hc["head_kind"] not in HEAD_KINDS:
        raise ConfigError(f"hypernet.head_kind must be one of {', '.join(HEAD_KINDS)}, got {hc['head_kind']!r}")
    for key in ("num_samples", "head_rank", "head_chunk"):
        if hc[key] < 1:
            raise ConfigError(f"hypernet.{key} must be at least 1")
    if hc["sample_rate"] <= 0:
        raise ConfigError("hypernet.sample_rate must be positive")
    if any(int(w) < 1 for w in hc["head_hidden"]):
        raise ConfigError("hypernet.head_hidden widths must be positive")
    strategy = _registered("strategies", hc["strategy"])
    supports = getattr(strategy, "supports", None)
    if supports is not None and not supports(target):
        raise ConfigError(f"strategy {hc['strategy']!r} does not support target network "
                          f"{config['target']['name']!r}")
    _registered("encoders", hc["encoder"])


def build(config: dict) -> HyperNetwork:
    """The hypernetwork a resolved config describes (mono target network)."""
    validate(config)
    target = build_target(config, out_channels=1)
    validate_hypernet(config, target)
    hc = config["hypernet"]
    encoder = _construct(f"encoder {hc['encoder']!r}", _registered("encoders", hc["encoder"]),
                         dict(hc["encoder_params"]), sample_rate=int(hc["sample_rate"]))
    strategy = _construct(f"strategy {hc['strategy']!r}", _registered("strategies", hc["strategy"]),
                          {"target": target, **hc["strategy_params"]})
    return HyperNetwork(encoder, strategy, target, int(hc["num_samples"]), hc["head_hidden"], hc["head_kind"],
                        int(hc["head_rank"]), int(hc["head_chunk"]))


def parameter_count(config: dict) -> int | None:
    """Parameters of the hypernetwork a resolved config describes, the encoder and head counted on
    the meta device (nothing of their size is allocated); None for an encoder that cannot run there."""
    validate(config)
    target = build_target(config, out_channels=1)  # small, and bounded by hyperaudio.limits
    validate_hypernet(config, target)
    hc = config["hypernet"]
    strategy = _construct(f"strategy {hc['strategy']!r}", _registered("strategies", hc["strategy"]),
                          {"target": target, **hc["strategy_params"]})
    base, scale = strategy.head_init()
    try:
        with torch.device("meta"):
            encoder = _construct(f"encoder {hc['encoder']!r}", _registered("encoders", hc["encoder"]),
                                 dict(hc["encoder_params"]), sample_rate=int(hc["sample_rate"]))
            latent = encoder(torch.zeros(1, int(hc["num_samples"])))
            head = Head(latent[0].numel() + strategy.condition_dim, base.to("meta"), scale.to("meta"),
                        hc["head_hidden"], hc["head_kind"], int(hc["head_rank"]), int(hc["head_chunk"]))
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001  (an encoder that needs real data: no count, no refusal)
        return None
    return sum(p.numel() for m in (encoder, strategy, target, head) for p in m.parameters())


def check_size(config: dict) -> None:
    """Refuse, in one line with the numbers, a hypernetwork over :data:`MAX_PARAMETERS`."""
    count = parameter_count(config)
    if count is not None and count > MAX_PARAMETERS:
        hc = config["hypernet"]
        raise ConfigError(
            f"the hypernetwork would have {count:,} parameters (about {count * TRAIN_BYTES_PER_PARAMETER / 1e9:.1f} GB "
            f"to train), more than {MAX_PARAMETERS:,}: lower hypernet.head_hidden {hc['head_hidden']} or the "
            f"encoder's size, or use head_kind 'lowrank' or 'chunked' (now {hc['head_kind']!r})")


def save_model(model: HyperNetwork, config: dict, path: str | os.PathLike, info: dict | None = None) -> Path:
    """Write ``model`` (all parameters and buffers) + config as one safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "version": str(VERSION), "config": json.dumps(config),
                "info": json.dumps(info or {})}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_model_file(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """``(config, tensors, info)`` of a saved hypernetwork, with clear errors for bad files."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise HyaError(f"{path}: no such hypernetwork file (expected a run folder or a model.safetensors)")
    meta, tensors = read_safetensors(path, "hypernetwork file")
    if meta.get("format") != FORMAT:
        raise HyaError(f"{path}: not a hyperaudio hypernetwork (format {meta.get('format')!r})")
    try:
        if int(meta["version"]) > VERSION:
            raise HyaError(f"{path}: written by a newer hyperaudio (format version {meta['version']})")
        config, info = json.loads(meta["config"]), json.loads(meta.get("info", "{}"))
    except (KeyError, ValueError, TypeError) as exc:
        raise HyaError(f"{path}: damaged metadata ({type(exc).__name__}: {exc})") from None
    return config, tensors, info


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[HyperNetwork, dict]:
    """A saved hypernetwork and its config. Missing plugins and shape mismatches are clear errors."""
    config, tensors, _ = read_model_file(path)
    model = build(config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise HyaError(f"{path}: tensors do not match the model its config describes ({first[0] if first else exc})"
                       ) from None
    return model.to(device).eval(), config
