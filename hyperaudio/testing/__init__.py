"""The hyperaudio conformance kit: check that a plugin's components honour hyperaudio's contracts.

Like scikit-learn's ``check_estimator``, plugin authors call it from their own tests::

    from hyperaudio.testing import check_target_network, parametrize_with_checks

    def test_all_at_once():
        check_target_network(MyINR, params={"width": 16})   # raises ConformanceError listing failures

    @parametrize_with_checks(target_networks=[(MyINR, {"width": 16})], encoders=[MyEncoder])
    def test_conformance(check):                            # one pytest test per check
        check()

``check_plugin("my-distribution")`` runs every check on everything an *installed* distribution
registers through its ``hyperaudio`` entry points; ``hyperaudio plugin install`` runs exactly that
and refuses a plugin that fails. The pytest plugin (``hyperaudio.testing.pytest_plugin``, loaded
automatically through the ``pytest11`` entry point) adds ``--hyperaudio-conformance DIST`` and a few
fixtures. ``python -m hyperaudio.testing DIST`` runs the checks from a shell.

What is checked (docs/plugins.md has the full contracts):

* target networks: keyword constructor with TOML-friendly defaults, config resolution, forward
  shapes and dtypes, point-wise evaluation, parameter declarations, external parameters
  (``call_batched``) equal own parameters, gradients, ``.hya`` round trip, rendering at several
  rates, ONNX export (skipped where ``hyperaudio.onnx_export`` is unavailable), and construction
  with every registered hypernetwork strategy (skipped while none is registered);
* encoders: ``[B, T]`` waveform -> finite ``[B, ...]`` latent, batch independence, gradients;
* strategies: buildable as ``cls(target)`` for a tiny target network;
* presets: pass ``hyperaudio.config.resolve`` and their target network builds and runs.

Components are built with ``params`` when given, else with the class attribute
``conformance_params`` (a dict of small hyperparameters) when it has one, else with defaults.
Encoders get ``conformance_samples`` samples per waveform (default 4096).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, Callable, Iterable

from ._checks import (
    CHECKS,
    ConformanceError,
    CheckResult,
    SkipCheck,
    Subject,
    check_name,
    conformance_params,
    run_one,
    tiny_targets,
)

__all__ = [
    "CheckResult",
    "ConformanceError",
    "SkipCheck",
    "check_encoder",
    "check_plugin",
    "check_preset",
    "check_strategy",
    "check_target_network",
    "checks_for",
    "parametrize_with_checks",
    "plugin_report",
    "run_checks",
    "tiny_targets",
]

KINDS = tuple(CHECKS)


def _kind(kind: str) -> str:
    from ._checks import KIND_ALIASES

    try:
        return KIND_ALIASES[kind]
    except KeyError:
        raise ValueError(f"unknown component kind {kind!r}; use one of {', '.join(KINDS)}") from None


def _subject(kind: str, obj: Any, params: dict | None = None, name: str | None = None) -> Subject:
    kind = _kind(kind)
    if kind == "presets":
        if isinstance(obj, (str, Path)):
            from hyperaudio.config import read_preset_file

            path = Path(obj)
            name = name or path.stem
            obj = read_preset_file(path)
        return Subject(kind, obj, name or obj.get("preset", {}).get("name") or None, {})
    if not isinstance(obj, type):
        raise TypeError(f"pass the class itself, not {obj!r}")
    return Subject(kind, obj, name, conformance_params(obj, params) if kind != "strategies" else {})


def checks_for(kind: str, obj: Any, params: dict | None = None, name: str | None = None
               ) -> list[tuple[str, Callable[[], str | None]]]:
    """``[(check name, zero-argument callable)]`` for one component; each raises on failure."""
    subject = _subject(kind, obj, params, name)
    return [(check_name(fn), _Bound(subject, fn)) for fn in CHECKS[subject.kind]]


def run_checks(kind: str, obj: Any, params: dict | None = None, name: str | None = None) -> list[CheckResult]:
    """Run every check for one component and return the results (never raises for a failure)."""
    subject = _subject(kind, obj, params, name)
    return [run_one(subject, fn) for fn in CHECKS[subject.kind]]


def _raise_on_failure(results: list[CheckResult]) -> list[CheckResult]:
    if any(r.status == "failed" for r in results):
        raise ConformanceError(results)
    return results


def check_target_network(cls: type, params: dict | None = None, name: str | None = None) -> list[CheckResult]:
    """Run all target-network checks; raise :class:`ConformanceError` if any fails."""
    return _raise_on_failure(run_checks("target_networks", cls, params, name))


def check_encoder(cls: type, params: dict | None = None, name: str | None = None) -> list[CheckResult]:
    """Run all encoder checks; raise :class:`ConformanceError` if any fails."""
    return _raise_on_failure(run_checks("encoders", cls, params, name))


def check_strategy(cls: type, name: str | None = None) -> list[CheckResult]:
    """Run all strategy checks; raise :class:`ConformanceError` if any fails."""
    return _raise_on_failure(run_checks("strategies", cls, None, name))


def check_preset(preset: dict | str | Path, name: str | None = None) -> list[CheckResult]:
    """Check a preset (a dict, or a TOML path); raise :class:`ConformanceError` if it does not resolve."""
    return _raise_on_failure(run_checks("presets", preset, None, name))


class _Bound:
    """One check bound to one component; under pytest a skipped check becomes ``pytest.skip``."""

    def __init__(self, subject: Subject, fn: Callable):
        self.subject, self.fn = subject, fn

    def __call__(self):
        try:
            return self.fn(self.subject)
        except SkipCheck as exc:
            import sys

            if "pytest" in sys.modules:
                import pytest

                pytest.skip(str(exc))
            raise

    def __repr__(self) -> str:
        return f"<{self.subject.label}: {check_name(self.fn)}>"


def _items(kind: str, items: Iterable) -> list[Subject]:
    subjects = []
    if isinstance(items, dict):  # presets: {name: dict or path}
        return [_subject(kind, obj, name=name) for name, obj in items.items()]
    for item in items:
        if isinstance(item, tuple):
            obj, params = item
            subjects.append(_subject(kind, obj, params))
        else:
            subjects.append(_subject(kind, item))
    return subjects


def parametrize_with_checks(*, target_networks: Iterable = (), encoders: Iterable = (), strategies: Iterable = (),
                            presets: Iterable | dict = ()):
    """A ``pytest.mark.parametrize("check", ...)`` decorator with one test per check and component.

    Items are classes or ``(class, params)`` tuples; ``presets`` takes dicts, TOML paths, or a
    ``{name: dict or path}`` mapping. The decorated test receives ``check``; call it.
    """
    import pytest

    params = []
    for kind, items in (("target_networks", target_networks), ("encoders", encoders),
                        ("strategies", strategies), ("presets", presets)):
        for subject in _items(kind, items):
            for fn in CHECKS[subject.kind]:
                params.append(pytest.param(_Bound(subject, fn), id=f"{subject.label}-{check_name(fn)}"))
    if not params:
        raise ValueError("parametrize_with_checks: no components given")
    return pytest.mark.parametrize("check", params)


# -- installed plugins ----------------------------------------------------------------------------
def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _find_plugin(registry, dist: str):
    want = _canonical(dist)
    for name, info in registry.plugins.items():
        if _canonical(name) == want:
            return info
    return None


@contextlib.contextmanager
def _as_process_registry(registry):
    """Run checks against ``registry``: config resolution and ``.hya`` loading look names up in the
    process-wide registry, so a registry passed in explicitly stands in for it meanwhile."""
    from hyperaudio.plugins import use_registry

    if registry is None:
        yield
        return
    with use_registry(registry):
        yield


def plugin_report(dist: str, registry=None) -> dict:
    """Load state and conformance results for everything installed distribution ``dist`` registers.

    Uses the process-wide registry (loaded under ``HYPERAUDIO_LOAD_PLUGINS`` as usual) unless one
    is given. Returns ``{"dist", "version", "status", "error", "registered", "messages", "results"}``
    where ``results`` are :class:`CheckResult` dicts; nothing is raised for a failing plugin.
    """
    import os

    from hyperaudio.plugins import get_registry

    registry = registry if registry is not None else get_registry()
    info = _find_plugin(registry, dist)
    if info is None:
        allow = os.environ.get("HYPERAUDIO_LOAD_PLUGINS")
        why = (f"it is not in HYPERAUDIO_LOAD_PLUGINS={allow!r}" if allow is not None
               else "no installed distribution registers it through the 'hyperaudio' entry-point group")
        load = CheckResult("plugin", dist, "loads", "failed", f"plugin {dist} was not loaded: {why}")
        return {"dist": dist, "version": None, "status": "missing", "error": load.message, "registered": {},
                "messages": [], "results": [load.as_dict()]}
    report = info.as_dict()
    report["dist"] = report.pop("name")
    results: list[CheckResult] = []
    if info.status != "ok":
        results.append(CheckResult("plugin", info.name, "loads", "failed", info.error or "broken"))
    elif not info.registered:
        results.append(CheckResult("plugin", info.name, "loads", "failed",
                                   "the plugin loaded but registered nothing"))
    else:
        results.append(CheckResult("plugin", info.name, "loads", "passed",
                                   f"registered {len(info.registered)} component(s)"))
        with _as_process_registry(registry):
            for kind, name in info.registered:
                entry = registry.entries[kind][name]
                subject = _subject(kind, entry.obj, None, name)
                results.extend(run_one(subject, fn) for fn in CHECKS[kind])
    report["results"] = [r.as_dict() for r in results]
    return report


def check_plugin(dist: str, registry=None) -> list[CheckResult]:
    """Run the kit on an installed plugin distribution; raise :class:`ConformanceError` on failure."""
    report = plugin_report(dist, registry)
    return _raise_on_failure([CheckResult(**{**r}) for r in report["results"]])


def summarize(results: list[dict]) -> str:
    """``"12 passed, 1 skipped"`` for a list of result dicts."""
    counts = {s: sum(r["status"] == s for r in results) for s in ("passed", "failed", "skipped")}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no checks"


def format_report(report: dict, verbose: bool = False) -> str:
    """Human-readable lines for a :func:`plugin_report`: failures always, the rest when ``verbose``."""
    lines = []
    for r in report["results"]:
        if r["status"] == "passed" and not verbose:
            continue
        if r["status"] == "skipped" and not verbose:
            lines.append(f"  skipped  {r['component']} [{r['check']}]: {r['message']}")
            continue
        mark = {"passed": "ok", "failed": "FAILED", "skipped": "skipped"}[r["status"]]
        text = f"  {mark:<8} {r['component']} [{r['check']}]"
        if r["message"]:
            first, *rest = r["message"].splitlines()
            text += f": {first}" + "".join(f"\n           {line}" for line in rest)
        lines.append(text)
    lines.append(f"conformance: {summarize(report['results'])}")
    return "\n".join(lines)
