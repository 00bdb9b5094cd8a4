"""Plugin loading and the component registry.

Built-in components and third-party plugins go through the same hooks (``hyperaudio.hookspecs``).
Each plugin is loaded and called in isolation: a plugin that fails to import, raises inside a
hook, or registers something invalid is recorded as *broken* with its reason and contributes
nothing, while everything else keeps working.

Environment:

``HYPERAUDIO_LOAD_PLUGINS``  comma-separated allowlist of third-party distributions (or entry-point
                             names) to load. Unset: load all. Empty: load none (the test suite uses
                             this to keep installed plugins out).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import re
import threading
import tomllib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pluggy

from . import hookspecs

KINDS = {
    "target_networks": "register_target_networks",
    "encoders": "register_encoders",
    "strategies": "register_strategies",
    "presets": "register_presets",
}
# Singular names used in messages and on the command line.
KIND_LABELS = {"target_networks": "target network", "encoders": "encoder", "strategies": "strategy", "presets": "preset"}

BUILTIN_DIST = "hyperaudio"
DEFAULT_PLUGINS = ("hyperaudio.default_plugins.targets", "hyperaudio.default_plugins.encoders",
                   "hyperaudio.default_plugins.strategies", "hyperaudio.default_plugins.presets")
ENTRY_POINT_GROUP = "hyperaudio"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


class RegistryError(ValueError):
    """An unknown or invalid component was asked for."""


class PluginError(ValueError):
    """A plugin registered something invalid."""


@dataclass
class Entry:
    kind: str
    name: str
    obj: Any
    dist: str
    description: str = ""
    paper: str = ""


@dataclass
class PluginInfo:
    name: str
    version: str
    module: str
    status: str = "ok"  # "ok" or "broken"
    error: str | None = None
    registered: list[tuple[str, str]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "module": self.module,
            "status": self.status,
            "error": self.error,
            "registered": {k: [n for kk, n in self.registered if kk == k] for k in KINDS},
            "messages": list(self.messages),
        }


def _validate(kind: str, name: str, obj: Any) -> Any:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise PluginError(f"invalid {KIND_LABELS[kind]} name {name!r}: use lowercase letters, digits, '-', '_', '.'")
    if kind in ("target_networks", "encoders"):
        import torch

        if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
            raise PluginError(f"{KIND_LABELS[kind]} {name!r} must be a torch.nn.Module subclass, got {obj!r}")
    elif kind == "strategies":
        if not isinstance(obj, type):
            raise PluginError(f"strategy {name!r} must be a class, got {obj!r}")
    elif kind == "presets":
        if isinstance(obj, (str, Path)):
            path = Path(obj)
            try:
                obj = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise PluginError(f"preset {name!r}: cannot read {path}: {exc}") from exc
        if not isinstance(obj, dict):
            raise PluginError(f"preset {name!r} must be a dict or a TOML path, got {type(obj).__name__}")
        if not isinstance(obj.get("target"), dict) or not isinstance(obj["target"].get("name"), str):
            raise PluginError(f"preset {name!r} needs a [target] table with a 'name'")
    return obj


class Registry:
    """All registered components, keyed by kind and name, plus a record of every plugin."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        self.plugins: dict[str, PluginInfo] = {}
        self.pm = pluggy.PluginManager("hyperaudio")
        self.pm.add_hookspecs(hookspecs)

    # -- loading -------------------------------------------------------------------------------
    def load_default_plugins(self) -> None:
        for modname in DEFAULT_PLUGINS:
            self._load_module(modname, dist=BUILTIN_DIST, version=_version(BUILTIN_DIST))

    def load_entry_points(self) -> None:
        allow = os.environ.get("HYPERAUDIO_LOAD_PLUGINS")
        allowed = None if allow is None else {a.strip().lower() for a in allow.split(",") if a.strip()}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else ep.name
            if dist == BUILTIN_DIST:
                continue
            if allowed is not None and dist.lower() not in allowed and ep.name.lower() not in allowed:
                continue
            version = ep.dist.version if ep.dist is not None else "?"
            try:
                module = ep.load()
            except BaseException as exc:  # a plugin's import may raise anything, even SystemExit
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._broken(dist, version, ep.value, f"import failed: {type(exc).__name__}: {exc}", exc)
                continue
            self.register_plugin(module, dist=dist, version=version)

    def _load_module(self, modname: str, dist: str, version: str) -> None:
        try:
            module = importlib.import_module(modname)
        except Exception as exc:
            self._broken(dist, version, modname, f"import failed: {type(exc).__name__}: {exc}", exc)
            return
        self.register_plugin(module, dist=dist, version=version)

    def _broken(self, dist: str, version: str, module: str, reason: str, exc: BaseException | None = None) -> None:
        info = self.plugins.setdefault(dist, PluginInfo(dist, version, module))
        info.status, info.error = "broken", reason
        if exc is not None and os.environ.get("HYPERAUDIO_DEBUG"):
            traceback.print_exception(exc)

    def register_plugin(self, plugin: Any, dist: str, version: str = "?") -> PluginInfo:
        """Register one plugin object or module and run its hooks, all-or-nothing.

        Every entry the plugin registers is validated first; if any hook raises or any entry is
        invalid, the plugin is recorded as broken and none of its entries are kept.
        """
        modname = getattr(plugin, "__name__", type(plugin).__name__)
        info = self.plugins.get(dist)
        if info is None:  # a distribution may ship several plugin modules; they share one record
            info = self.plugins[dist] = PluginInfo(dist, version, modname)
        try:
            self.pm.register(plugin, name=f"{dist}:{modname}")
        except Exception as exc:  # unknown hook names, double registration
            self._broken(dist, version, modname, f"invalid plugin: {exc}", exc)
            return info
        staged: list[Entry] = []
        try:
            for kind, hookname in KINDS.items():
                for impl in getattr(self.pm.hook, hookname).get_hookimpls():
                    if impl.plugin is not plugin:
                        continue

                    def register(name, obj, description="", paper="", _kind=kind):
                        staged.append(Entry(_kind, name, _validate(_kind, name, obj), dist, description, paper))

                    impl.function(register=register)
        except Exception as exc:
            self.pm.unregister(plugin)
            self._broken(dist, version, modname, f"{type(exc).__name__}: {exc}", exc)
            return info
        seen: set[tuple[str, str]] = set()
        for entry in staged:
            key = (entry.kind, entry.name)
            if key in seen:
                info.messages.append(f"{KIND_LABELS[entry.kind]} {entry.name!r} registered twice; kept the first")
                continue
            seen.add(key)
            table = self.entries[entry.kind]
            if entry.name in table:
                other = table[entry.name].dist
                renamed = f"{dist}.{entry.name}"
                info.messages.append(
                    f"{KIND_LABELS[entry.kind]} {entry.name!r} is already provided by {other}; registered as {renamed!r}"
                )
                entry.name = renamed
            table[entry.name] = entry
            info.registered.append((entry.kind, entry.name))
        return info

    # -- queries -------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Entry:
        table = self.entries[kind]
        if name in table:
            return table[name]
        import difflib

        hint = difflib.get_close_matches(name, list(table), n=1)
        known = ", ".join(sorted(table)) or "none"
        more = f"; did you mean {hint[0]!r}?" if hint else f"; known: {known}"
        raise RegistryError(f"unknown {KIND_LABELS[kind]} {name!r}{more}")

    def broken(self) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.status == "broken"]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "dev"


_registry: Registry | None = None
_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use (built-ins, then entry points)."""
    global _registry
    with _lock:
        if _registry is None:
            registry = Registry()
            registry.load_default_plugins()
            registry.load_entry_points()
            from .plugin_manager import register_user_presets  # presets in the user's config folder

            register_user_presets(registry)
            _registry = registry
        return _registry


@contextlib.contextmanager
def use_registry(registry: Registry):
    """Make ``registry`` the process-wide one for the duration of a ``with`` block (config
    resolution and ``.hya`` loading look names up there), then restore the previous one."""
    global _registry
    with _lock:
        saved, _registry = _registry, registry
    try:
        yield registry
    finally:
        with _lock:
            _registry = saved


def reset_registry() -> None:
    """Forget the loaded registry so the next :func:`get_registry` loads plugins afresh."""
    global _registry
    with _lock:
        _registry = None


def target_network(name: str) -> Callable:
    return get_registry().get("target_networks", name).obj
