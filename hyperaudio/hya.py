"""The ``.hya`` file: one fitted INR in a single safetensors file (never pickle).

Layout: a standard safetensors file whose header metadata holds

``format``   ``"hyperaudio.hya"``           ``version``  format version (an integer, as text)
``config``   the resolved config (JSON)     ``sample_rate``, ``num_samples``, ``channels``
``chunks``   JSON list of ``[start, length]`` in native samples
``gain``     (optional, default 1.0) factor applied to the network's output when rendering: a
             hypernetwork encodes peak-normalised audio and records the original level here

and whose tensors are ``params.<name>`` of shape ``[K, *shape]`` (K = chunks x channels, index
``chunk * channels + channel``) plus ``buffers.<name>`` (the target network's fixed buffers, e.g.
the RFF matrix, shared by all chunks). Any safetensors reader can open it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .audio import atomic_path
from .errors import ConfigError, HyaError

FORMAT = "hyperaudio.hya"
VERSION = 1


@dataclass
class INR:
    """A fitted INR: a target network, one parameter set per (chunk, channel), and its layout."""

    config: dict
    module: nn.Module
    params: dict[str, torch.Tensor]
    sample_rate: float
    num_samples: int
    channels: int
    chunks: list[tuple[int, int]]
    info: dict = field(default_factory=dict)  # free-form: metrics, fit time, steps...
    gain: float = 1.0  # output scale applied wherever the INR is evaluated (render, playback, ONNX)

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    def chunk_params(self, k: int) -> dict[str, torch.Tensor]:
        """Parameters of chunk ``k`` for all channels: ``{name: [channels, *shape]}``."""
        c = self.channels
        return {n: p[k * c : (k + 1) * c] for n, p in self.params.items()}

    def to(self, device) -> "INR":
        self.module.to(device)
        self.params = {n: p.to(device) for n, p in self.params.items()}
        return self


def save(inr: INR, path: str | os.PathLike) -> Path:
    from safetensors.torch import save_file

    tensors = {f"params.{n}": p.detach().cpu().contiguous() for n, p in inr.params.items()}
    tensors.update({f"buffers.{n}": b.detach().cpu().contiguous() for n, b in inr.module.named_buffers()})
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "config": json.dumps(inr.config),
        "sample_rate": repr(float(inr.sample_rate)),
        "num_samples": str(int(inr.num_samples)),
        "channels": str(int(inr.channels)),
        "chunks": json.dumps([list(map(int, c)) for c in inr.chunks]),
        "info": json.dumps(inr.info),
        "gain": repr(float(inr.gain)),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_safetensors(path: Path, what: str, error: type[Exception] = HyaError) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(metadata, tensors)`` of a safetensors file; a corrupt or truncated one raises ``error``
    saying it is not a valid ``what``. Shared by ``.hya`` files, hypernetworks and checkpoints."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises SafetensorError / OSError on bad headers and truncation
        raise error(f"{path}: not a valid {what} (corrupt or truncated: {exc})") from None


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> INR:
    from .config import build_target, validate

    path = Path(path)
    if not path.is_file():
        raise HyaError(f"{path}: no such file")
    meta, tensors = read_safetensors(path, ".hya file")
    if meta.get("format") != FORMAT:
        raise HyaError(f"{path}: not a .hya file (a safetensors file without hyperaudio metadata)")
    try:
        version = int(meta["version"])
        config = json.loads(meta["config"])
        sample_rate = float(meta["sample_rate"])
        num_samples = int(meta["num_samples"])
        channels = int(meta["channels"])
        chunks = [tuple(int(v) for v in c) for c in json.loads(meta["chunks"])]
        info = json.loads(meta.get("info", "{}"))
        gain = float(meta.get("gain", "1.0"))  # files written before the field existed: 1.0
        if not math.isfinite(gain):
            raise ValueError(f"gain {gain} is not finite")
    except (KeyError, ValueError, TypeError) as exc:
        raise HyaError(f"{path}: damaged .hya metadata ({type(exc).__name__}: {exc})") from None
    if version > VERSION:
        raise HyaError(f"{path}: .hya format version {version} is newer than this hyperaudio supports ({VERSION})")
    try:
        validate(config)
        module = build_target(config)
    except ConfigError as exc:
        raise HyaError(f"{path}: {exc} (is the plugin that provides it installed?)") from None
    params = {k[len("params.") :]: v for k, v in tensors.items() if k.startswith("params.")}
    buffers = {k[len("buffers.") :]: v for k, v in tensors.items() if k.startswith("buffers.")}
    own = dict(module.named_parameters())
    own_buffers = dict(module.named_buffers())
    k_total = len(chunks) * channels
    problems = []
    for name, p in params.items():
        if name not in own:
            problems.append(f"unexpected parameter {name!r}")
        elif tuple(p.shape) != (k_total, *own[name].shape):
            problems.append(f"parameter {name!r} has shape {list(p.shape)}, expected {[k_total, *own[name].shape]}")
    for name, b in buffers.items():
        if name not in own_buffers or own_buffers[name].shape != b.shape:
            problems.append(f"buffer {name!r} does not match the target network")
    missing = sorted(set(own) - set(params))
    if missing:
        problems.append(f"missing parameters {missing[:3]}")
    if problems:
        raise HyaError(f"{path}: weights do not match the config: " + "; ".join(problems[:3]))
    with torch.no_grad():
        for name, b in buffers.items():
            own_buffers[name].copy_(b)
    inr = INR(config, module, params, sample_rate, num_samples, channels, chunks, info, gain)
    return inr.to(device)
