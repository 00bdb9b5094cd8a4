"""Export a fitted INR to ONNX, weights baked in, for any ONNX runtime.

The model
---------
One input and two outputs, all with a dynamic length ``M``:

``position``  float64 ``[M]``    where to evaluate, in **native samples** of the original sound:
                                 sample ``j`` sits at position ``j`` (seconds x ``sample_rate``);
                                 fractional positions evaluate the INR between samples. Any order.
``audio``     float32 ``[C, M]`` the sound at those positions, first head of each channel, in the
                                 units of the fitted audio (full scale = 1.0; the INR's ``gain``
                                 is baked in)
``heads``     float32 ``[C, H, M]`` every head (``H = 1`` except e.g. Siamese SIREN's two; its
                                 noisereduce ``postprocess`` needs whole signals and is not in the
                                 graph: apply it to the rendered ``heads`` if you want it)

Positions outside ``[0, num_samples - 1]`` give silence, and where chunks overlap they are
crossfaded with the same linear ramps as ``hyperaudio.render.evaluate``; so ``audio`` equals
``render.evaluate(inr, position)[:, 0]`` up to float32 rounding. ``position`` is float64 because
float32 spacing is already 1/8 sample at 2^20 samples (22 s at 48 kHz); inside the graph it becomes
each chunk's local time ``t = -1 + 2 (position - start) / (length - 1)`` in float32, exactly as in
``render.evaluate``.

Rendering at a rate ``sr`` from ``start`` seconds: ``position = start * sample_rate + arange(M) *
sample_rate / sr``. Below the native rate, render at the native rate and low-pass/decimate (see
``hyperaudio.render``): the graph evaluates what it is asked for and does not band-limit.

The model's ``metadata_props`` hold ``hyperaudio.sample_rate``, ``num_samples``, ``channels``,
``heads``, ``target`` (the target network's name), ``chunks`` and the full ``config`` (JSON).

How the graph is built
----------------------
Each (chunk, channel) member is a copy of the target network with that member's parameters loaded
as constants. For every chunk the graph selects the positions it covers (``NonZero`` + ``Gather``),
runs that member's network only on them and scatters the weighted result back, so a call costs about
one network evaluation per position whatever the number of chunks (a chunk that covers none of the
positions runs on an empty tensor). Export uses the TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``), which works offline with torch alone; the newer
``dynamo=True`` exporter needs the ``onnxscript`` package. Opset 17.

Built-in target networks and the exporter: NeRF/FMLP, SIREN, RFF, FINER and FiLM-SIREN export as
plain matmuls and elementwise functions; WIRE is written with real/imaginary pairs (ONNX has no
complex type) and KAN's B-spline basis uses ``ScatterElements``; ``tests/test_onnx.py`` checks every
registered target network against PyTorch.
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import HyperaudioError
from .functional import heads as count_heads
from .hya import INR
from .render import chunk_spans, crossfade_weights

INPUT = "position"
OUTPUT_AUDIO = "audio"
OUTPUT_HEADS = "heads"
OPSET = 17
FORMAT = "hyperaudio.onnx"
# verify() accepts |onnxruntime - torch| <= ERROR_FACTOR * e + FLOOR * max(1, peak), where e is
# how precisely float32 defines the INR at those positions: the larger of PyTorch's own float32
# error (|torch float32 - torch float64|) and the change of the output when t moves by one float32
# ulp. ONNX Runtime and PyTorch are two float32 evaluations that differ only in the order and
# approximation of the arithmetic (Gemm with or without FMA, sin/exp kernels): a one-ulp difference
# in some pre-activation, which moves the output by about e. Measured on random-perturbed
# default-size networks (|onnx - torch| / e; tests/test_onnx.py's INRs, 2026-11-22): NeRF 1e-8 /
# 8e-7, KAN 8e-9 / 7e-7, RFF 3e-8 / 8e-6, Siamese SIREN 3e-8 / 1e-4, SIREN 9e-6 / 1e-5, FiLM-SIREN
# 1e-5 / 9e-6, FINER 1e-4 / 1e-4, WIRE 3e-5 / 9e-5. e spans more than two orders of magnitude, so
# a fixed tolerance would either fail the sensitive networks or wave through a broken export of
# the others.
ERROR_FACTOR = 3.0
FLOOR = 1e-6


class ExportError(HyperaudioError):
    """The INR could not be exported, or the exported model disagrees with PyTorch."""


class _Graph(nn.Module):
    """The traced module: every (chunk, channel) member with its own weights, crossfaded."""

    def __init__(self, inr: INR):
        super().__init__()

        base = copy.deepcopy(inr.module).cpu().eval()
        self.gain = float(inr.gain)  # baked into the graph, as render.evaluate applies it
        self.channels = inr.channels
        self.n_heads = count_heads(inr.module)
        self.table = chunk_spans(inr.chunks)
        members = []
        for k in range(len(inr.chunks)):
            for c in range(inr.channels):
                m = copy.deepcopy(base)
                own = dict(m.named_parameters())
                with torch.no_grad():
                    for name, p in inr.params.items():
                        own[name].copy_(p[k * inr.channels + c].detach().cpu())
                m.requires_grad_(False)
                members.append(m)
        self.members = nn.ModuleList(members)

    def forward(self, position: torch.Tensor):
        m_len = position.shape[0]
        rows = self.channels * self.n_heads
        out = torch.zeros(rows, m_len, dtype=torch.float32)
        wsum = torch.zeros(m_len, dtype=torch.float64) if len(self.table) > 1 else None
        for k, ch in enumerate(self.table):
            end = ch.start + ch.length - 1
            idx = torch.nonzero((position >= ch.start) & (position <= end)).squeeze(1)
            pos = position.index_select(0, idx)
            t = (-1 + 2 * (pos - ch.start) / max(ch.length - 1, 1)).to(torch.float32).unsqueeze(-1)
            # One extra point (t = 0) keeps the network's input non-empty when the chunk covers
            # none of the positions: onnxruntime cannot Reshape an empty tensor to [0, -1], which
            # encodings do. Its output is dropped again.
            t = torch.cat([torch.zeros(1, 1, dtype=torch.float32), t], 0)
            ys = [self.members[k * self.channels + c](t)[1:].transpose(0, 1) for c in range(self.channels)]
            y = torch.cat(ys, 0) if len(ys) > 1 else ys[0]  # [C*H, m], channel-major like [C, H]
            if wsum is not None:
                w = crossfade_weights(ch, pos)
                y = w.to(torch.float32).unsqueeze(0) * y
                wsum = wsum + torch.zeros_like(wsum).scatter(0, idx, w)
            out = out + torch.zeros_like(out).scatter(1, idx.unsqueeze(0).expand(rows, -1), y)
        if wsum is not None:
            out = out / wsum.clamp_min(1e-12).to(torch.float32)
        if self.gain != 1.0:
            out = out * self.gain
        heads = out.reshape(self.channels, self.n_heads, m_len)
        return heads[:, 0], heads


def _example_positions(inr: INR) -> torch.Tensor:
    """Positions that reach every chunk (and a little outside the sound), for tracing."""
    n = inr.num_samples
    count = int(min(max(n + 8, 16), 4096))
    return torch.linspace(-2.0, n + 1.5, count, dtype=torch.float64)


def trace_to_onnx(graph: nn.Module, example: tuple, what: str, metadata: dict[str, str], doc: str,
                  opset: int = OPSET, **export_kwargs) -> bytes:
    """Trace ``graph`` on ``example`` with the TorchScript exporter; return the model as bytes with
    ``metadata`` (keys prefixed ``hyperaudio.``) and ``doc``. A failure is an :class:`ExportError`
    saying it could not export ``what``. ``export_kwargs`` go to ``torch.onnx.export``."""
    import onnx

    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter announces its deprecation, and tracing warns about Python
            # values it records as constants; callers verify the result on other inputs instead.
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, example, buffer, dynamo=False, opset_version=opset, do_constant_folding=True,
                              **export_kwargs)
    except Exception as exc:  # the exporter raises many types (RuntimeError, SymbolicValueError, ...)
        raise ExportError(f"cannot export {what} to ONNX: {type(exc).__name__}: {exc}") from exc
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"hyperaudio.{key}", value
    model.doc_string = doc
    model.producer_name = "hyperaudio"
    return model.SerializeToString()


def export_bytes(inr: INR, opset: int = OPSET) -> bytes:
    """The ONNX model of ``inr`` as bytes (metadata included)."""
    name = inr.config.get("target", {}).get("name") or type(inr.module).__name__
    meta = {
        "format": FORMAT,
        "sample_rate": repr(float(inr.sample_rate)),
        "num_samples": str(int(inr.num_samples)),
        "channels": str(int(inr.channels)),
        "heads": str(count_heads(inr.module)),
        "target": str(inr.config.get("target", {}).get("name", "")),
        "chunks": json.dumps([list(map(int, c)) for c in inr.chunks]),
        "config": json.dumps(inr.config),
        "position_units": "native samples (float64); seconds = position / sample_rate",
    }
    doc = (f"hyperaudio INR: {INPUT} float64 [M] (native samples) -> {OUTPUT_AUDIO} float32 [C, M], "
           f"{OUTPUT_HEADS} float32 [C, H, M]")
    return trace_to_onnx(
        _Graph(inr), (_example_positions(inr),), f"target network {name!r}", meta, doc, opset,
        input_names=[INPUT], output_names=[OUTPUT_AUDIO, OUTPUT_HEADS],
        dynamic_axes={INPUT: {0: "M"}, OUTPUT_AUDIO: {1: "M"}, OUTPUT_HEADS: {2: "M"}},
    )


def export_inr(inr: INR, path: str | os.PathLike, opset: int = OPSET) -> Path:
    """Write ``inr`` as an ONNX model to ``path`` (atomically); returns the path."""
    from .audio import atomic_path

    data = export_bytes(inr, opset)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def check_positions(inr: INR, count: int = 3000, seed: int = 0) -> np.ndarray:
    """Positions for checking an export: integers and fractions across the whole sound, every chunk
    seam, and a few outside the sound, in shuffled order."""
    rng = np.random.default_rng(seed)
    n = inr.num_samples
    spread = np.linspace(0, n - 1, min(count, n))
    fractions = rng.uniform(-4, n + 4, count // 2)
    seams = np.concatenate([np.arange(s - 3, s + 4, 0.5) for s, _ in inr.chunks[1:]] or [np.zeros(0)])
    ends = np.array([-1.0, -0.25, 0.0, n - 1, n - 0.5, n + 2.0])
    pos = np.concatenate([spread, fractions, seams, ends])
    return rng.permutation(pos).astype(np.float64)


def max_difference(inr: INR, model: str | os.PathLike | bytes, positions: np.ndarray | None = None) -> float:
    """Largest ``|onnxruntime - torch|`` over all heads and channels at ``positions``."""
    import onnxruntime as ort

    from .render import evaluate

    positions = check_positions(inr) if positions is None else np.asarray(positions, dtype=np.float64)
    source = model if isinstance(model, bytes) else str(model)
    try:
        session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
        (got,) = session.run([OUTPUT_HEADS], {INPUT: positions})
    except Exception as exc:  # onnxruntime's Fail/InvalidArgument/...: the graph is broken
        raise ExportError(f"the exported model does not run in onnxruntime: {exc}") from None
    want = evaluate(inr, torch.from_numpy(positions)).cpu().numpy()
    if got.shape != want.shape:
        raise ExportError(f"exported model returns shape {list(got.shape)}, expected {list(want.shape)}")
    if not np.all(np.isfinite(got)):
        raise ExportError("exported model returns NaN or infinite values")
    return float(np.abs(got - want).max()) if got.size else 0.0


def float32_resolution(inr: INR, positions: np.ndarray) -> float:
    """Largest change of the INR's output when ``t`` moves by one float32 ulp, at ``positions``."""
    from .functional import call_batched

    pos = torch.from_numpy(np.asarray(positions, dtype=np.float64))
    c, worst = inr.channels, 0.0
    with torch.no_grad():
        for k, ch in enumerate(chunk_spans(inr.chunks)):
            p = pos[(pos >= ch.start) & (pos <= ch.start + ch.length - 1)]
            if p.numel() == 0:
                continue
            t = (-1 + 2 * (p - ch.start) / max(ch.length - 1, 1)).to(torch.float32).unsqueeze(-1)
            params = {n: v[k * c : (k + 1) * c] for n, v in inr.params.items()}
            y0 = call_batched(inr.module, params, t)
            y1 = call_batched(inr.module, params, torch.nextafter(t, torch.full_like(t, 2.0)))
            worst = max(worst, float((y1 - y0).abs().max()))
    return worst * abs(float(inr.gain))


def reference64(inr: INR, positions: np.ndarray) -> np.ndarray | None:
    """``render.evaluate`` in float64 arithmetic (``t`` still rounded to float32 first, as the
    model's input is), ``[C, H, M]``; None if the target network cannot run in float64."""
    from .functional import call_batched

    pos = torch.from_numpy(np.asarray(positions, dtype=np.float64))
    module = copy.deepcopy(inr.module).double()
    c = inr.channels
    out = torch.zeros(c, count_heads(inr.module), len(pos), dtype=torch.float64)
    wsum = torch.zeros(len(pos), dtype=torch.float64)
    try:
        with torch.no_grad():
            for k, ch in enumerate(chunk_spans(inr.chunks)):
                end = ch.start + ch.length - 1
                idx = torch.nonzero((pos >= ch.start) & (pos <= end)).squeeze(1)
                if idx.numel() == 0:
                    continue
                p = pos[idx]
                t = (-1 + 2 * (p - ch.start) / max(ch.length - 1, 1)).to(torch.float32).double().unsqueeze(-1)
                params = {n: v[k * c : (k + 1) * c].double() for n, v in inr.params.items()}
                y = call_batched(module, params, t).permute(0, 2, 1)  # [C, H, m]
                w = crossfade_weights(ch, p)
                out[:, :, idx] += w * y
                wsum[idx] += w
    except (RuntimeError, TypeError):  # a plugin's network that insists on float32
        return None
    return (out / wsum.clamp_min(1e-12) * float(inr.gain)).numpy()


def verify(inr: INR, model: str | os.PathLike | bytes) -> float:
    """Check an exported model against PyTorch; returns the max abs difference or raises ExportError.

    Accepted: ``ERROR_FACTOR`` times the INR's float32 resolution plus ``FLOOR * max(1, peak)`` (see
    ``ERROR_FACTOR``).
    """
    from .render import evaluate

    positions = check_positions(inr)
    diff = max_difference(inr, model, positions)
    want = evaluate(inr, torch.from_numpy(positions)).cpu().numpy()
    peak = float(np.abs(want).max()) if want.size else 0.0
    exact = reference64(inr, positions)
    torch_error = float(np.abs(want - exact).max()) if exact is not None and want.size else 0.0
    resolution = max(torch_error, float32_resolution(inr, positions))
    limit = ERROR_FACTOR * resolution + FLOOR * max(1.0, peak)
    why = f"{ERROR_FACTOR:g} x the INR's float32 resolution {resolution:.3g} + {FLOOR:g} x max(1, peak)"
    if not diff <= limit:
        raise ExportError(f"exported model differs from PyTorch by {diff:.3g} (limit {limit:.3g} = {why})")
    return diff
