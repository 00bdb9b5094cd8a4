"""Installing, checking, listing and removing plugins; the user's own presets.

Everything here that does not need a plugin's code reads package *metadata* only (entry points,
versions, ``direct_url.json``) and never imports a plugin, so ``plugin uninstall``, ``plugin
freeze`` and the listing of installed distributions keep working whatever an installed plugin does
on import. Where plugin code must run (``plugin list`` statuses, conformance checks) it runs in a
child interpreter: a plugin that segfaults, calls ``os._exit`` or hangs while loading is reported
as broken instead of taking the command down with it.

Installation goes through hyperaudio's own interpreter (``sys.executable -m pip``), or
``uv pip --python sys.executable`` where pip is absent. After installing, the new distribution's
``hyperaudio`` entry points are loaded and the conformance kit (``hyperaudio.testing``) runs on
everything it registers. A plugin that fails to load, registers nothing, or fails a check is
**refused and rolled back**: uninstalled if it was new, or the previously installed version put
back if it was an upgrade (``--keep`` keeps it installed anyway, for plugin authors). Dependencies
that pip pulled in for it are left in place (pip records no ownership to undo them safely).

User presets: every ``*.toml`` in ``<config dir>/presets`` is registered as a preset named after
the file, by a source called ``user`` that behaves like a plugin (all-or-nothing, clash renaming).
The config dir is ``$HYPERAUDIO_CONFIG_DIR`` when set, else ``platformdirs.user_config_dir("hyperaudio")``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import HyperaudioError
from .hookspecs import hookimpl

GROUP = "hyperaudio"  # entry-point group (hyperaudio.plugins.ENTRY_POINT_GROUP)
BUILTIN = "hyperaudio"
USER_SOURCE = "user"
CONFIG_ENV = "HYPERAUDIO_CONFIG_DIR"
ALLOWLIST_ENV = "HYPERAUDIO_LOAD_PLUGINS"
CHILD_TIMEOUT = float(os.environ.get("HYPERAUDIO_PLUGIN_TIMEOUT", "600"))


class PluginCommandError(HyperaudioError):
    """A plugin command cannot do what was asked (unknown plugin, installer failure...)."""


class PluginRefused(HyperaudioError):
    """An installed distribution failed to load or failed the conformance checks."""


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name: ``Hyperaudio_GridINR`` -> ``hyperaudio-gridinr``."""
    return re.sub(r"[-_.]+", "-", name).lower()


# -- user presets ---------------------------------------------------------------------------------
def config_dir() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("hyperaudio"))


def user_presets_dir() -> Path:
    return config_dir() / "presets"


class UserPresets:
    """The ``user`` preset source: every ``*.toml`` of a folder, named after the file."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.__name__ = f"user presets ({self.folder})"

    @hookimpl
    def register_presets(self, register):
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*.toml")):
            register(path.stem, str(path), description=f"user preset {path}")


def register_user_presets(registry) -> None:
    """Add the ``user`` source to ``registry`` (idempotent: does nothing if it is there already)."""
    if USER_SOURCE in registry.plugins:
        return
    folder = user_presets_dir()
    info = registry.register_plugin(UserPresets(folder), dist=USER_SOURCE, version="-")
    info.module = str(folder)


def registry_with_user_presets():
    """The process-wide registry, with the ``user`` preset source registered."""
    from .plugins import get_registry

    registry = get_registry()
    register_user_presets(registry)
    return registry


# -- metadata (never imports plugin code) ---------------------------------------------------------
@dataclass
class InstalledPlugin:
    name: str
    version: str
    entry_points: list[tuple[str, str]]
    location: str
    requirement: str  # a pip requirement line that reinstalls exactly this (like pip freeze)
    editable: bool = False


def _dist_name(dist: importlib.metadata.Distribution) -> str | None:
    try:
        return dist.metadata["Name"]
    except Exception:  # a damaged dist-info
        return None


def _direct_url(dist: importlib.metadata.Distribution) -> dict | None:
    try:
        text = dist.read_text("direct_url.json")
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def _file_url_to_path(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    return urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else url


def freeze_line(dist: importlib.metadata.Distribution) -> str:
    """The line ``pip freeze`` would print: ``name==1.0``, ``name @ URL`` or ``-e PATH``."""
    name, version = _dist_name(dist) or "?", dist.version
    info = _direct_url(dist)
    if not info or "url" not in info:
        return f"{name}=={version}"
    url = info["url"]
    if info.get("dir_info", {}).get("editable"):
        return f"-e {_file_url_to_path(url)}"
    vcs = info.get("vcs_info")
    if vcs:
        ref = vcs.get("commit_id") or vcs.get("requested_revision")
        return f"{name} @ {vcs.get('vcs', 'git')}+{url}" + (f"@{ref}" if ref else "")
    return f"{name} @ {url}"


def _location(dist) -> str:
    try:
        return str(Path(dist.locate_file("")).resolve())
    except Exception:
        return ""


def distributions() -> dict[str, importlib.metadata.Distribution]:
    """Installed distributions by canonical name (the first one on ``sys.path`` wins, as for imports)."""
    importlib.invalidate_caches()
    out: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions():
        name = _dist_name(dist)
        if name and canonical(name) not in out:
            out[canonical(name)] = dist
    return out


def _plugin_entry_points(dist) -> list[tuple[str, str]]:
    try:
        return [(ep.name, ep.value) for ep in dist.entry_points if ep.group == GROUP]
    except Exception:
        return []


def installed_plugins() -> list[InstalledPlugin]:
    """Every installed distribution with ``hyperaudio`` entry points, except hyperaudio itself."""
    plugins = []
    for key, dist in sorted(distributions().items()):
        eps = _plugin_entry_points(dist)
        if not eps or key == BUILTIN:
            continue
        direct = _direct_url(dist) or {}
        editable = bool(direct.get("dir_info", {}).get("editable"))
        location = _file_url_to_path(direct["url"]) if editable and "url" in direct else _location(dist)
        plugins.append(InstalledPlugin(_dist_name(dist), dist.version, eps, location, freeze_line(dist), editable))
    return plugins


def find_plugin(name: str) -> InstalledPlugin | None:
    """An installed plugin by distribution name, import name or entry-point name."""
    want = canonical(name)
    for plugin in installed_plugins():
        if canonical(plugin.name) == want or any(canonical(ep) == want for ep, _ in plugin.entry_points):
            return plugin
    return None


def allowed(name: str, entry_point_names=()) -> bool:
    """Whether ``HYPERAUDIO_LOAD_PLUGINS`` lets this distribution load (the rule of plugins.py)."""
    allow = os.environ.get(ALLOWLIST_ENV)
    if allow is None:
        return True
    names = {a.strip().lower() for a in allow.split(",") if a.strip()}
    return name.lower() in names or any(ep.lower() in names for ep in entry_point_names)


def freeze() -> list[str]:
    """Requirement lines of every installed plugin distribution (``plugin freeze``)."""
    return [p.requirement for p in installed_plugins()]


# -- the installer --------------------------------------------------------------------------------
def _has_pip() -> bool:
    return importlib.util.find_spec("pip") is not None


# pip option -> uv pip option, where they differ
_UV_OPTIONS = {"--force-reinstall": "--reinstall", "-y": None, "--disable-pip-version-check": None}


def installer_command(action: str, args: list[str], python: str | None = None) -> list[str]:
    """``[python, -m, pip, action, ...args]``, or the ``uv pip`` equivalent when pip is absent."""
    python = python or sys.executable
    if _has_pip():
        return [python, "-m", "pip", action, "--disable-pip-version-check", *args]
    uv = shutil.which("uv")
    if uv is None:
        raise PluginCommandError(
            f"neither pip nor uv is available for {python}: run '{python} -m ensurepip' or install uv")
    translated = []
    for a in args:
        if a in _UV_OPTIONS:
            if _UV_OPTIONS[a]:
                translated.append(_UV_OPTIONS[a])
        else:
            translated.append(a)
    return [uv, "pip", action, "--python", python, *translated]


def _run_installer(cmd: list[str], log: Callable[[str], None], verbose: bool) -> None:
    log("$ " + " ".join(cmd))
    if verbose:
        proc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, stdin=subprocess.DEVNULL)
        output = ""
    else:
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        output = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        tail = [line for line in output.strip().splitlines() if line.strip()][-15:]
        detail = ("\n" + "\n".join("    " + line for line in tail)) if tail else ""
        label = f"pip {cmd[3]}" if cmd[1:3] == ["-m", "pip"] else f"uv pip {cmd[2]}"
        raise PluginCommandError(f"{label} failed (exit status {proc.returncode}){detail}")


_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
_ARCHIVES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz")


def _project_name(directory: Path) -> str | None:
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        try:
            name = tomllib.loads(pyproject.read_text()).get("project", {}).get("name")
            if isinstance(name, str):
                return name
        except (OSError, tomllib.TOMLDecodeError):
            pass
    setup_cfg = directory / "setup.cfg"
    if setup_cfg.is_file():
        match = re.search(r"^\s*name\s*=\s*(\S+)", setup_cfg.read_text(errors="replace"), re.M)
        if match:
            return match.group(1)
    return None


def parse_spec(spec: str, editable: bool = False) -> tuple[list[str], str | None]:
    """Installer arguments for ``spec`` (a name/requirement, a project folder or an archive) and the
    distribution name it should install, when it can be told without installing."""
    path = Path(spec).expanduser()
    looks_like_path = (os.sep in spec or spec.startswith(".") or spec.endswith(_ARCHIVES)) and "://" not in spec \
        and " @ " not in spec
    if path.exists():
        path = path.resolve()
        if path.is_dir():
            if not ((path / "pyproject.toml").is_file() or (path / "setup.py").is_file()):
                raise PluginCommandError(f"{spec}: not a Python project (no pyproject.toml or setup.py)")
            return (["-e", str(path)] if editable else [str(path)]), _project_name(path)
        if editable:
            raise PluginCommandError(f"-e needs a project folder, not the file {spec}")
        if not path.name.endswith(_ARCHIVES):
            raise PluginCommandError(f"{spec}: not a wheel, an sdist or a project folder")
        stem = path.name
        for ext in _ARCHIVES:
            if stem.endswith(ext):
                stem = stem[: -len(ext)]
        name = stem.split("-")[0] if path.name.endswith(".whl") else stem.rsplit("-", 1)[0]
        return [str(path)], name
    if looks_like_path:
        raise PluginCommandError(f"{spec}: no such file or folder")
    if editable:
        raise PluginCommandError("-e installs a local project folder; give a path, e.g. ./my-plugin")
    match = _REQ_NAME.match(spec)
    if not match:
        raise PluginCommandError(f"{spec!r} is not a package name, requirement, or path")
    return [spec], match.group(1)


# -- running plugin code in a child interpreter ---------------------------------------------------
def _child(args: list[str], env: dict | None = None, timeout: float | None = None) -> tuple[object, str]:
    """Run ``python -m <args> --json-file F``; returns (parsed JSON or None, diagnostic text)."""
    fd, out = tempfile.mkstemp(prefix="hyperaudio-", suffix=".json")
    os.close(fd)
    try:
        try:
            # -P: do not put the working directory first on sys.path (a folder there named like a
            # module must not shadow the installed code under test).
            safe = ["-P"] if sys.version_info >= (3, 11) else []
            proc = subprocess.run([sys.executable, *safe, "-m", *args, "--json-file", out], capture_output=True,
                                  text=True, env=env, timeout=timeout or CHILD_TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout or CHILD_TIMEOUT:g} s"
        try:
            with open(out) as f:
                text = f.read()
            data = json.loads(text) if text.strip() else None
        except (OSError, ValueError):
            data = None
        if data is None:
            tail = [line for line in (proc.stderr or "").strip().splitlines() if line.strip()][-5:]
            how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
            return None, f"the interpreter died while loading plugins ({how})" + (
                ": " + " | ".join(tail) if tail else "")
        return data, ""
    finally:
        try:
            os.unlink(out)
        except OSError:
            pass


def _env_allowing(dists: list[str]) -> dict:
    """The current environment with the plugin allowlist set to exactly ``dists``.

    A plugin is checked on its own (plus the plugins it depends on): another installed plugin,
    broken or clashing, cannot change its verdict.
    """
    return {**os.environ, ALLOWLIST_ENV: ",".join(dists)}


def _plugin_requirements(dist_name: str) -> list[str]:
    """Installed plugin distributions that ``dist_name`` depends on (they must load with it)."""
    dists = distributions()
    dist = dists.get(canonical(dist_name))
    out = []
    for req in (dist.requires or []) if dist else []:
        match = _REQ_NAME.match(req)
        dep = dists.get(canonical(match.group(1))) if match else None
        if dep is not None and _plugin_entry_points(dep) and canonical(match.group(1)) != BUILTIN:
            out.append(_dist_name(dep))
    return out


def run_conformance(dist_name: str, timeout: float | None = None) -> dict:
    """The conformance report of an installed plugin, computed in a child interpreter."""
    env = _env_allowing([dist_name, *_plugin_requirements(dist_name)])
    data, problem = _child(["hyperaudio.testing", dist_name], env=env, timeout=timeout)
    if data is None:
        result = {"kind": "plugin", "component": dist_name, "check": "loads", "status": "failed",
                  "message": problem, "seconds": 0.0}
        return {"dist": dist_name, "version": None, "status": "broken", "error": problem, "registered": {},
                "messages": [], "results": [result]}
    return data[0]


def probe() -> list[dict]:
    """Load state of every plugin source, as ``PluginInfo.as_dict()`` plus ``source``.

    Runs in a child interpreter; if loading everything at once kills it, each enabled distribution
    is loaded on its own to find the culprit(s).
    """
    data, problem = _child(["hyperaudio.plugin_manager", "probe"])
    if data is not None:
        return data
    rows: dict[str, dict] = {}
    for plugin in installed_plugins():
        if not allowed(plugin.name, [ep for ep, _ in plugin.entry_points]):
            continue
        one, why = _child(["hyperaudio.plugin_manager", "probe"], env={**os.environ, ALLOWLIST_ENV: plugin.name})
        for row in one or []:  # built-in and user rows come along with each successful probe
            if row["source"] != "distribution":
                rows.setdefault(row["name"], row)
        found = [r for r in one or [] if canonical(r["name"]) == canonical(plugin.name)]
        if found:
            rows[plugin.name] = found[0]
        else:
            rows[plugin.name] = {"name": plugin.name, "version": plugin.version, "module": plugin.entry_points[0][1],
                                 "status": "broken", "error": why or problem, "registered": {}, "messages": [],
                                 "source": "distribution"}
    if BUILTIN not in rows:
        base, base_problem = _child(["hyperaudio.plugin_manager", "probe"], env={**os.environ, ALLOWLIST_ENV: ""})
        for row in base or []:
            rows.setdefault(row["name"], row)
        if base is None:
            rows[BUILTIN] = {"name": BUILTIN, "version": "?", "module": "hyperaudio.default_plugins",
                             "status": "broken", "error": base_problem, "registered": {}, "messages": [],
                             "source": "builtin"}
    return list(rows.values())


def _probe_here() -> list[dict]:
    from .plugins import get_registry

    registry = get_registry()
    register_user_presets(registry)
    rows = []
    for info in registry.plugins.values():
        row = info.as_dict()
        row["source"] = "builtin" if info.name == BUILTIN else "user" if info.name == USER_SOURCE else "distribution"
        rows.append(row)
    return rows


def plugin_rows(include_builtin: bool = False) -> list[dict]:
    """Rows for ``plugin list``: loaded sources, plus installed distributions the allowlist keeps out."""
    loaded = probe()
    by_name = {canonical(r["name"]): r for r in loaded}
    rows = []
    installed = {canonical(p.name): p for p in installed_plugins()}
    for row in loaded:
        if row["source"] == "builtin" and not include_builtin:
            continue
        if row["source"] == "user" and not any(row["registered"].values()) and row["status"] == "ok":
            continue  # no user presets: nothing to show
        plugin = installed.get(canonical(row["name"]))
        row["requirement"] = plugin.requirement if plugin else None
        row["location"] = plugin.location if plugin else row.get("module")
        rows.append(row)
    for key, plugin in installed.items():
        if key in by_name:
            continue
        if allowed(plugin.name, [ep for ep, _ in plugin.entry_points]):
            reason = "installed but not loaded (its entry point was not found at load time)"
            status = "broken"
        else:
            reason = f"not in {ALLOWLIST_ENV}={os.environ.get(ALLOWLIST_ENV)!r}"
            status = "disabled"
        rows.append({"name": plugin.name, "version": plugin.version, "module": plugin.entry_points[0][1],
                     "status": status, "error": reason, "registered": {}, "messages": [],
                     "source": "distribution", "requirement": plugin.requirement, "location": plugin.location})
    order = {"builtin": 0, "distribution": 1, "user": 2}
    rows.sort(key=lambda r: (order.get(r["source"], 1), canonical(r["name"])))
    return rows


# -- install / uninstall --------------------------------------------------------------------------
@dataclass
class InstallResult:
    spec: str
    dist: str = ""
    version: str = ""
    action: str = ""  # installed, upgraded, reinstalled, unchanged
    previous: str | None = None  # the version that was installed before, if any
    report: dict = field(default_factory=dict)  # conformance report (hyperaudio.testing.plugin_report)
    accepted: bool = False
    refusal: str = ""  # why it was refused
    rollback: str = ""  # what was done about it

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _snapshot() -> dict[str, tuple[str, str, str]]:
    return {k: (_dist_name(d), d.version, freeze_line(d)) for k, d in distributions().items()}


def install(spec: str, upgrade: bool = False, editable: bool = False, no_build_isolation: bool = False,
            no_deps: bool = False, keep: bool = False, verbose: bool = False,
            log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> InstallResult:
    """Install a plugin into this interpreter's environment, check it, and roll back if it fails."""
    args, expected = parse_spec(spec, editable)
    if expected and canonical(expected) == BUILTIN:
        raise PluginCommandError("hyperaudio itself is not a plugin; upgrade it with pip")
    flags = (["--upgrade"] if upgrade else []) + (["--no-build-isolation"] if no_build_isolation else []) \
        + (["--no-deps"] if no_deps else [])
    result = InstallResult(spec)
    before = _snapshot()
    _run_installer(installer_command("install", flags + args), log, verbose)
    after = _snapshot()
    changed = [k for k, v in after.items() if before.get(k) != v]
    if expected and canonical(expected) in after:
        key = canonical(expected)
    else:
        candidates = [k for k in changed if _plugin_entry_points(distributions()[k])]
        if len(candidates) != 1:
            what = "no new distribution" if not candidates else f"several: {', '.join(candidates)}"
            raise PluginCommandError(f"installed {spec}, but cannot tell which distribution is the plugin ({what})")
        key = candidates[0]
    name, version, _ = after[key]
    result.dist, result.version = name, version
    result.previous = before[key][1] if key in before else None
    if key not in before:
        result.action = "installed"
    elif before[key] == after[key]:
        result.action = "unchanged"
    elif before[key][1] != version:
        result.action = "upgraded"
    else:
        result.action = "reinstalled"
    dist = distributions()[key]
    if not _plugin_entry_points(dist):
        result.refusal = f"{name} is not a hyperaudio plugin: it declares no entry points in the '{GROUP}' group"
    else:
        log(f"checking {name} {version} with the conformance kit ...")
        result.report = run_conformance(name)
        failed = [r for r in result.report["results"] if r["status"] == "failed"]
        if failed:
            result.refusal = (f"{name} {version} failed {len(failed)} conformance check(s)" if result.report.get(
                "status") == "ok" else f"{name} {version} does not load: {result.report.get('error')}")
    result.accepted = not result.refusal
    if result.refusal and result.action != "unchanged":
        if keep:
            result.rollback = "kept installed (--keep)"
        else:
            result.rollback = _roll_back(key, before.get(key), log, verbose)
    elif result.refusal:
        result.rollback = "it was already installed at this version from this source, so it was not uninstalled"
    return result


def _roll_back(key: str, previous: tuple[str, str, str] | None, log, verbose) -> str:
    name = key
    try:
        if previous is None:
            _run_installer(installer_command("uninstall", ["-y", name]), log, verbose)
            return "uninstalled again"
        line = previous[2]
        args = ["-e", line[3:]] if line.startswith("-e ") else [line]
        _run_installer(installer_command("install", ["--force-reinstall", "--no-deps", *args]), log, verbose)
        return f"restored the previous version ({previous[1]})"
    except PluginCommandError as exc:
        return f"rolling back failed, fix by hand: {exc}"


def uninstall(name: str, log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
              verbose: bool = False) -> InstalledPlugin:
    """Uninstall an installed plugin distribution (metadata only: works however broken it is)."""
    if canonical(name) == BUILTIN:
        raise PluginCommandError("hyperaudio itself is not a plugin; remove it with pip")
    if canonical(name) == USER_SOURCE:
        raise PluginCommandError(f"'user' is your own presets folder ({user_presets_dir()}); delete files there")
    plugin = find_plugin(name)
    if plugin is None:
        dist = distributions().get(canonical(name))
        if dist is not None:
            raise PluginCommandError(f"{_dist_name(dist)} is installed but is not a hyperaudio plugin "
                                     "(no 'hyperaudio' entry points); remove it with pip if you must")
        known = ", ".join(p.name for p in installed_plugins()) or "none"
        raise PluginCommandError(f"no installed plugin {name!r} (installed plugins: {known})")
    _run_installer(installer_command("uninstall", ["-y", plugin.name]), log, verbose)
    return plugin


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hyperaudio.plugin_manager")
    parser.add_argument("action", choices=["probe"])
    parser.add_argument("--json-file", required=True)
    args = parser.parse_args(argv)
    rows = _probe_here()
    with open(args.json_file, "w") as f:
        json.dump(rows, f)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
