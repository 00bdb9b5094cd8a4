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

Reading (:func:`read_header`, :func:`load`) trusts nothing in a file: every size is checked against
:mod:`hyperaudio.limits` before a network is built or a tensor read, and a damaged or hostile file
raises :class:`~hyperaudio.errors.HyaError` with one line. What a valid file holds:

* ``version`` a positive integer, not above :data:`VERSION`; ``config`` and ``info`` JSON objects
  (the config's sections tables); ``sample_rate`` within ``audio.check_rate``'s range;
  ``num_samples`` in 1..MAX_SAMPLES; ``channels`` in 1..MAX_CHANNELS; ``gain`` in (0, MAX_GAIN].
* ``chunks``: 1..MAX_CHUNKS ``[start, length]`` integer pairs, lengths in 1..MAX_CHUNK_SAMPLES,
  starts strictly increasing from 0, each at or before the end of the chunks before it (no gaps)
  and before ``num_samples``; together they reach ``num_samples`` and may run past it (an encoded
  short sound is padded to the model's clip length).
* ``params.<name>`` of shape ``[chunks x channels, *parameter shape]``, ``buffers.<name>`` of the
  buffer's shape, no NaN or infinite value (refused, naming the tensor). Floating tensors other
  than float32 (float16, bfloat16, float64, float8) are converted to the network's float32 with a
  one-line warning; integer and bool weights are refused (quantised weights have a layout of their
  own, version 2 below). A buffer the network keeps in a non-floating type
  must be stored in that type.

Version 2 files hold quantised weights instead (``hyperaudio compress`` / ``quantize``, issue #17):
``quant.values`` and ``quant.scales`` in place of ``params.*``, the ``quantization`` field, and a
``config`` that lists only what differs from :data:`hyperaudio.config.DEFAULTS` (a whole config is
about a kilobyte, an eighth of a 48 kb/s budget for 1.5 s), merged back over the defaults when
read. Buffers the network rebuilds identically (an RFF matrix from its seed) are left out. The
layout and its checks are in :mod:`hyperaudio.quantize`; loading one yields an ordinary float32
INR, so rendering, playback and ONNX export need nothing else.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import limits
from .audio import atomic_path, check_rate
from .errors import AudioError, ConfigError, HyaError

FORMAT = "hyperaudio.hya"
VERSION = 2  # the newest format this reader supports
PLAIN_VERSION = 1  # float weights: what readers before quantisation also read
QUANTIZED_VERSION = 2
NATIVE_DTYPE = "F32"  # safetensors' names: weights are stored as float32
CONVERTED_DTYPES = ("F16", "BF16", "F64", "F8_E4M3", "F8_E5M2")  # floating: read, converted, warned about


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


def save(inr: INR, path: str | os.PathLike, packed: tuple[dict, dict] | None = None) -> Path:
    """Write ``inr`` atomically; ``packed``: the ``(tensors, layout)`` of :func:`hyperaudio.quantize.pack`
    to store quantised weights instead of ``inr.params`` (a version 2 file)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors, metadata = _contents(inr, packed)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def to_bytes(inr: INR, packed: tuple[dict, dict] | None = None) -> bytes:
    """The bytes :func:`save` writes (so a caller can measure a file before writing it)."""
    from safetensors.torch import save as serialise

    tensors, metadata = _contents(inr, packed)
    return serialise(tensors, metadata=metadata)


def _contents(inr: INR, packed: tuple[dict, dict] | None) -> tuple[dict, dict]:
    if packed is None:
        tensors = {f"params.{n}": p.detach().cpu().contiguous() for n, p in inr.params.items()}
        tensors.update({f"buffers.{n}": b.detach().cpu().contiguous() for n, b in inr.module.named_buffers()})
        dumps = json.dumps
        config = inr.config
    else:
        from .quantize import config_delta, rebuilt_buffers

        tensors = dict(packed[0])
        same = rebuilt_buffers(inr.config, inr.module)
        tensors.update({f"buffers.{n}": b.detach().cpu().contiguous() for n, b in inr.module.named_buffers()
                        if n not in same})
        dumps = lambda value: json.dumps(value, separators=(",", ":"))  # noqa: E731  (every byte counts)
        config = config_delta(inr.config)
    metadata = {
        "format": FORMAT,
        "version": str(PLAIN_VERSION if packed is None else QUANTIZED_VERSION),
        "config": dumps(config),
        "sample_rate": repr(float(inr.sample_rate)),
        "num_samples": str(int(inr.num_samples)),
        "channels": str(int(inr.channels)),
        "chunks": dumps([list(map(int, c)) for c in inr.chunks]),
        "info": dumps(inr.info),
    }
    if packed is None or inr.gain != 1.0:
        metadata["gain"] = repr(float(inr.gain))
    if packed is not None:
        metadata["quantization"] = dumps(packed[1])
    return tensors, metadata


def read_safetensors(path: Path, what: str, error: type[Exception] = HyaError) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(metadata, tensors)`` of a safetensors file; a corrupt or truncated one raises ``error``
    saying it is not a valid ``what``. Shared by ``.hya`` files, hypernetworks and checkpoints."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises SafetensorError / OSError on bad headers and truncation
        raise error(f"{path}: not a valid {what} (corrupt or truncated: {exc})") from None


# -- reading the header ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Header:
    """What a ``.hya`` file claims, from its header alone: no tensor data read, no network built."""

    path: Path
    version: int
    config: dict
    sample_rate: float
    num_samples: int
    channels: int
    chunks: list[tuple[int, int]]
    info: dict
    gain: float
    tensors: dict[str, tuple[str, tuple[int, ...]]]  # name -> (safetensors dtype such as "F32", shape)
    quantization: dict | None = None  # version 2: the checked layout of hyperaudio.quantize

    @property
    def file_bytes(self) -> int:
        return self.path.stat().st_size

    @property
    def kbps(self) -> float:
        """The file's size over the sound's duration, in kb/s (1000 bits)."""
        return 8 * self.file_bytes / self.duration / 1000

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    @property
    def members(self) -> int:
        """Parameter sets stored: one per (chunk, channel)."""
        return len(self.chunks) * self.channels

    def parameters_per_member(self) -> int:
        """Parameters of one (chunk, channel), from the stored shapes."""
        if self.quantization is not None:
            floats = self.tensors.get("quant.float", ("F32", (0,)))[1][0]
            return (self.quantization["values"] + floats) // self.members
        return sum(math.prod(shape[1:]) for name, (_, shape) in self.tensors.items() if name.startswith("params."))


def read_header(path: str | os.PathLike) -> Header:
    """The checked metadata and tensor shapes of a ``.hya`` file (see the module docstring)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise HyaError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except Exception as exc:  # safetensors raises SafetensorError / OSError on bad headers and truncation
        raise HyaError(f"{path}: not a valid .hya file (corrupt or truncated: {exc})") from None
    if meta.get("format") != FORMAT:
        raise HyaError(f"{path}: not a .hya file (a safetensors file without hyperaudio metadata)")
    version = _integer(path, meta, "version", 1, sys.maxsize)
    if version > VERSION:
        raise HyaError(f"{path}: .hya format version {version} is newer than this hyperaudio supports ({VERSION})")
    num_samples = _integer(path, meta, "num_samples", 1, limits.MAX_SAMPLES)
    channels = _integer(path, meta, "channels", 1, limits.MAX_CHANNELS)
    quantized = "quantization" in meta
    if quantized != (version == QUANTIZED_VERSION):
        raise _damaged(path, f"version {version} with{'' if quantized else 'out'} a quantization field")
    config = _config(path, meta)
    if quantized:
        from .config import DEFAULTS, _merge

        try:
            config = _merge(DEFAULTS, config)  # a quantised file stores what differs from the defaults
        except Exception as exc:  # noqa: BLE001  (types _merge does not expect: checked again by validate)
            raise _damaged(path, f"config ({type(exc).__name__}: {exc})") from None
    header = Header(path, version, config, _rate(path, meta), num_samples, channels,
                    _chunks(path, meta, num_samples), _json(path, meta, "info", dict, limits.MAX_JSON_BYTES, "{}"),
                    _gain(path, meta), tensors)
    if quantized:
        from .quantize import check_layout

        layout = check_layout(path, _json(path, meta, "quantization", dict, limits.MAX_JSON_BYTES), tensors,
                              header.members)
        return Header(**{**header.__dict__, "quantization": layout})
    _check_weights(header)
    return header


def _damaged(path: Path, message: str) -> HyaError:
    return HyaError(f"{path}: damaged .hya metadata: {message}")


def _field(path: Path, meta: dict, key: str, default: str | None = None) -> str:
    if key in meta:
        return meta[key]
    if default is None:
        raise _damaged(path, f"no {key!r} field")
    return default


def _integer(path: Path, meta: dict, key: str, low: int, high: int) -> int:
    text = _field(path, meta, key)
    try:
        value = int(text)
    except ValueError:  # also a number too long to convert: Python refuses over 4300 digits
        raise _damaged(path, f"{key} {text[:40]!r} is not an integer") from None
    if not low <= value <= high:
        raise _damaged(path, f"{key} {value} is outside {low}..{high} (hyperaudio.limits)")
    return value


def _number(path: Path, meta: dict, key: str, default: str | None = None) -> float:
    text = _field(path, meta, key, default)
    try:
        return float(text)
    except ValueError:
        raise _damaged(path, f"{key} {text[:40]!r} is not a number") from None


def _rate(path: Path, meta: dict) -> float:
    try:
        return check_rate(_number(path, meta, "sample_rate"))
    except AudioError as exc:
        raise _damaged(path, f"sample_rate: {exc}") from None


def _gain(path: Path, meta: dict) -> float:
    gain = _number(path, meta, "gain", "1.0")  # files written before the field existed: 1.0
    if not 0 < gain <= limits.MAX_GAIN:  # also NaN
        raise _damaged(path, f"gain {gain:g} is outside (0, {limits.MAX_GAIN:g}] (limits.MAX_GAIN)")
    return gain


def _json(path: Path, meta: dict, key: str, kind: type, max_bytes: int, default: str | None = None):
    text = _field(path, meta, key, default)
    if len(text) > max_bytes:  # before parsing: a hostile header must not decide what json allocates
        raise _damaged(path, f"{key} is {len(text):,} characters long, more than {max_bytes:,} (hyperaudio.limits)")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise _damaged(path, f"{key} is not valid JSON") from None
    if not isinstance(value, kind):
        raise _damaged(path, f"{key} must be a JSON {'object' if kind is dict else 'list'}, got {type(value).__name__}")
    return value


def _config(path: Path, meta: dict) -> dict:
    from .config import check_tables

    config = _json(path, meta, "config", dict, limits.MAX_JSON_BYTES)
    try:
        check_tables(config)
    except ConfigError as exc:
        raise _damaged(path, f"config: {exc}") from None
    return config


def _chunks(path: Path, meta: dict, num_samples: int) -> list[tuple[int, int]]:
    raw = _json(path, meta, "chunks", list, limits.MAX_CHUNKS_JSON_BYTES)
    if not 1 <= len(raw) <= limits.MAX_CHUNKS:
        raise _damaged(path, f"{len(raw)} chunks (expected 1..{limits.MAX_CHUNKS}, limits.MAX_CHUNKS)")
    chunks, covered = [], 0
    for i, chunk in enumerate(raw):
        if not (isinstance(chunk, list) and len(chunk) == 2 and all(type(v) is int for v in chunk)):
            raise _damaged(path, f"chunk {i} is {json.dumps(chunk)[:40]}, not [start, length] integers")
        start, length = chunk
        if not 1 <= length <= limits.MAX_CHUNK_SAMPLES:
            raise _damaged(path, f"chunk {i} has length {length} (expected 1..{limits.MAX_CHUNK_SAMPLES}, "
                                 "limits.MAX_CHUNK_SAMPLES)")
        if i == 0 and start != 0:
            raise _damaged(path, f"the first chunk starts at {start}, not 0")
        if i and start <= chunks[-1][0]:
            raise _damaged(path, f"chunk {i} starts at {start}, not after chunk {i - 1} ({chunks[-1][0]})")
        if start > covered:
            raise _damaged(path, f"samples {covered}..{start - 1} are in no chunk")
        if start >= num_samples:
            raise _damaged(path, f"chunk {i} starts at {start}, past the sound's {num_samples} samples")
        chunks.append((start, length))
        covered = max(covered, start + length)
    if covered < num_samples:
        raise _damaged(path, f"the chunks end at sample {covered}, before the sound's end ({num_samples})")
    return chunks


def _check_weights(header: Header) -> None:
    """Every ``params.*`` tensor floating-point with one row per (chunk, channel)."""
    path, members = header.path, header.members
    params = {n: v for n, v in header.tensors.items() if n.startswith("params.")}
    if not params:
        raise HyaError(f"{path}: no weights (no params.* tensors)")
    for name, (dtype, shape) in params.items():
        if dtype != NATIVE_DTYPE and dtype not in CONVERTED_DTYPES:
            raise HyaError(f"{path}: tensor {name!r} holds {dtype} values; a .hya stores floating-point weights "
                           "(float32; float16, bfloat16 and float64 are converted)")
        if not shape or shape[0] != members:
            raise HyaError(f"{path}: tensor {name!r} has shape {list(shape)}, expected [{members}, ...] "
                           f"({len(header.chunks)} chunk(s) x {header.channels} channel(s))")


# -- loading --------------------------------------------------------------------------------------
def _print_warning(message: str) -> None:
    print(f"hyperaudio: warning: {message}", file=sys.stderr)


def load(path: str | os.PathLike, device: str | torch.device = "cpu",
         warn: Callable[[str], None] | None = None) -> INR:
    """The INR a ``.hya`` file holds, or a one-line HyaError (see the module docstring).

    ``warn`` receives the one-line notice that tensors were converted to float32 (default: printed
    to stderr as ``hyperaudio: warning: ...``)."""
    header = read_header(path)
    module = _build(header)
    params, buffers = _read_tensors(header, module, warn or _print_warning)
    with torch.no_grad():
        own_buffers = dict(module.named_buffers())
        for name, b in buffers.items():
            own_buffers[name].copy_(b)
    inr = INR(header.config, module, params, header.sample_rate, header.num_samples, header.channels,
              header.chunks, header.info, header.gain)
    return inr.to(device)


def _build(header: Header) -> nn.Module:
    """The file's target network, validated and within :mod:`hyperaudio.limits`."""
    from .config import build_target, validate
    from .plugins import get_registry

    path = header.path
    try:
        validate(header.config)
    except ConfigError as exc:
        name = header.config.get("target", {}).get("name")
        missing = isinstance(name, str) and name and name not in get_registry().names("target_networks")
        hint = " (is the plugin that provides it installed?)" if missing else ""
        raise HyaError(f"{path}: {exc}{hint}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # values of types validate does not expect
        raise _damaged(path, f"config ({type(exc).__name__}: {exc})") from None
    try:
        return build_target(header.config)
    except ConfigError as exc:
        raise HyaError(f"{path}: {exc}") from None


def _read_tensors(header: Header, module: nn.Module, warn) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(params, buffers)`` of the file, matched to ``module`` by shape before any data is read."""
    from safetensors import safe_open

    path = header.path
    own = dict(module.named_parameters())
    own_buffers = dict(module.named_buffers())
    shapes = {name: shape for name, (_, shape) in header.tensors.items()}
    if header.quantization is not None:  # the quantised weights' stand-ins, matched by unpack itself
        shapes.update({f"params.{n}": (header.members, *p.shape) for n, p in own.items()})
    problems = []
    for name in (n[len("params.") :] for n in shapes if n.startswith("params.")):
        if name not in own:
            problems.append(f"unexpected parameter {name!r}")
        elif shapes[f"params.{name}"] != (header.members, *own[name].shape):
            problems.append(f"parameter {name!r} has shape {list(shapes[f'params.{name}'])}, "
                            f"expected {[header.members, *own[name].shape]}")
    for name in (n[len("buffers.") :] for n in shapes if n.startswith("buffers.")):
        if name not in own_buffers or tuple(own_buffers[name].shape) != shapes[f"buffers.{name}"]:
            problems.append(f"buffer {name!r} does not match the target network")
    missing = sorted(set(own) - {n[len("params.") :] for n in shapes if n.startswith("params.")})
    if missing:
        problems.append(f"missing parameters {missing[:3]}")
    if problems:
        raise HyaError(f"{path}: weights do not match the config: " + "; ".join(problems[:3]))
    wanted = {f"params.{n}": p.dtype for n, p in own.items()} if header.quantization is None else {}
    wanted.update({f"buffers.{n}": b.dtype for n, b in own_buffers.items() if f"buffers.{n}" in shapes})
    converted: set[str] = set()
    tensors = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key, dtype in wanted.items():
                tensors[key] = _checked(path, key, f.get_tensor(key), dtype, converted)
            if header.quantization is not None:
                from .quantize import unpack

                floats = f.get_tensor("quant.float") if "quant.float" in header.tensors else None
                unpacked = unpack(path, header.quantization, f.get_tensor("quant.values"),
                                  f.get_tensor("quant.scales"), floats, {n: p.shape for n, p in own.items()},
                                  header.members)
                tensors.update({f"params.{n}": p for n, p in unpacked.items()})
    except HyaError:
        raise
    except Exception as exc:  # data that does not decode (truncated after the header, unknown dtype)
        raise HyaError(f"{path}: not a valid .hya file (corrupt or truncated: {exc})") from None
    if converted:
        warn(f"{path}: converted {', '.join(sorted(converted))} weights to the network's float32 "
             "(a .hya stores float32)")
    params = {k[len("params.") :]: v for k, v in tensors.items() if k.startswith("params.")}
    buffers = {k[len("buffers.") :]: v for k, v in tensors.items() if k.startswith("buffers.")}
    return params, buffers


def _checked(path: Path, key: str, t: torch.Tensor, dtype: torch.dtype, converted: set[str]) -> torch.Tensor:
    """``t`` in the network's ``dtype`` (a floating type converted, noted in ``converted``), finite."""
    if t.dtype != dtype:
        if not (t.is_floating_point() and dtype.is_floating_point):
            raise HyaError(f"{path}: tensor {key!r} holds {str(t.dtype).removeprefix('torch.')} values, "
                           f"the network keeps {str(dtype).removeprefix('torch.')}")
        converted.add(str(t.dtype).removeprefix("torch."))
        t = t.to(dtype)
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise HyaError(f"{path}: tensor {key!r} holds NaN or infinite values")
    return t
