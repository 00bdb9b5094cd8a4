"""The conformance checks themselves. Public entry points live in ``hyperaudio.testing``.

Every check is a plain function ``check_xxx(subject) -> str | None`` that raises
:class:`AssertionError` (or any exception) when the component does not conform, raises
:class:`SkipCheck` when the check cannot run here, and may return a short note on success.
``subject`` is a :class:`Subject`: the component, its registered name (if any) and the keyword
hyperparameters to build it with.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

KIND_ALIASES = {
    "target_network": "target_networks", "target_networks": "target_networks", "target": "target_networks",
    "encoder": "encoders", "encoders": "encoders",
    "strategy": "strategies", "strategies": "strategies",
    "preset": "presets", "presets": "presets",
}
KIT_DIST = "hyperaudio.testing"  # the pseudo-distribution of components the kit registers temporarily
SAMPLE_RATE = 8000.0  # native rate of the tiny INRs the kit builds
CHUNK = 64  # samples per chunk of those INRs
OVERLAP = 8
RENDER_RATES = (SAMPLE_RATE, 2 * SAMPLE_RATE, SAMPLE_RATE / 2, 44100.0)
TOML_SCALARS = (bool, int, float, str)


class SkipCheck(Exception):
    """A check that cannot run in this environment (e.g. ONNX export is not available)."""


class ConformanceError(AssertionError):
    """Raised by the ``check_*`` helpers when at least one conformance check failed."""

    def __init__(self, results: list["CheckResult"]):
        self.results = results
        failed = [r for r in results if r.status == "failed"]
        lines = [f"{len(failed)} of {len(results)} conformance checks failed:"]
        lines += [f"  {r.component} [{r.check}]: {r.message}" for r in failed]
        super().__init__("\n".join(lines))


@dataclass
class CheckResult:
    kind: str  # target_networks, encoders, strategies, presets, or "plugin"
    component: str  # registered name, or the class name
    check: str  # e.g. "external_parameters_match_own"
    status: str  # "passed", "failed" or "skipped"
    message: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"kind": self.kind, "component": self.component, "check": self.check, "status": self.status,
                "message": self.message, "seconds": round(self.seconds, 3)}


@dataclass
class Subject:
    kind: str
    obj: Any  # a class, or a preset dict
    name: str | None = None  # registered name; None = not registered (the kit registers it temporarily)
    params: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return getattr(self.obj, "__name__", None) or str(self.obj.get("preset", {}).get("name") or "preset")

    def build(self):
        try:
            return self.obj(**self.params)
        except Exception as exc:
            raise AssertionError(
                f"{self.label}({_kwargs(self.params)}) raised {type(exc).__name__}: {exc}") from exc


def _kwargs(params: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def conformance_params(cls, params: dict | None) -> dict:
    """Keyword hyperparameters for the kit: explicit ``params``, else ``cls.conformance_params``."""
    if params is not None:
        return dict(params)
    declared = getattr(cls, "conformance_params", None)
    if callable(declared):
        declared = declared()
    return dict(declared or {})


# -- helpers --------------------------------------------------------------------------------------
def _torch():
    import torch

    return torch


def _close(a, b, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    torch = _torch()
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shapes differ, {list(a.shape)} vs {list(b.shape)}")
    if not torch.allclose(a, b, atol=atol, rtol=rtol):
        err = (a - b).abs().max().item()
        raise AssertionError(f"{what}: values differ (max abs difference {err:.3g})")


def _time(n: int, dtype=None):
    torch = _torch()
    return torch.linspace(-1.0, 1.0, n, dtype=torch.float64).to(dtype or torch.float32).unsqueeze(-1)


def _precise(module):
    """A float64 copy of ``module`` if it runs in float64, else the module itself, and the tolerances.

    Checks that compare two computations of the same function (in blocks vs. at once, under
    ``vmap`` vs. plainly) run in float64 where possible: high-frequency networks (SIREN, WIRE with
    omega ~ 2000) amplify float32 rounding differences of a reordered matmul far above any fixed
    tolerance, while a logic error stays large in float64.
    """
    torch = _torch()
    try:
        double = copy.deepcopy(module).double()
        with torch.no_grad():
            if double(_time(3, torch.float64)).dtype == torch.float64:
                return double, torch.float64, {"atol": 1e-9, "rtol": 1e-7}
    except Exception:  # noqa: BLE001 - a module may hard-code float32; fall back to it
        pass
    return module, torch.float32, {"atol": 1e-4, "rtol": 1e-3}


def _seeded(seed: int = 0):
    torch = _torch()
    torch.manual_seed(seed)


def _toml_value(value) -> bool:
    if value is None or isinstance(value, TOML_SCALARS):
        return True
    if isinstance(value, (list, tuple)):
        return all(_toml_value(v) for v in value)
    return False


_NAME_RE = re.compile(r"[^a-z0-9_.\-]+")


@contextlib.contextmanager
def registered(subject: Subject) -> Iterator[str]:
    """The subject's name in the process-wide registry, registering it temporarily if needed.

    ``hyperaudio.config``, ``.hya`` loading and rendering look target networks up by name; a class
    an author tests before (or without) publishing it gets a temporary ``conformance-...`` name.
    """
    from hyperaudio.plugins import Entry, get_registry

    registry = get_registry()
    table = registry.entries[subject.kind]
    if subject.name and subject.name in table and table[subject.name].obj is subject.obj:
        yield subject.name
        return
    for name, entry in table.items():
        if entry.obj is subject.obj:
            yield name
            return
    base = "conformance-" + (_NAME_RE.sub("-", getattr(subject.obj, "__name__", "component").lower()).strip("-.")
                             or "component")
    name, i = base, 1
    while name in table:
        i += 1
        name = f"{base}-{i}"
    table[name] = Entry(subject.kind, name, subject.obj, KIT_DIST, "registered by the conformance kit")
    try:
        yield name
    finally:
        if table.get(name) is not None and table[name].dist == KIT_DIST:
            del table[name]


def _tiny_inr(subject: Subject, name: str, module=None, chunks: int = 2, seed: int = 0):
    """A fitted-looking INR: ``chunks`` overlapping chunks, one channel, perturbed parameters."""
    torch = _torch()
    from hyperaudio.config import resolve
    from hyperaudio.functional import stacked_parameters
    from hyperaudio.hya import INR

    config = resolve({"target": {"name": name, "params": copy.deepcopy(subject.params)}})
    _seeded(seed)
    module = module if module is not None else subject.build()
    params = stacked_parameters(module, chunks)
    gen = torch.Generator().manual_seed(seed + 1)
    params = {n: p + 0.05 * p.abs().mean().clamp_min(1e-3) * torch.randn(p.shape, generator=gen, dtype=p.dtype)
              for n, p in params.items()}
    starts = [k * (CHUNK - OVERLAP) for k in range(chunks)]
    num_samples = starts[-1] + CHUNK
    return INR(config, module, params, SAMPLE_RATE, num_samples, 1, [(s, CHUNK) for s in starts])


# -- target networks ------------------------------------------------------------------------------
def check_constructor_keywords(s: Subject):
    """The constructor takes keyword hyperparameters with TOML-friendly defaults."""
    cls = s.obj
    sig = inspect.signature(cls.__init__)
    missing = []
    for pname, p in list(sig.parameters.items())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind is p.POSITIONAL_ONLY:
            raise AssertionError(f"constructor parameter {pname!r} is positional-only; presets pass keywords")
        if p.default is p.empty:
            if pname not in s.params:
                missing.append(pname)
        elif not _toml_value(p.default):
            raise AssertionError(
                f"constructor parameter {pname!r} has default {p.default!r}: presets and .hya files store "
                "hyperparameters as TOML/JSON, so use bool, int, float, str, lists of them, or None")
    if missing:
        raise AssertionError(f"constructor parameters {missing} have no default: give every hyperparameter a "
                             "default, or pass them to the kit (params=... or a conformance_params attribute)")
    bad = {k: v for k, v in s.params.items() if not _toml_value(v)}
    if bad:
        raise AssertionError(f"hyperparameters {bad} are not TOML/JSON values")
    module = s.build()
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise AssertionError(f"{s.label}(...) returned {type(module).__name__}, not a torch.nn.Module")
    if s.kind == "target_networks" and not list(module.parameters()):
        raise AssertionError("the module has no parameters: there is nothing to fit or to generate")


def check_config_resolves(s: Subject):
    """A preset naming it with these hyperparameters passes ``hyperaudio.config.resolve``."""
    from hyperaudio.config import build_target, resolve

    with registered(s) as name:
        config = resolve({"target": {"name": name, "params": copy.deepcopy(s.params)}})
        module = build_target(config)
    if not isinstance(module, s.obj):
        raise AssertionError(f"build_target made a {type(module).__name__}, expected {s.obj.__name__}")


def check_forward_shapes_and_dtypes(s: Subject):
    """``forward(t [N, 1] float32)`` returns finite float32 ``[N, C * H]`` with ``C * H`` fixed."""
    torch = _torch()
    from hyperaudio.functional import heads

    _seeded()
    module = s.build()
    h = heads(module)
    if h < 1:
        raise AssertionError(f"heads must be a positive integer, got {getattr(module, 'heads', None)!r}")
    widths = set()
    for n in (1, 7, 64):
        with torch.no_grad():
            y = module(_time(n))
        if not isinstance(y, torch.Tensor):
            raise AssertionError(f"forward returned {type(y).__name__}, expected a Tensor")
        if y.dim() != 2 or y.shape[0] != n:
            raise AssertionError(f"forward(t [{n}, 1]) returned shape {list(y.shape)}, expected [{n}, C * H]")
        if y.dtype != torch.float32:
            raise AssertionError(f"forward(float32 t) returned {y.dtype}, expected torch.float32")
        if not torch.isfinite(y).all():
            raise AssertionError(f"forward(t [{n}, 1]) returned non-finite values")
        widths.add(y.shape[1])
    if len(widths) != 1:
        raise AssertionError(f"output width depends on N: {sorted(widths)}")
    width = widths.pop()
    if width % h:
        raise AssertionError(f"output width {width} is not a multiple of heads={h}")
    return f"output [N, {width}] ({width // h} channel(s) x {h} head(s))"


def check_pointwise(s: Subject):
    """Each output row depends only on its own ``t``: evaluation in blocks or shuffled gives the same."""
    torch = _torch()

    _seeded()
    module, dtype, tol = _precise(s.build().eval())
    t = _time(50, dtype)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = module(t)
        parts = torch.cat([module(t[:17]), module(t[17:])])
        shuffled = module(t[perm])
    _close(parts, full, "forward on two blocks vs. all at once (rendering evaluates in blocks)", **tol)
    _close(shuffled, full[perm], "forward on shuffled t vs. shuffled output", **tol)


def check_parameter_declarations(s: Subject):
    """``generatable_parameters``/``modulation_parameters`` name real float32 parameters."""
    torch = _torch()
    from hyperaudio.functional import generatable_parameters, modulation_parameters

    module = s.build()
    names = dict(module.named_parameters())
    try:
        gen = generatable_parameters(module)
    except ValueError as exc:
        raise AssertionError(str(exc)) from None
    if not gen:
        raise AssertionError("generatable_parameters is empty: a hypernetwork would have nothing to generate")
    for n in gen:
        if names[n].dtype != torch.float32:
            raise AssertionError(f"parameter {n!r} is {names[n].dtype}; parameters must be float32")
    unknown = [n for n in modulation_parameters(module) if n not in names]
    if unknown:
        raise AssertionError(f"modulation_parameters names unknown parameters: {unknown}")
    n_total = sum(p.numel() for p in module.parameters())
    return f"{n_total:,} parameters, {len(gen)} generatable tensor(s)"


def check_external_parameters_match_own(s: Subject):
    """``call_batched`` with parameters supplied from outside equals ``forward`` with its own."""
    torch = _torch()
    from hyperaudio.functional import call_batched, generatable_parameters, stacked_parameters

    _seeded()
    module, dtype, tol = _precise(s.build().eval())
    t = _time(33, dtype)
    with torch.no_grad():
        own = module(t)
        one = call_batched(module, stacked_parameters(module, 1), t)
        _close(one[0], own, "call_batched (B=1, own parameters) vs forward", **tol)
        gen = generatable_parameters(module)
        subset = call_batched(module, stacked_parameters(module, 2, gen), t)
        _close(subset[1], own, "call_batched (B=2, generatable parameters only) vs forward", **tol)
        # Three different parameter sets (own parameters plus noise), each checked against a copy of
        # the module that owns it.
        gen_noise = torch.Generator().manual_seed(1)
        batch = {}
        for n, p in stacked_parameters(module, 3, gen).items():
            scale = 0.1 * max(p.abs().mean().item(), 0.01)
            batch[n] = p + scale * torch.randn(p.shape, generator=gen_noise, dtype=p.dtype)
        out = call_batched(module, batch, t)
        per_member_t = call_batched(module, batch, t.unsqueeze(0).expand(3, -1, -1).contiguous())
        for b in range(3):
            clone = copy.deepcopy(module)
            own_params = dict(clone.named_parameters())
            for n in gen:
                own_params[n].copy_(batch[n][b])
            expected = clone(t)
            _close(out[b], expected, f"call_batched member {b} (different parameters per member) vs forward", **tol)
            _close(per_member_t[b], expected, f"call_batched member {b} with t [B, N, 1] vs forward", **tol)
        if torch.equal(out[0], out[1]) and torch.equal(out[1], out[2]):
            raise AssertionError("three different parameter sets gave identical outputs: "
                                 "forward ignores externally supplied parameters")


def check_gradients_flow(s: Subject):
    """Gradients reach every generatable parameter, on the own path and through ``call_batched``."""
    torch = _torch()
    from hyperaudio.functional import call_batched, generatable_parameters, stacked_parameters

    _seeded()
    module = s.build()
    t = _time(40)
    gen = generatable_parameters(module)
    module.zero_grad()
    module(t).square().mean().backward()
    own = dict(module.named_parameters())
    for n in gen:
        g = own[n].grad
        if g is None:
            raise AssertionError(f"forward: parameter {n!r} receives no gradient (is it used?)")
        if not torch.isfinite(g).all():
            raise AssertionError(f"forward: gradient of {n!r} is not finite")
    external = {n: p.requires_grad_(True) for n, p in stacked_parameters(module, 2, gen).items()}
    y = call_batched(module, external, t)
    grads = torch.autograd.grad(y.square().mean(), list(external.values()), allow_unused=True)
    total = 0.0
    for n, g in zip(external, grads):
        if g is None:
            raise AssertionError(f"call_batched: parameter {n!r} receives no gradient")
        if not torch.isfinite(g).all():
            raise AssertionError(f"call_batched: gradient of {n!r} is not finite")
        total += g.abs().sum().item()
    if total == 0:
        raise AssertionError("all gradients are exactly zero")


def check_hya_roundtrip(s: Subject):
    """An INR saved to ``.hya`` and loaded back has the same parameters, buffers and output."""
    torch = _torch()
    from hyperaudio import hya
    from hyperaudio.functional import call_batched

    with registered(s) as name, tempfile.TemporaryDirectory(prefix="hyperaudio-kit-") as tmp:
        inr = _tiny_inr(s, name)
        path = hya.save(inr, Path(tmp) / "roundtrip.hya")
        back = hya.load(path)
        if type(back.module) is not s.obj:
            raise AssertionError(f".hya loaded a {type(back.module).__name__}, expected {s.obj.__name__}")
        if set(back.params) != set(inr.params):
            raise AssertionError(f"parameters differ after loading: {sorted(set(back.params) ^ set(inr.params))}")
        for n, p in inr.params.items():
            if not torch.equal(back.params[n], p.detach()):
                raise AssertionError(f"parameter {n!r} changed in the .hya round trip")
        for n, b in inr.module.named_buffers():
            if not torch.equal(dict(back.module.named_buffers())[n], b):
                raise AssertionError(f"buffer {n!r} changed in the .hya round trip")
        t = _time(21)
        with torch.no_grad():
            _close(call_batched(back.module, back.params, t), call_batched(inr.module, inr.params, t),
                   "output after the .hya round trip")


def check_renders_at_several_rates(s: Subject):
    """``hyperaudio.render.render`` gives finite float32 audio of the right length at several rates."""
    import numpy as np

    torch = _torch()
    from hyperaudio.functional import call_batched, heads
    from hyperaudio.render import render

    with registered(s) as name:
        inr = _tiny_inr(s, name)
        for sr in RENDER_RATES:
            y = render(inr, sr)
            expected = int(round(inr.duration * sr))
            if not isinstance(y, np.ndarray) or y.dtype != np.float32:
                raise AssertionError(f"render at {sr:g} Hz returned {type(y).__name__} {getattr(y, 'dtype', '')}")
            if y.shape != (1, expected):
                raise AssertionError(f"render at {sr:g} Hz: shape {list(y.shape)}, expected [1, {expected}]")
            if not np.isfinite(y).all():
                raise AssertionError(f"render at {sr:g} Hz produced non-finite samples")
        # At the native rate, samples before the first crossfade are chunk 0's output at t = -1 + 2j/(L-1).
        if heads(inr.module) == 1 and getattr(inr.module, "postprocess", None) is None:
            y = render(inr, SAMPLE_RATE)
            j = torch.arange(CHUNK - OVERLAP, dtype=torch.float64)
            t = (-1 + 2 * j / (CHUNK - 1)).to(torch.float32).unsqueeze(-1)  # as render computes it
            with torch.no_grad():
                direct = call_batched(inr.module, inr.chunk_params(0), t)[0, :, 0]
            _close(torch.from_numpy(y[0, : CHUNK - OVERLAP]), direct, "rendered samples vs direct evaluation",
                   atol=1e-4)
    return "rates " + ", ".join(f"{r:g}" for r in RENDER_RATES) + " Hz"


def check_plays_like_render(s: Subject):
    """The playback renderer gives ``render.evaluate``'s samples, across a chunk seam and past both
    ends. It calls a mono module directly (``functional.in_direct_call``): any inference-only path
    the module takes there must agree with its ordinary one."""
    import numpy as np

    torch = _torch()
    from hyperaudio.playback.backends import TorchBackend
    from hyperaudio.render import evaluate

    with registered(s) as name:
        inr = _tiny_inr(s, name)
        anchor, inc = -3.0, 0.75
        n = int((inr.num_samples + 6) / inc)
        got = TorchBackend(inr, "cpu").submit(anchor, inc, 0, n).result()
        want = evaluate(inr, torch.from_numpy(anchor + np.arange(n) * inc))[:, 0].numpy().T
        _close(torch.from_numpy(np.ascontiguousarray(got)), torch.from_numpy(np.ascontiguousarray(want)),
               "playback renderer vs render.evaluate", atol=1e-4)
    return f"{n} positions"


def _onnx_exporter():
    import importlib

    try:
        onnx_export = importlib.import_module("hyperaudio.onnx_export")
    except ModuleNotFoundError as exc:
        if exc.name in ("hyperaudio.onnx_export", "onnx", "onnxruntime"):
            raise SkipCheck(f"ONNX export not available: {exc}") from None
        raise
    for fname in ("export_inr", "export", "export_onnx"):
        fn = getattr(onnx_export, fname, None)
        if callable(fn):
            return onnx_export, fn
    raise SkipCheck("hyperaudio.onnx_export has no export_inr/export/export_onnx function the kit knows")


def check_onnx_export(s: Subject):
    """The INR exports to ONNX with ``hyperaudio.onnx_export`` (skipped where that is unavailable)."""
    onnx_export, export = _onnx_exporter()
    with registered(s) as name, tempfile.TemporaryDirectory(prefix="hyperaudio-kit-") as tmp:
        inr = _tiny_inr(s, name)
        path = Path(tmp) / "model.onnx"
        result = export(inr, path)
        out = Path(result) if isinstance(result, (str, Path)) else path
        if not out.exists() or out.stat().st_size == 0:
            raise AssertionError(f"{onnx_export.__name__}.{export.__name__} wrote no file at {out}")
        verify = getattr(onnx_export, "verify", None)
        if callable(verify):
            verify(inr, out)
            return "exported and verified"
    return "exported"


def _construct_strategy(cls, target):
    """Build a strategy for ``target``: its first parameter receives the target network."""
    sig = inspect.signature(cls)
    params = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if not params:
        raise AssertionError(f"strategy {cls.__name__} takes no target network: expected cls(target, ...)")
    first = params[0]
    required = [p.name for p in params[1:] if p.default is p.empty]
    if required:
        raise AssertionError(f"strategy {cls.__name__} needs {required} besides the target network; "
                             "give them defaults so it can be built for any target network")
    if first.kind is first.KEYWORD_ONLY:
        return cls(**{first.name: target})
    return cls(target)


def _supports(cls, target) -> bool:
    supports = getattr(cls, "supports", None)
    return True if supports is None else bool(supports(target))


def _check_strategy_instance(label: str, strategy) -> None:
    torch = _torch()
    if isinstance(strategy, torch.nn.Module):
        for n, p in strategy.named_parameters():
            if not torch.isfinite(p).all():
                raise AssertionError(f"strategy {label}: parameter {n!r} is not finite after construction")


class _TinyEncoder:
    """A two-layer conv encoder the kit drives strategies with (built lazily: torch is imported late)."""

    @staticmethod
    def build():
        nn = _torch().nn

        class TinyEncoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv1d(1, 4, 9, stride=8, padding=4)
                self.out = nn.Linear(4, 8)

            def forward(self, x):
                return self.out(nn.functional.elu(self.conv(x.unsqueeze(1))).mean(-1))

        return TinyEncoder()


def _drive(label: str, strategy, target) -> None:
    """Build a tiny hypernetwork around ``strategy`` and ``target``; run forward and backward."""
    torch = _torch()
    from hyperaudio.functional import parameter_shapes
    from hyperaudio.hypernet.model import HyperNetwork

    samples = 256
    model = HyperNetwork(_TinyEncoder.build(), strategy, target, samples, hidden=[16])
    wave = _waveform(2, samples, seed=3)
    params = model(wave, step=0)
    shapes = parameter_shapes(target)
    for name, value in params.items():
        if name not in shapes:
            raise AssertionError(f"{label}: combine() returned {name!r}, which the target network does not have")
        if tuple(value.shape) != (2, *shapes[name]):
            raise AssertionError(f"{label}: combine() gave {name!r} shape {list(value.shape)}, "
                                 f"expected [2, {', '.join(map(str, shapes[name]))}]")
    y = model.render(params, samples)
    if not torch.isfinite(y).all():
        raise AssertionError(f"{label}: the generated target network outputs non-finite values")
    y.square().mean().backward()
    for n, p in [*model.head.named_parameters(), *model.strategy.named_parameters()]:
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all()):
            raise AssertionError(f"{label}: parameter {n!r} gets no finite gradient through the target network")


def check_works_with_strategies(s: Subject):
    """Every registered hypernetwork strategy drives it: a tiny hypernetwork runs forward and backward."""
    from hyperaudio.plugins import get_registry

    registry = get_registry()
    names = registry.names("strategies")
    if not names:
        raise SkipCheck("no hypernetwork strategies are registered")
    used, unsupported = [], []
    for name in names:
        _seeded()
        module = s.build()
        cls = registry.get("strategies", name).obj
        if not _supports(cls, module):
            unsupported.append(name)
            continue
        try:
            strategy = _construct_strategy(cls, module)
            _check_strategy_instance(name, strategy)
            _drive(f"strategy {name!r}", strategy, module)
        except AssertionError:
            raise
        except Exception as exc:
            raise AssertionError(f"strategy {name!r} failed for it: {type(exc).__name__}: {exc}") from exc
        used.append(name)
    note = f"driven by {', '.join(used) or 'no strategy'}"
    if unsupported:
        note += f"; not supported by (strategy.supports is False): {', '.join(unsupported)}"
    return note


TARGET_CHECKS: list[Callable] = [
    check_constructor_keywords,
    check_config_resolves,
    check_forward_shapes_and_dtypes,
    check_pointwise,
    check_parameter_declarations,
    check_external_parameters_match_own,
    check_gradients_flow,
    check_hya_roundtrip,
    check_renders_at_several_rates,
    check_plays_like_render,
    check_onnx_export,
    check_works_with_strategies,
]


# -- encoders --------------------------------------------------------------------------------------
def _samples(s: Subject) -> int:
    return int(getattr(s.obj, "conformance_samples", 4096))


def _waveform(batch: int, samples: int, seed: int = 0):
    torch = _torch()
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(samples, dtype=torch.float32) / 8000.0
    freqs = 100 + 900 * torch.rand(batch, 1, generator=gen)
    x = 0.5 * torch.sin(2 * math.pi * freqs * t) + 0.05 * torch.randn(batch, samples, generator=gen)
    return x.float()


def check_encoder_output(s: Subject):
    """``forward(x [B, T] float32)`` returns a finite float ``[B, ...]`` latent whose shape ignores B."""
    torch = _torch()

    _seeded()
    module = s.build().eval()
    shapes = set()
    for b in (1, 3):
        with torch.no_grad():
            z = module(_waveform(b, _samples(s)))
        if not isinstance(z, torch.Tensor):
            raise AssertionError(f"forward returned {type(z).__name__}, expected a Tensor")
        if z.dim() < 2 or z.shape[0] != b:
            raise AssertionError(f"forward(x [{b}, T]) returned shape {list(z.shape)}, expected [{b}, ...]")
        if not z.is_floating_point():
            raise AssertionError(f"latent dtype {z.dtype} is not floating point")
        if not torch.isfinite(z).all():
            raise AssertionError("latent has non-finite values")
        shapes.add(tuple(z.shape[1:]))
    if len(shapes) != 1:
        raise AssertionError(f"latent shape depends on the batch size: {sorted(shapes)}")
    return f"latent [B, {', '.join(map(str, shapes.pop()))}] for T = {_samples(s)}"


def check_encoder_batch_independent(s: Subject):
    """In eval mode each latent depends only on its own waveform, and encoding is deterministic."""
    torch = _torch()

    _seeded()
    module = s.build().eval()
    x = _waveform(3, _samples(s), seed=1)
    with torch.no_grad():
        z = module(x)
        again = module(x)
        single = torch.cat([module(x[i : i + 1]) for i in range(3)])
    _close(again, z, "two evaluations of the same batch (eval mode)")
    _close(single, z, "encoding one at a time vs. as a batch (eval mode)", atol=1e-4)


def check_encoder_gradients(s: Subject):
    """Gradients reach every encoder parameter and are finite."""
    torch = _torch()

    _seeded()
    module = s.build().train()
    module.zero_grad()
    x = _waveform(2, _samples(s), seed=2)
    module(x).float().square().mean().backward()
    total = 0.0
    for n, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            raise AssertionError(f"parameter {n!r} receives no gradient (is it used?)")
        if not torch.isfinite(p.grad).all():
            raise AssertionError(f"gradient of {n!r} is not finite")
        total += p.grad.abs().sum().item()
    if total == 0:
        raise AssertionError("all gradients are exactly zero")


ENCODER_CHECKS: list[Callable] = [
    check_constructor_keywords,
    check_encoder_output,
    check_encoder_batch_independent,
    check_encoder_gradients,
]


# -- strategies ------------------------------------------------------------------------------------
def tiny_targets():
    """Two tiny target networks the kit builds strategies for: a plain MLP and a FiLM-modulated one."""
    torch = _torch()
    nn = torch.nn

    class TinyMLP(nn.Sequential):
        def __init__(self):
            super().__init__(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))

    class TinyModulated(nn.Module):
        modulation_parameters = ("scale", "shift")

        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(1, 8)
            self.scale = nn.Parameter(torch.ones(8))
            self.shift = nn.Parameter(torch.zeros(8))
            self.out = nn.Linear(8, 1)

        def forward(self, t):
            return self.out(torch.sin(self.inp(t) * self.scale + self.shift))

    return [TinyMLP(), TinyModulated()]


def check_strategy_constructs(s: Subject):
    """The strategy can be built for a tiny target network: ``cls(target)`` (see docs/plugins.md)."""
    _seeded()
    built, refused, errors = [], [], []
    for target in tiny_targets():
        label = type(target).__name__
        if not _supports(s.obj, target):
            refused.append(label)
            continue
        try:
            strategy = _construct_strategy(s.obj, target)
        except AssertionError:
            raise
        except Exception as exc:
            errors.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        _check_strategy_instance(s.label, strategy)
        built.append(label)
    if errors:
        raise AssertionError("construction failed for " + "; ".join(errors))
    if not built:
        raise AssertionError(f"{s.label}.supports() refused every tiny target network ({', '.join(refused)})")
    return "built for " + ", ".join(built)


def check_strategy_drives_target(s: Subject):
    """A tiny hypernetwork with this strategy yields ``[B, *shape]`` parameters, finite output, and
    gradients for the head and every learned parameter of the strategy."""
    driven = []
    for target in tiny_targets():
        if not _supports(s.obj, target):
            continue
        _seeded()
        _drive(f"{s.label} on {type(target).__name__}", _construct_strategy(s.obj, target), target)
        driven.append(type(target).__name__)
    return "drove " + ", ".join(driven)


STRATEGY_CHECKS: list[Callable] = [check_strategy_constructs, check_strategy_drives_target]


# -- presets ---------------------------------------------------------------------------------------
def check_preset_resolves(s: Subject):
    """The preset passes ``hyperaudio.config.resolve`` and its target network builds and runs."""
    torch = _torch()
    from hyperaudio.config import build_target, resolve
    from hyperaudio.errors import HyperaudioError

    preset = s.obj
    if not isinstance(preset, dict):
        raise AssertionError(f"a preset is a dict (parsed TOML), got {type(preset).__name__}")
    try:
        config = resolve(copy.deepcopy(preset))
        module = build_target(config)
    except HyperaudioError as exc:
        raise AssertionError(str(exc)) from None
    with torch.no_grad():
        y = module(_time(16))
    if y.shape[0] != 16 or not torch.isfinite(y).all():
        raise AssertionError(f"its target network returned {list(y.shape)} or non-finite values for t [16, 1]")
    return f"target {config['target']['name']}"


PRESET_CHECKS: list[Callable] = [check_preset_resolves]

CHECKS = {
    "target_networks": TARGET_CHECKS,
    "encoders": ENCODER_CHECKS,
    "strategies": STRATEGY_CHECKS,
    "presets": PRESET_CHECKS,
}


def check_name(fn: Callable) -> str:
    return fn.__name__[len("check_"):]


def run_one(subject: Subject, fn: Callable) -> CheckResult:
    start = time.perf_counter()
    try:
        note = fn(subject)
        status, message = "passed", note or ""
    except SkipCheck as exc:
        status, message = "skipped", str(exc)
    except Exception as exc:  # noqa: BLE001 - a conformance failure may be any exception
        status = "failed"
        message = str(exc) if isinstance(exc, AssertionError) else f"{type(exc).__name__}: {exc}"
        message = message or type(exc).__name__
    return CheckResult(subject.kind, subject.label, check_name(fn), status, message, time.perf_counter() - start)
