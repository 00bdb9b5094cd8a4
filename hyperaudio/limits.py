"""Bounds on sizes that files and settings decide, checked before anything is allocated.

A ``.hya`` file's metadata, a preset or a ``--set`` override decides how large a network is, how
many chunks and samples a sound has, and so how much memory a command will take. Each bound below
is far above anything a real file or fit needs and far below what would exhaust a machine, so a
hostile or damaged value is refused in one line instead of growing the process until it crashes.

Conventions: counts are elements (not bytes) unless a name ends in ``_BYTES``; a bound is the
largest value accepted. Sample rates are bounded by ``hyperaudio.audio.check_rate`` (1-768 kHz).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError, HyperaudioError

# Built-in target networks have 33k-141k parameters; 2^25 (33.5M, 134 MB of float32 per chunk) leaves a
# plugin network 240 times that while keeping one parameter set far below any machine's memory.
MAX_PARAMETERS = 1 << 25
# Built-in networks have fewer than 30 modules and 40 tensors; these bounds stop a long list of layer
# widths (a 1 MiB config holds 500k) from making a constructor build that many layers, which the
# parameter count alone would let through when each layer is tiny.
MAX_MODULES = 10_000
MAX_TENSORS = 10_000
# fit holds a whole chunk's activations at once, so a chunk of 2^24 samples (6 min at 44.1 kHz) could
# never have been fitted; the bound keeps one chunk's coordinate grid and render indices under 150 MB.
MAX_CHUNK_SAMPLES = 1 << 24
# 2^33 samples is 50 hours at 48 kHz (12 at 192 kHz): longer than any sound fitted whole, and the
# largest count whose float64 positions and int64 indices still fit in ordinary address arithmetic.
MAX_SAMPLES = 1 << 33
# A fit's chunks step by about chunk_samples - overlap_samples (31744 by default); 2^20 chunks cover
# MAX_SAMPLES even at 8192-sample steps, and their JSON list parses in well under 200 MB.
MAX_CHUNKS = 1 << 20
# More than any speaker layout or ambisonic order in use (22.2 has 24 channels, 7th-order ambisonics 64).
MAX_CHANNELS = 64
# gain restores the peak of the audio a hypernetwork encoded; samples sit within +-1 by convention and
# even a float file exceeds that by far less than 60 dB. A larger factor is damage, and one like 1e30
# overflows float32 energies (sums of squares in metrics and limiters) to infinity.
MAX_GAIN = 1e3
# Rendering evaluates up to 65536 coordinates at once, so every feature a layer computes per coordinate
# costs 256 KB per block; the built-in networks' widest layer output is 512 (RFF), and 4096 (1 GB per
# block) leaves a plugin 8 times that while keeping a hostile width (an encoding_length of 1e6) out.
MAX_WIDTH = 4096
# A resolved config is about 2 KB and a fit's info a few hundred bytes; 1 MiB of JSON each bounds
# what parsing a hostile header can allocate.
MAX_JSON_BYTES = 1 << 20
# Quantised weights (hyperaudio.quantize) are one zstd frame that expands to one byte per weight;
# 2^28 (256M weights, 1 GiB once dequantised to float32) is eight MAX_PARAMETERS networks, and keeps a
# frame that claims more from deciding what the reader allocates.
MAX_QUANT_VALUES = 1 << 28
# A "[start, length], " entry takes at most 28 characters with numbers up to MAX_SAMPLES.
MAX_CHUNKS_JSON_BYTES = MAX_CHUNKS * 32


class TooLarge(HyperaudioError):
    """A size decided by a file or a setting is over its bound in this module."""


# -- counting a network while it is built ---------------------------------------------------------
_building = threading.local()  # this thread's running count, or None when not counting


def _count(kind: str, value) -> None:
    state = getattr(_building, "state", None)
    if state is None or value is None or id(value) in state["seen"]:
        return
    state["seen"].add(id(value))  # a tensor or module registered twice (tied weights) counts once
    if kind == "modules":
        state["modules"] += 1
        if state["modules"] > MAX_MODULES:
            raise TooLarge(f"more than {MAX_MODULES:,} modules (limits.MAX_MODULES)")
        return
    state["tensors"] += 1
    if state["tensors"] > MAX_TENSORS:
        raise TooLarge(f"more than {MAX_TENSORS:,} parameter and buffer tensors (limits.MAX_TENSORS)")
    state["elements"] += value.numel()
    if state["elements"] > MAX_PARAMETERS:
        raise TooLarge(f"more than {MAX_PARAMETERS:,} parameters and buffers (limits.MAX_PARAMETERS)")


@contextlib.contextmanager
def bounded_construction():
    """Refuse, with :class:`TooLarge`, a network whose constructor registers more than
    ``MAX_PARAMETERS`` parameter and buffer elements, ``MAX_TENSORS`` tensors or ``MAX_MODULES``
    modules in this thread.

    The check runs as each tensor is registered, before its constructor initialises (touches) it,
    so even a network that cannot be built on the meta device stops within the bound.
    """
    from torch.nn.modules import module as registry

    outer = getattr(_building, "state", None)
    _building.state = {"elements": 0, "tensors": 0, "modules": 0, "seen": set()}
    handles = [
        registry.register_module_parameter_registration_hook(lambda m, n, p: _count("elements", p)),
        registry.register_module_buffer_registration_hook(lambda m, n, b: _count("elements", b)),
        registry.register_module_module_registration_hook(lambda m, n, s: _count("modules", s)),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        _building.state = outer


def size_of(module: nn.Module) -> int:
    """Parameter and buffer elements of a built module (shared tensors once)."""
    return sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers())


def check_size(module: nn.Module) -> None:
    """Raise :class:`TooLarge` if a built ``module`` is over ``MAX_PARAMETERS`` or ``MAX_WIDTH``
    (it may hold tensors its constructor did not register as it went)."""
    if size_of(module) > MAX_PARAMETERS:
        raise TooLarge(f"{size_of(module):,} parameters and buffers, more than {MAX_PARAMETERS:,} "
                       "(limits.MAX_PARAMETERS)")
    check_width(module)


def widest_output(module: nn.Module) -> int:
    """The most values any submodule of ``module`` outputs for one coordinate, measured on the meta
    device (no data). Raises whatever the module raises on meta tensors."""
    from torch.func import functional_call

    meta = {n: torch.empty_like(t, device="meta") for n, t in [*module.named_parameters(), *module.named_buffers()]}
    widest = [0]

    def output(_module, _inputs, out) -> None:
        for y in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(y, torch.Tensor):
                widest[0] = max(widest[0], y[0].numel() if y.dim() else 1)

    hooks = [m.register_forward_hook(output) for m in module.modules()]
    try:
        with torch.no_grad():
            functional_call(module, meta, (torch.empty(1, 1, device="meta"),))
    finally:
        for hook in hooks:
            hook.remove()
    return widest[0]


def check_width(module: nn.Module) -> None:
    """Raise :class:`TooLarge` if a layer of ``module`` computes more than ``MAX_WIDTH`` values per
    coordinate; a module that does not run on the meta device passes unchecked."""
    try:
        width = widest_output(module)
    except Exception:  # noqa: BLE001  (meta unsupported: no measurement, no refusal)
        return
    if width > MAX_WIDTH:
        raise TooLarge(f"a layer computes {width:,} values per coordinate, more than {MAX_WIDTH:,} (limits.MAX_WIDTH)")


# -- memory a fit needs ---------------------------------------------------------------------------
def available_memory(device: torch.device) -> int | None:
    """Bytes free for a new allocation on ``device``: ``MemAvailable`` on the CPU (Linux), the free
    memory of a CUDA device; None where unknown."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        if device.type == "cpu":
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, RuntimeError):
        pass
    return None


def backward_bytes(module: nn.Module, batch: int, length: int) -> int:
    """Bytes one batched fitting step holds at least: what autograd saves for the backward pass of
    ``batch`` parameter sets over ``length`` coordinates, the gradient of the widest output, and
    the parameters with their gradients and two Adam moments.

    Measured on the meta device (no data) by running ``module`` once on a ``[length, 1]`` grid:
    tensors that depend on the parameters count ``batch`` times, those computed from the shared
    grid and buffers once (``vmap`` computes them once). A lower bound: the built-in networks'
    real peaks are 1.0-1.6 times it. Raises whatever the module raises on meta tensors.
    """
    from torch.func import functional_call

    meta = {n: torch.empty_like(p, device="meta").requires_grad_(True) for n, p in module.named_parameters()}
    meta.update({n: torch.empty_like(b, device="meta") for n, b in module.named_buffers()})
    saved: dict[int, int] = {}
    widest = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t if t._base is None else t._base
        if not (base.is_leaf and base.requires_grad):  # a parameter (or a view of one): counted below
            storage = t.untyped_storage()  # views of one activation share its storage: count it once
            saved[storage._cdata] = storage.nbytes() * (batch if t.requires_grad else 1)
        return t

    def output(_module, _inputs, out) -> None:
        for y in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(y, torch.Tensor) and y.requires_grad:
                widest[0] = max(widest[0], y.numel() * y.element_size() * batch)

    hooks = [m.register_forward_hook(output) for m in module.modules()]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            functional_call(module, meta, (torch.empty(length, 1, device="meta"),))
    finally:
        for hook in hooks:
            hook.remove()
    weights = 16 * batch * sum(p.numel() for p in module.parameters())  # float32 x (param, grad, 2 moments)
    return sum(saved.values()) + widest[0] + weights


def check_fit_memory(module: nn.Module, config: dict, channels: int, num_samples: int, device: torch.device) -> None:
    """Refuse, with a ConfigError naming the settings to lower, a fit whose every step needs more
    memory than ``device`` has free (:func:`backward_bytes`, a lower bound).

    Never blocks a fit it cannot judge: a module that does not run on the meta device, or a device
    whose free memory is unknown, passes unchecked.
    """
    from .fit import chunk_layout

    fc = config["fit"]
    chunks = chunk_layout(num_samples, int(fc["chunk_samples"]), int(fc["overlap_samples"]))
    length = chunks[0][1]
    batch = min(int(fc["chunk_batch"]), len(chunks) * channels)
    subset = int(fc["batch_samples"])
    steps_over = subset if 0 < subset < length else length
    free = available_memory(device)
    if free is None:
        return
    try:
        need = backward_bytes(module, batch, steps_over)
    except Exception:  # the module does not run on meta tensors: no estimate, no refusal
        return
    if need > free:
        raise ConfigError(
            f"fitting needs at least {need / 1e9:.1f} GB for each step ({batch} chunk(s) x {steps_over} samples "
            f"through this network) but {free / 1e9:.1f} GB are free on {device}: lower fit.chunk_batch or "
            f"fit.chunk_samples, or choose a smaller network")
