"""Weight quantisation of a fitted INR and its storage in a ``.hya`` (issue #17).

Per-output-row symmetric quantisation (siamese-siren.txt §3; the per-channel scheme of
Krishnamoorthi 2018): each row of a weight (``W[k, o, :]`` of member ``k``) gets its own scale
``s = max|row| / (2^(b-1) - 1)`` and stores ``round(w / s)``; a bias or any 1-D tensor is one row.
Scales are float16 (the value stored is the one used to round, so a round trip is exact).
A few small tensors stay float32: a SIREN's first layer multiplies its weights and bias by
``ω0`` (2000), so a rounding step there is radians of phase (measured: its bias alone at int8 took
a fitted SIREN from 3.8 to -33 dB, and even at 16 bits cost it 5 dB); :func:`sensitive` finds them
by measurement.
Below 8 bits a short quantisation-aware fine-tune with the straight-through estimator recovers
most of the loss (:func:`fake_quantize`, used by :mod:`hyperaudio.compress`).

Storage (``.hya`` version 2, :func:`hyperaudio.hya.save` with ``packed=``): two tensors instead of
``params.*``:

``quant.values``  U8: one zstandard frame holding every integer as one int8 byte, the quantised
                  parameters in the network's registration order, each ``[members, *shape]`` row-major
``quant.scales``  F16 ``[total rows]``: their scales in the same order
``quant.float``   F32: the float tensors, in the same order (absent when there are none)

and the metadata field ``quantization`` = ``{"bits": b, "codec": "zstd", "values": n, "rows": r, "float": [i, ...]}``
(``float``: indices, in registration order, of the tensors kept in float32).
The reader (:func:`check_layout` on the header, :func:`unpack` once the network is built) trusts
nothing: ``bits`` in 2..8, counts bounded by :data:`hyperaudio.limits.MAX_QUANT_VALUES` and equal
to what the network needs, the frame decompressed to exactly that many bytes (never more, whatever
the frame claims), every integer within ``±(2^(b-1) - 1)``, every scale finite and positive.
"""

from __future__ import annotations

import io
import math

import torch

from . import limits
from .errors import HyaError

CODEC = "zstd"
BITS = range(2, 9)
ZSTD_LEVEL = 22  # the strongest; a few kB of weights compress in milliseconds at any level
FP16_MAX = 65504.0
FP16_TINY = 2.0**-24  # the smallest positive float16 (subnormal)


def qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def rows_of(shape: tuple[int, ...] | torch.Size) -> int:
    """Scale rows of one member's parameter: its first dimension (output rows), 1 for a 1-D or scalar one."""
    return int(shape[0]) if len(shape) >= 2 else 1


def _as_rows(w: torch.Tensor) -> torch.Tensor:
    """``[K, *shape]`` -> ``[K, rows, cols]``."""
    k, shape = w.shape[0], tuple(w.shape[1:])
    return w.reshape(k, rows_of(shape), -1)


def scales(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-row scales ``[K, rows]`` of ``w`` ``[K, *shape]``, rounded to float16 (held as float32)."""
    peak = _as_rows(w.detach()).abs().amax(-1)
    s = torch.where(peak > 0, peak / qmax(bits), torch.ones_like(peak))  # an all-zero row: any scale
    return s.clamp(FP16_TINY, FP16_MAX).to(torch.float16).to(torch.float32)


def quantize(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(integers int8 [K, *shape], scales float32 [K, rows])``."""
    s = scales(w, bits)
    q = torch.round(_as_rows(w.detach().float()) / s.unsqueeze(-1)).clamp(-qmax(bits), qmax(bits))
    return q.to(torch.int8).reshape(w.shape), s


def dequantize(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return (_as_rows(q).float() * s.unsqueeze(-1)).reshape(q.shape)


def sensitive(module: torch.nn.Module, params: dict[str, torch.Tensor], bits: int, t: torch.Tensor,
              floor_db: float = 40.0, share: float = 0.05) -> set[str]:
    """Names of the tensors to keep in float32: each one that, quantised to ``bits`` on its own,
    takes the network's output below ``floor_db`` SI-SNR against its float output, while the chosen
    ones hold at most ``share`` of the weights (the most harmful first). Measured on ``t``."""
    from .fit import si_snr
    from .functional import call_batched

    with torch.no_grad():
        ref = call_batched(module, params, t).permute(0, 2, 1).reshape(-1, t.shape[0])
        harm = {}
        for name, p in params.items():
            trial = {**params, name: dequantize(*quantize(p, bits))}
            out = call_batched(module, trial, t).permute(0, 2, 1).reshape(-1, t.shape[0])
            harm[name] = float(si_snr(out, ref).mean())
    total, allowed, chosen = sum(p.numel() for p in params.values()), 0, set()
    for name in sorted(harm, key=harm.get):
        if harm[name] >= floor_db:
            break
        if allowed + params[name].numel() <= share * total:
            chosen.add(name)
            allowed += params[name].numel()
    return chosen


def fake_quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` rounded to its quantised value in the forward pass, identity in the backward pass
    (straight-through estimator, Bengio et al. 2013): quantisation-aware fine-tuning."""
    s = scales(w, bits).unsqueeze(-1)
    r = _as_rows(w)
    q = torch.round(r / s).clamp(-qmax(bits), qmax(bits)) * s
    return (r + (q - r).detach()).reshape(w.shape)


def round_trip(params: dict[str, torch.Tensor], bits: int, kept=()) -> dict[str, torch.Tensor]:
    """The parameters as a reader of the quantised file gets them (``kept``: names left in float32)."""
    return {n: p.detach().float().clone() if n in kept else dequantize(*quantize(p, bits)) for n, p in params.items()}


# -- what a compressed file leaves out ----------------------------------------------------------------
def config_delta(config: dict, defaults: dict | None = None) -> dict:
    """What ``config`` sets differently from the defaults (``target`` always whole): merged back over
    :data:`hyperaudio.config.DEFAULTS` by the reader."""
    from .config import DEFAULTS

    defaults = DEFAULTS if defaults is None else defaults
    out = {}
    for key, value in config.items():
        base = defaults.get(key)
        if key == "target":
            out[key] = value
        elif isinstance(value, dict) and isinstance(base, dict) and key != "params":
            sub = config_delta(value, base)
            if sub:
                out[key] = sub
        elif key not in defaults or value != base:
            out[key] = value
    return out


def rebuilt_buffers(config: dict, module: torch.nn.Module) -> set[str]:
    """Names of ``module``'s buffers that a fresh ``build_target(config)`` reproduces exactly."""
    from .config import build_target

    fresh = dict(build_target(config).named_buffers())
    return {n for n, b in module.named_buffers()
            if n in fresh and fresh[n].shape == b.shape and fresh[n].dtype == b.dtype and torch.equal(fresh[n], b.cpu())}


# -- storage --------------------------------------------------------------------------------------
def pack(params: dict[str, torch.Tensor], order: list[str], bits: int,
         kept=()) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, layout)`` to store: ``quant.values`` (zstd frame), ``quant.scales``, ``quant.float``
    and the ``quantization`` metadata. ``order``: the network's parameter names in registration
    order; ``kept``: names stored in float32."""
    import zstandard

    if bits not in BITS:
        raise ValueError(f"bits must be in {BITS.start}..{BITS.stop - 1}, got {bits}")
    ints, rows, floats = [torch.zeros(0, dtype=torch.int8)], [torch.zeros(0)], []
    for name in order:
        if name in kept:
            floats.append(params[name].detach().float().reshape(-1))
            continue
        q, s = quantize(params[name], bits)
        ints.append(q.reshape(-1))
        rows.append(s.reshape(-1))
    raw = torch.cat(ints).numpy().tobytes()
    frame = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False).compress(raw)
    tensors = {"quant.values": torch.frombuffer(bytearray(frame), dtype=torch.uint8),
               "quant.scales": torch.cat(rows).to(torch.float16)}
    if floats:
        tensors["quant.float"] = torch.cat(floats).contiguous()
    layout = {"bits": bits, "codec": CODEC, "values": len(raw), "rows": int(tensors["quant.scales"].numel()),
              "float": [i for i, name in enumerate(order) if name in kept]}
    return tensors, layout


def _bad(path, message: str) -> HyaError:
    return HyaError(f"{path}: damaged quantised weights: {message}")


def check_layout(path, layout, tensors: dict[str, tuple[str, tuple[int, ...]]], members: int) -> dict:
    """The ``quantization`` field and the two tensors' dtypes and shapes, from the header alone."""
    if not isinstance(layout, dict):
        raise _bad(path, "the quantization field must be a JSON object")
    if layout.get("codec") != CODEC:
        raise _bad(path, f"codec {str(layout.get('codec'))[:40]!r} is not {CODEC!r}")
    for key, low, high in (("bits", BITS.start, BITS.stop - 1), ("values", 0, limits.MAX_QUANT_VALUES),
                           ("rows", 0, limits.MAX_QUANT_VALUES)):
        value = layout.get(key)
        if type(value) is not int or not low <= value <= high:
            raise _bad(path, f"{key} {str(value)[:40]} is outside {low}..{high} (hyperaudio.limits)")
    kept = layout.get("float", [])
    if not (isinstance(kept, list) and len(kept) <= limits.MAX_TENSORS and all(type(i) is int for i in kept)
            and kept == sorted(set(kept)) and (not kept or 0 <= kept[0] and kept[-1] < limits.MAX_TENSORS)):
        raise _bad(path, "float must be a list of increasing tensor indices")
    if layout["values"] % members or layout["rows"] % members:
        raise _bad(path, f"{layout['values']} values / {layout['rows']} rows do not split into {members} members")
    if any(name.startswith("params.") for name in tensors):
        raise _bad(path, "params.* tensors beside quantised ones")
    want = {"quant.values": ("U8", None), "quant.scales": ("F16", (layout["rows"],))}
    if kept:
        want["quant.float"] = ("F32", None)
    elif "quant.float" in tensors:
        raise _bad(path, "a quant.float tensor, but no float tensors in the layout")
    for name, (dtype, shape) in want.items():
        if name not in tensors:
            raise _bad(path, f"no {name} tensor")
        got_dtype, got_shape = tensors[name]
        if got_dtype != dtype or len(got_shape) != 1 or (shape is not None and got_shape != shape):
            raise _bad(path, f"{name} is {got_dtype} {list(got_shape)}, expected {dtype} "
                             f"{list(shape) if shape else '[bytes]'}")
    # zstd never grows data by more than a small fraction: a longer frame is not one we wrote.
    if tensors["quant.values"][1][0] > layout["values"] + layout["values"] // 64 + 1024:
        raise _bad(path, f"quant.values holds {tensors['quant.values'][1][0]:,} bytes for {layout['values']:,} values")
    return layout


def unpack(path, layout: dict, frame: torch.Tensor, scale_rows: torch.Tensor, floats: torch.Tensor | None,
           shapes: dict[str, torch.Size], members: int) -> dict[str, torch.Tensor]:
    """The float32 parameters ``{name: [members, *shape]}`` of a checked layout, for a network whose
    parameters (in registration order) have ``shapes``."""
    import zstandard

    kept = set(layout.get("float", []))
    if kept and max(kept) >= len(shapes):
        raise _bad(path, f"float tensor {max(kept)} of a network with {len(shapes)} parameters")
    quantised = [s for i, s in enumerate(shapes.values()) if i not in kept]
    values = members * sum(math.prod(s) for s in quantised)
    rows = members * sum(rows_of(s) for s in quantised)
    n_float = members * sum(math.prod(s) for i, s in enumerate(shapes.values()) if i in kept)
    if (values, rows, n_float) != (layout["values"], layout["rows"], 0 if floats is None else floats.numel()):
        raise _bad(path, f"{layout['values']:,} values, {layout['rows']:,} rows and "
                         f"{0 if floats is None else floats.numel():,} floats stored, the network needs "
                         f"{values:,}, {rows:,} and {n_float:,}")
    if floats is not None and not bool(torch.isfinite(floats).all()):
        raise _bad(path, "quant.float holds NaN or infinite values")
    nbytes = values
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(frame.numpy().tobytes()))
        raw = b""
        while len(raw) <= nbytes:  # never more than one byte past what is needed, whatever the frame says
            piece = reader.read(nbytes + 1 - len(raw))
            if not piece:
                break
            raw += piece
    except zstandard.ZstdError as exc:
        raise _bad(path, f"quant.values is not a zstd frame ({exc})") from None
    if len(raw) != nbytes:
        raise _bad(path, f"quant.values decompresses to {'more' if len(raw) > nbytes else len(raw)} bytes, "
                         f"expected {nbytes:,}")
    s = scale_rows.to(torch.float32)
    if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
        raise _bad(path, "quant.scales holds a scale that is not finite and positive")
    ints = torch.frombuffer(bytearray(raw), dtype=torch.int8) if raw else torch.zeros(0, dtype=torch.int8)
    q = qmax(layout["bits"])
    if raw and int(ints.to(torch.int16).abs().max()) > q:  # int16: abs(-128) overflows int8
        raise _bad(path, f"integers outside ±{q} for {layout['bits']} bits")
    params, vi, si, fi = {}, 0, 0, 0
    for i, (name, shape) in enumerate(shapes.items()):
        n = members * math.prod(shape)
        if i in kept:
            params[name] = floats[fi : fi + n].reshape(members, *shape).clone()
            fi += n
            continue
        r = members * rows_of(shape)
        params[name] = dequantize(ints[vi : vi + n].reshape(members, *shape), s[si : si + r].reshape(members, -1))
        vi, si = vi + n, si + r
    return params
