"""Evaluation backends for streaming: the INR along a linear grid of source positions.

Every request the engine makes is a *linear grid* ``anchor + (k0 + j) * inc`` for ``j < n``, in
native samples (the time convention of ``hyperaudio.render``: sample ``j`` of the original sits at
position ``j``; positions outside the sound are silent; overlapping chunks are crossfaded). Passing
the anchor and an absolute index, rather than a block's first position, makes every position the
same float64 number that ``render.render`` computes (``start + k * inc``), so streamed and offline
renders agree sample for sample.

``submit`` starts the work and returns a :class:`Pending` whose ``result()`` is ``[n, channels]``
float32. On CPU the work is done inside ``submit``. On CUDA the weights live on the GPU, the
positions are generated there, the network runs on a side stream and the block is copied back with
``non_blocking=True`` into pinned host memory; ``result()`` waits on a CUDA event, so the renderer
can submit the next block before collecting this one.

Heads: a backend returns the first head of each channel (``heads="first"``), or all of them,
channel-major ``[n, channels * heads]`` (``heads="all"``), for a sink that applies the target
network's ``postprocess`` to the whole signal afterwards (the file sink).
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import threading
import time

import numpy as np
import torch

from ..functional import call_batched, direct_call, heads as count_heads
from ..hya import INR
from ..render import chunk_spans, crossfade_weights
from .errors import PlaybackError

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` -> CUDA when usable, else CPU. An unusable CUDA request falls back to CPU with a warning."""
    name = "auto" if device is None else str(device)
    if name not in ("auto", "cpu") and not name.startswith("cuda"):
        raise PlaybackError(f"unknown device {name!r} (use auto, cpu or cuda)")
    if name == "cpu":
        return torch.device("cpu")
    try:
        usable = torch.cuda.is_available()
    except Exception:  # a broken driver can raise instead of answering False
        usable = False
    if not usable:
        if name != "auto":
            log.warning("CUDA requested but not available; playing on the CPU")
        return torch.device("cpu")
    return torch.device("cuda" if name == "auto" else name)


class Pending:
    """A block being computed; ``result()`` -> ``[n, channels]`` float32 numpy."""

    def __init__(self, value=None, host: torch.Tensor | None = None, event=None):
        self._value, self._host, self._event = value, host, event

    def result(self) -> np.ndarray:
        if self._value is None:
            if self._event is not None:
                self._event.synchronize()  # releases the GIL while the GPU finishes
            self._value = self._host.numpy().T  # [C, n] pinned -> [n, C] view
        return self._value


def grid_range(anchor: float, inc: float, k0: int, n: int, lo_value: float, hi_value: float) -> tuple[int, int]:
    """Indices ``[a, b)`` of the grid ``anchor + (k0 + j) * inc`` (``inc > 0``) inside ``[lo, hi]``.

    Estimated analytically, then nudged with the exact float64 expression, so the set is exactly the
    one a mask ``(pos >= lo) & (pos <= hi)`` over the same numbers would select.
    """

    def pos(j):
        return anchor + (k0 + j) * inc

    a = min(max(math.ceil((lo_value - anchor) / inc) - k0, 0), n)
    while a > 0 and pos(a - 1) >= lo_value:
        a -= 1
    while a < n and pos(a) < lo_value:
        a += 1
    b = min(max(math.floor((hi_value - anchor) / inc) - k0 + 1, a), n)
    while b < n and pos(b) <= hi_value:
        b += 1
    while b > a and pos(b - 1) > hi_value:
        b -= 1
    return a, b


class TorchBackend:
    """The INR's own target network in PyTorch, on CPU or CUDA."""

    name = "torch"

    def __init__(self, inr: INR, device="auto", heads: str = "first"):
        self.device = resolve_device(device)
        self.channels_in = inr.channels
        self.heads = count_heads(inr.module)
        self.all_heads = heads == "all"
        self.channels = inr.channels * (self.heads if self.all_heads else 1)
        self.table = chunk_spans(inr.chunks)
        self.gain = float(getattr(inr, "gain", 1.0))  # the INR's output scale (render.evaluate applies it too)
        try:
            self._load(inr, self.device)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:  # CUDA init or memory failure
            if self.device.type != "cuda":
                raise
            log.warning("could not put the INR on %s (%s); playing on the CPU", self.device, exc)
            self.device = torch.device("cpu")
            self._load(inr, self.device)

    def _load(self, inr: INR, device: torch.device) -> None:
        # A private copy: the caller's INR stays where it is.
        self.module = copy.deepcopy(inr.module).to(device).eval()
        c = inr.channels
        self.params = [
            {n: p[k * c : (k + 1) * c].detach().to(device) for n, p in inr.params.items()}
            for k in range(len(inr.chunks))
        ]
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self._slots = dict(self.module.named_parameters())
        self._bound = None  # the chunk whose parameters self.module holds

    def _run(self, k: int, t: torch.Tensor) -> torch.Tensor:
        """Chunk ``k``'s network at ``t``, ``[C, m, H]``. One channel: the chunk's parameters are
        copied into the module's own (once per chunk change, ~0.1 MB) and the module is called
        directly (``functional.direct_call``), which saves ``functional_call``'s per-call swapping
        (~10 % of a block) and lets a module take an inference-only path."""
        if self.channels_in > 1:
            return call_batched(self.module, self.params[k], t)
        if self._bound != k:
            for name, value in self.params[k].items():
                self._slots[name].copy_(value[0])
            self._bound = k
        with direct_call():
            return self.module(t).unsqueeze(0)

    def submit(self, anchor: float, inc: float, k0: int, n: int) -> Pending:
        if self.cuda:
            with torch.cuda.stream(self.stream):
                out = self._compute(anchor, inc, k0, n)
                host = torch.empty(out.shape, dtype=torch.float32, pin_memory=True)
                host.copy_(out, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self.stream)
            return Pending(host=host, event=event)
        return Pending(host=self._compute(anchor, inc, k0, n))

    @torch.inference_mode()
    def _compute(self, anchor: float, inc: float, k0: int, n: int) -> torch.Tensor:
        """``[channels, n]`` on the device. Mirrors ``render.evaluate`` (same float64 positions,
        same crossfade ramps, same float32 cast of ``t``) but finds each chunk's span on the host
        from the grid's arithmetic instead of a ``nonzero`` mask, which would stall on a GPU."""
        dev = self.module_device
        out = torch.zeros(self.channels_in, self.heads if self.all_heads else 1, n, device=dev)
        spans = []
        for k, ch in enumerate(self.table):
            a, b = grid_range(anchor, inc, k0, n, ch.start, ch.start + ch.length - 1)
            if b > a:
                spans.append((k, ch, a, b))
        if not spans:
            return out.reshape(-1, n)
        wsum = torch.zeros(n, device=dev, dtype=torch.float64) if len(spans) > 1 else None
        for k, ch, a, b in spans:
            pos = torch.arange(k0 + a, k0 + b, device=dev, dtype=torch.float64) * inc + anchor
            t = (-1 + 2 * (pos - ch.start) / max(ch.length - 1, 1)).to(torch.float32).unsqueeze(-1)
            y = self._run(k, t)  # [C, m, H]
            y = y.permute(0, 2, 1) if self.all_heads else y[..., :1].permute(0, 2, 1)
            if wsum is None:  # one chunk covers the whole block: its weight is 1 wherever it is defined
                out[:, :, a:b] = y
                continue
            w = crossfade_weights(ch, pos)
            out[:, :, a:b] += w.to(y.dtype) * y
            wsum[a:b] += w
        if wsum is not None:
            out = out / wsum.clamp_min(1e-12).to(out.dtype)
        if self.gain != 1.0:
            out = out * self.gain
        return out.reshape(-1, n)

    @property
    def module_device(self) -> torch.device:
        return self.device

    def evaluate(self, positions: np.ndarray) -> np.ndarray:
        """Generic positions (any order): via ``render.evaluate``. ``[n, channels]``."""
        from ..render import evaluate

        shadow = INR({}, self.module, _stack(self.params), 1.0, 0, self.channels_in,
                     [(c.start, c.length) for c in self.table], gain=self.gain)
        y = evaluate(shadow, torch.as_tensor(np.asarray(positions, dtype=np.float64)))
        y = y if self.all_heads else y[:, :1]
        return y.reshape(-1, y.shape[-1]).cpu().numpy().T


def _stack(per_chunk: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {n: torch.cat([p[n] for p in per_chunk]) for n in per_chunk[0]}


class OnnxBackend:
    """The INR exported to ONNX (``hyperaudio.onnx_export``) and run by onnxruntime."""

    name = "onnx"

    def __init__(self, inr: INR, device="auto", heads: str = "first", threads: int | None = None):
        from .. import onnx_export

        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise PlaybackError(f"the onnx backend needs onnxruntime ({exc}); pip install 'hyperaudio[onnx]'") from None
        self.heads = count_heads(inr.module)
        self.all_heads = heads == "all"
        self.channels = inr.channels * (self.heads if self.all_heads else 1)
        model = onnx_export.export_bytes(inr)
        providers = ["CPUExecutionProvider"]
        want_cuda = str(device).startswith("cuda") or (str(device) == "auto" and resolve_device("auto").type == "cuda")
        if want_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        if threads:
            # One thread, no spinning: as with torch, a second thread only waits on a busy machine.
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
            if int(threads) == 1:
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model, options, providers=providers)
        self.device = torch.device("cuda" if self.session.get_providers()[0].startswith("CUDA") else "cpu")
        self._output = onnx_export.OUTPUT_HEADS if self.all_heads else onnx_export.OUTPUT_AUDIO

    def submit(self, anchor: float, inc: float, k0: int, n: int) -> Pending:
        pos = np.arange(k0, k0 + n, dtype=np.float64) * inc + anchor
        return Pending(value=self.evaluate(pos))

    def evaluate(self, positions: np.ndarray) -> np.ndarray:
        (y,) = self.session.run([self._output], {"position": np.asarray(positions, dtype=np.float64)})
        return y.reshape(-1, y.shape[-1]).T


class ParallelBackend:
    """Splits every block across ``workers`` copies of a CPU backend, one thread each, where that
    is faster (timed at construction, unless ``calibrate=False``).

    Each part is an exact piece of the same grid (``k0`` shifted), so the result is the same block.
    The copies do not share a module: each binds its own chunk's parameters. Why not torch's own
    intra-op threads: OpenMP meets at a barrier after every operation, and on a busy machine each
    barrier can wait a whole time slice for a descheduled thread (a 4096-sample ``sin`` took 8 ms
    with 2 threads, 13 us with 1); here the threads meet once per block.
    """

    def __init__(self, make, workers: int, priority: bool = False, calibrate: bool = True):
        from concurrent.futures import ThreadPoolExecutor

        self.parts = [make() for _ in range(workers)]
        first = self.parts[0]
        self.name, self.device, self.channels, self.heads = first.name, first.device, first.channels, first.heads
        self.pool = ThreadPoolExecutor(workers - 1, thread_name_prefix="hyperaudio-render",
                                       initializer=_init_worker, initargs=(priority,))
        self.split = not calibrate or self._split_is_faster()

    def _split_is_faster(self, n: int = 2048, repeats: int = 7) -> bool:
        """Time a block both ways, alternately, on a thread set up like the renderer's; split when
        the median is 10 % faster. A network of many small operations (KAN) loses: its threads
        mostly wait for each other's Python between operations (2 vCPUs, 48 kHz: RTF 11 -> 8; SIREN
        21 -> 25, RFF 10 -> 14). The first round is a warm-up."""
        chunk = self.parts[0].table[0]
        grid = (float(chunk.start), max(chunk.length - 1, 1) / n, 0, n)
        whole, split = [], []

        def measure():
            torch.set_num_threads(1)
            for _ in range(repeats + 1):
                for times, run in ((whole, lambda: self.parts[0].submit(*grid).result()),
                                   (split, lambda: self._split(*grid))):
                    start = time.perf_counter()
                    run()
                    times.append(time.perf_counter() - start)

        thread = threading.Thread(target=measure, name="hyperaudio-calibrate")
        thread.start()
        thread.join()
        return statistics.median(split[1:]) < 0.9 * statistics.median(whole[1:])

    def submit(self, anchor: float, inc: float, k0: int, n: int) -> Pending:
        if not self.split:
            return self.parts[0].submit(anchor, inc, k0, n)
        return Pending(value=self._split(anchor, inc, k0, n))

    def _split(self, anchor: float, inc: float, k0: int, n: int) -> np.ndarray:
        cuts = [n * i // len(self.parts) for i in range(len(self.parts) + 1)]
        later = [self.pool.submit(lambda p=p, a=a, b=b: p.submit(anchor, inc, k0 + a, b - a).result())
                 for p, a, b in zip(self.parts[1:], cuts[1:], cuts[2:])]
        pieces = [self.parts[0].submit(anchor, inc, k0, cuts[1]).result()] + [f.result() for f in later]
        return np.concatenate(pieces)

    def evaluate(self, positions: np.ndarray) -> np.ndarray:
        return self.parts[0].evaluate(positions)


def _init_worker(priority: bool) -> None:
    torch.set_num_threads(1)  # per thread: the parts are the parallelism
    if priority:
        from .sinks import raise_thread_priority

        raise_thread_priority()


def make_backend(inr: INR, backend: str = "torch", device="auto", heads: str = "first", threads: int | None = 1,
                 priority: bool = False):
    """``threads``: onnxruntime's intra-op threads; for torch on the CPU, the number of
    :class:`ParallelBackend` workers (each with one intra-op thread, which the renderer sets)."""
    from .sampled import SampledBackend, SampledSound

    if isinstance(inr, SampledSound):  # plain audio (an original): there is no network to run
        return SampledBackend(inr)
    if backend == "torch":
        if threads and threads > 1 and resolve_device(device).type == "cpu":
            return ParallelBackend(lambda: TorchBackend(inr, "cpu", heads), int(threads), priority)
        return TorchBackend(inr, device, heads)
    if backend == "onnx":
        return OnnxBackend(inr, device, heads, threads)
    raise PlaybackError(f"unknown backend {backend!r} (use {' or '.join(BACKENDS)})")
