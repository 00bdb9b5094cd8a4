"""The ``plugin`` and ``presets`` commands of the ``hyperaudio`` command line.

``add_commands(subparsers)`` adds both parsers and returns ``{command: handler}``; each handler
takes the parsed arguments and returns an exit status, raising ``HyperaudioError`` for bad input
(the CLI prints it on one line and exits with status 2).

None of the ``plugin`` commands import a plugin in this process: a broken plugin cannot stop
``plugin uninstall`` (or anything else here) from working.
"""

from __future__ import annotations

import json
import sys

KIND_TITLES = {"target_networks": "target networks", "encoders": "encoders", "strategies": "strategies",
               "presets": "presets"}


def add_commands(sub) -> dict:
    p = sub.add_parser("plugin", help="install, check, list and remove plugins",
                       description="Manage hyperaudio plugins (third-party distributions registering components).")
    psub = p.add_subparsers(dest="plugin_command", required=True, metavar="ACTION")

    q = psub.add_parser("install", help="install a plugin, check it with the conformance kit, report what it adds",
                        description="Install NAME (from the package index) or PATH (a project folder, wheel or "
                        "sdist) into hyperaudio's own environment, load it and run the conformance checks. A plugin "
                        "that fails to load or fails a check is refused and uninstalled again (an upgrade is rolled "
                        "back to the previous version) unless --keep is given.")
    q.add_argument("spec", metavar="NAME|PATH", help="distribution name or requirement, or a local path")
    q.add_argument("-U", "--upgrade", action="store_true", help="upgrade if already installed")
    q.add_argument("-e", "--editable", action="store_true", help="editable install of a project folder")
    q.add_argument("--no-build-isolation", action="store_true",
                   help="build with the packages already installed (offline builds)")
    q.add_argument("--no-deps", action="store_true", help="do not install dependencies")
    q.add_argument("--keep", action="store_true", help="keep the plugin installed even if it fails the checks")
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    q.add_argument("-v", "--verbose", action="store_true", help="show the installer's output and every check")

    q = psub.add_parser("uninstall", help="uninstall a plugin distribution")
    q.add_argument("name", help="distribution (or entry-point) name, as 'plugin list' shows it")
    q.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    q.add_argument("-v", "--verbose", action="store_true", help="show the installer's output")

    q = psub.add_parser("list", help="installed plugins: version, what they register, ok/broken and why")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.add_argument("--all", action="store_true", help="include the built-in components")

    psub.add_parser("freeze", help="requirement lines of the installed plugin distributions (pip freeze style)")

    q = psub.add_parser("check", help="run the conformance kit on an installed plugin")
    q.add_argument("name", help="installed plugin distribution")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.add_argument("-v", "--verbose", action="store_true", help="list passed checks too")

    p = sub.add_parser("presets", help="list and show presets (built-in, plugin and user presets)")
    psub = p.add_subparsers(dest="presets_command", required=True, metavar="ACTION")
    q = psub.add_parser("list", help="every registered preset and where it comes from")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = psub.add_parser("show", help="print a preset as TOML")
    q.add_argument("name", help="preset name or .toml path")
    q.add_argument("--resolved", action="store_true", help="merged with the defaults and validated")
    psub.add_parser("dir", help="print the folder of your own presets (*.toml files there become presets)")
    return {"plugin": cmd_plugin, "presets": cmd_presets}


# -- plugin ---------------------------------------------------------------------------------------
def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _registered_text(registered: dict) -> str:
    parts = [f"{KIND_TITLES[k]}: {', '.join(v)}" for k, v in registered.items() if v]
    return "; ".join(parts) or "nothing registered"


def cmd_plugin(args) -> int:
    return {"install": _install, "uninstall": _uninstall, "list": _list, "freeze": _freeze,
            "check": _check}[args.plugin_command](args)


def _install(args) -> int:
    from . import plugin_manager as pm
    from .testing import format_report

    log = (lambda line: None) if args.json else _err
    result = pm.install(args.spec, upgrade=args.upgrade, editable=args.editable,
                        no_build_isolation=args.no_build_isolation, no_deps=args.no_deps, keep=args.keep,
                        verbose=args.verbose, log=log)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        note = {"upgraded": f" (was {result.previous})", "reinstalled": f" (was {result.previous} from elsewhere)",
                "unchanged": " (already installed: same version and source)"}.get(result.action, "")
        action = "installed" if result.action == "unchanged" else result.action
        print(f"{action} {result.dist} {result.version}{note} from {args.spec}")
        report = result.report
        for kind, names in (report.get("registered") or {}).items():
            for name in names:
                print(f"  {KIND_TITLES[kind][:-1] if kind != 'strategies' else 'strategy':<15} {name}")
        for message in report.get("messages") or []:
            print(f"  note: {message}")
        if report:
            print(format_report(report, verbose=args.verbose))
    if result.accepted:
        installed = pm.find_plugin(result.dist)
        if installed is not None and not pm.allowed(installed.name, [ep for ep, _ in installed.entry_points]):
            _err(f"note: {pm.ALLOWLIST_ENV} is set and does not name {result.dist}: it will not load until you "
                 "add it there")
        return 0
    if args.keep and result.action != "unchanged":
        _err(f"hyperaudio: warning: {result.refusal}; {result.rollback}")
        return 1
    raise pm.PluginRefused(f"refused {result.dist}: {result.refusal}; {result.rollback}")


def _confirm(question: str) -> bool:
    _err(question + " [y/N] ")
    try:
        answer = input()
    except EOFError:
        from .plugin_manager import PluginCommandError

        raise PluginCommandError("no answer on standard input: pass -y to uninstall without asking") from None
    return answer.strip().lower() in ("y", "yes")


def _uninstall(args) -> int:
    from . import plugin_manager as pm

    plugin = pm.find_plugin(args.name)
    if plugin is not None and not args.yes:
        if not _confirm(f"Uninstall {plugin.name} {plugin.version} ({plugin.location})?"):
            _err("hyperaudio: nothing uninstalled")
            return 1
    plugin = pm.uninstall(args.name, log=_err if args.verbose else (lambda line: None), verbose=args.verbose)
    print(f"uninstalled {plugin.name} {plugin.version}")
    return 0


def _list(args) -> int:
    from . import plugin_manager as pm

    rows = pm.plugin_rows(include_builtin=args.all)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no plugins installed (add one with: hyperaudio plugin install NAME|PATH)")
        return 0
    for row in rows:
        where = f"  ({row['module']})" if row["source"] == "user" else ""
        version = "" if row["source"] == "user" else f" {row['version']}"
        print(f"{row['name']}{version}  [{row['status']}]{where}  {_registered_text(row['registered'])}")
        if row.get("error"):
            print(f"    {'reason' if row['status'] != 'ok' else 'error'}: {row['error']}")
        for message in row.get("messages") or []:
            print(f"    note: {message}")
    return 0


def _freeze(args) -> int:
    from . import plugin_manager as pm

    for line in pm.freeze():
        print(line)
    return 0


def _check(args) -> int:
    from . import plugin_manager as pm
    from .testing import format_report

    plugin = pm.find_plugin(args.name)
    if plugin is None:
        raise pm.PluginCommandError(f"no installed plugin {args.name!r} (see 'hyperaudio plugin list')")
    report = pm.run_conformance(plugin.name)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{plugin.name} {plugin.version}: {_registered_text(report.get('registered') or {})}")
        print(format_report(report, verbose=args.verbose))
    return 1 if any(r["status"] == "failed" for r in report["results"]) else 0


# -- presets --------------------------------------------------------------------------------------
def cmd_presets(args) -> int:
    return {"list": _presets_list, "show": _presets_show, "dir": _presets_dir}[args.presets_command](args)


def _warn_broken(registry) -> None:
    for info in registry.broken():
        _err(f"warning: plugin {info.name} is broken: {info.error}")


def _presets_list(args) -> int:
    from .plugin_manager import registry_with_user_presets, user_presets_dir

    registry = registry_with_user_presets()
    rows = []
    for name in registry.names("presets"):
        entry = registry.get("presets", name)
        rows.append({"name": name, "target": entry.obj.get("target", {}).get("name", ""), "source": entry.dist,
                     "description": entry.obj.get("preset", {}).get("description", "")})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        wn = max([len(r["name"]) for r in rows] + [4])
        wt = max([len(r["target"]) for r in rows] + [6])
        ws = max([len(r["source"]) for r in rows] + [6])
        print(f"{'NAME':<{wn}}  {'TARGET':<{wt}}  {'SOURCE':<{ws}}  DESCRIPTION")
        for r in rows:
            print(f"{r['name']:<{wn}}  {r['target']:<{wt}}  {r['source']:<{ws}}  {r['description']}".rstrip())
        _err(f"(your own presets: {user_presets_dir()}/*.toml)")
    _warn_broken(registry)
    return 0


def _presets_show(args) -> int:
    from .config import dumps_toml, load_preset, resolve
    from .plugin_manager import registry_with_user_presets

    registry_with_user_presets()
    preset = resolve(args.name) if args.resolved else load_preset(args.name)
    sys.stdout.write(dumps_toml(preset))
    return 0


def _presets_dir(args) -> int:
    from .plugin_manager import user_presets_dir

    print(user_presets_dir())
    return 0

