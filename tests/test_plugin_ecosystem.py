"""The plugin ecosystem end to end: real ``pip`` installs through ``hyperaudio plugin install``.

Everything runs in a throw-away virtual environment layered over this one: ``python -m venv
--without-pip`` in a temporary folder plus a ``.pth`` file that adds this environment's
site-packages (so torch, pip, setuptools and hyperaudio itself are visible without copying
anything). Plugins install into the throw-away environment only, offline (local paths,
``--no-build-isolation``, ``PIP_NO_INDEX``), so a failing test never leaves anything behind here.

The example plugins in ``plugins/`` are copied to the temporary folder first (building them writes
``build/`` and ``*.egg-info`` next to the sources) and installed from there as ``plugins/NAME``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
# The small throw-away plugins below depend on nothing but what is installed: skip pip's resolver.
FAST = ("--no-build-isolation", "--no-deps")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A venv over this one, a copy of plugins/, a user config folder and an environment for them."""
    root = tmp_path_factory.mktemp("ecosystem")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    parent = sysconfig.get_paths()["purelib"]
    # addsitedir (not a bare path) so the parent's own .pth files run too (editable hyperaudio).
    Path(purelib, "_hyperaudio_parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    work = root / "work"
    shutil.copytree(REPO / "plugins", work / "plugins",
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    env = {k: v for k, v in os.environ.items() if k not in ("HYPERAUDIO_LOAD_PLUGINS", "PYTHONHOME")}
    env.update(HYPERAUDIO_CONFIG_DIR=str(root / "config"), PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PYTHONDONTWRITEBYTECODE="1")
    box = Sandbox(python, work, env, root)
    probe = box.python("-c", "import importlib.util as u, hyperaudio, torch; "
                             "assert u.find_spec('pip') and u.find_spec('setuptools')")
    assert probe.returncode == 0, probe.stderr
    # Plugins installed in this environment (make test installs the encoder plugins) are visible in
    # the sandbox too; the tests look only at what they install themselves.
    box.preexisting = set(box.plugins())
    box.preexisting_freeze = set(_ok(box.cli("plugin", "freeze")).stdout.splitlines())
    return box


class Sandbox:
    def __init__(self, python: Path, work: Path, env: dict, root: Path):
        self.python_path, self.work, self.env, self.root = python, work, env, root
        self.preexisting: set[str] = set()
        self.preexisting_freeze: set[str] = set()

    def python(self, *args, input=None, timeout=300, cwd=None):
        return subprocess.run([str(self.python_path), *args], cwd=cwd or self.work, env=self.env, input=input,
                              capture_output=True, text=True, timeout=timeout)

    def cli(self, *args, **kwargs):
        return self.python("-m", "hyperaudio.cli", *args, **kwargs)

    def plugins(self, *extra) -> dict:
        result = self.cli("plugin", "list", "--json", *extra)
        assert result.returncode == 0, result.stderr
        return {p["name"]: p for p in json.loads(result.stdout) if p["name"] not in self.preexisting}

    def freeze(self) -> list[str]:
        result = _ok(self.cli("plugin", "freeze"))
        return [line for line in result.stdout.splitlines() if line not in self.preexisting_freeze]

    def version(self, dist: str) -> str | None:
        """The installed version of ``dist`` in the sandbox (metadata only; quicker than pip show)."""
        result = self.python("-c", "import importlib.metadata as m, sys\ntry: print(m.version(sys.argv[1]))\n"
                                   "except m.PackageNotFoundError: pass", dist)
        return result.stdout.strip() or None

    def installed(self, dist: str) -> bool:
        return self.version(dist) is not None

    def project(self, name: str, module_source: str, version: str = "0.1.0", entry_point: bool = True) -> Path:
        """A minimal plugin distribution ``name`` (module ``name`` with - as _) in a fresh folder."""
        modname = name.replace("-", "_")
        folder = self.root / "projects" / f"{name}-{version}"
        folder.mkdir(parents=True)
        eps = f'[project.entry-points.hyperaudio]\nplug = "{modname}"\n' if entry_point else ""
        (folder / "pyproject.toml").write_text(textwrap.dedent(f"""\
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{name}"
            version = "{version}"
            dependencies = ["hyperaudio"]

            [tool.setuptools]
            py-modules = ["{modname}"]
            """) + eps)
        (folder / f"{modname}.py").write_text(textwrap.dedent(module_source))
        return folder


def _ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


GOOD_TARGET = """
    import torch
    from hyperaudio import hookimpl

    class Wave(torch.nn.Module):
        def __init__(self, width: int = 8):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(1, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))

        def forward(self, t):
            return self.net(t){suffix}

    @hookimpl
    def register_target_networks(register):
        register("wave", Wave, description="{description}")
"""


def test_examples_install_list_freeze_test_and_uninstall(sandbox):
    # Install: one regular, one editable; each is loaded and checked by the conformance kit.
    result = _ok(sandbox.cli("plugin", "install", "plugins/gridinr", "--no-build-isolation"))
    assert "installed hyperaudio-gridinr 0.1.0" in result.stdout
    assert "grid-inr" in result.stdout and "conformance:" in result.stdout and "failed" not in result.stdout
    result = _ok(sandbox.cli("plugin", "install", "-e", "plugins/recipes", "--no-build-isolation", "--json"))
    report = json.loads(result.stdout)
    assert report["accepted"] and report["dist"] == "hyperaudio-recipes" and report["action"] == "installed"
    assert report["report"]["registered"]["encoders"] == ["wave-conv"]
    assert not [r for r in report["report"]["results"] if r["status"] == "failed"]

    # list: versions, what each registers, status; --all adds the built-ins.
    plugins = sandbox.plugins("--all")
    assert plugins.pop("hyperaudio")["source"] == "builtin"
    assert set(plugins) == {"hyperaudio-gridinr", "hyperaudio-recipes"}
    grid = plugins["hyperaudio-gridinr"]
    assert grid["status"] == "ok" and grid["version"] == "0.1.0"
    assert grid["registered"]["target_networks"] == ["grid-inr"]
    assert set(grid["registered"]["presets"]) == {"grid-inr", "grid-inr-small"}
    assert set(plugins["hyperaudio-recipes"]["registered"]["presets"]) == {"kan-small", "nerf-small"}

    # freeze: pip-style lines that reinstall exactly these.
    lines = sandbox.freeze()
    assert any(line.startswith("hyperaudio-gridinr @ file://") for line in lines), lines
    assert any(line.startswith("-e ") and line.endswith("recipes") for line in lines), lines

    # The components are usable: a plugin preset resolves against the plugin's network (validated).
    shown = _ok(sandbox.cli("presets", "show", "grid-inr-small", "--resolved")).stdout
    assert tomllib.loads(shown)["target"]["params"]["levels"] == 8

    # Each plugin's own test suite (which uses the conformance kit) passes against the installed copy,
    # including the tests that need it installed. For one of them also the kit's pytest option: one
    # more test per check of everything the installed distribution registers.
    for name, extra in (("gridinr", []), ("recipes", ["--hyperaudio-conformance", "hyperaudio-recipes"])):
        result = sandbox.python("-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider", f"plugins/{name}/tests", *extra)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        assert "not installed" not in result.stdout, result.stdout[-2000:]
    assert "hyperaudio-conformance[hyperaudio-recipes:wave-conv:encoder_gradients] PASSED" in result.stdout

    # Uninstall: asks first (no = nothing happens), -y does it.
    result = sandbox.cli("plugin", "uninstall", "hyperaudio-recipes", input="n\n")
    assert result.returncode == 1 and sandbox.installed("hyperaudio-recipes")
    for dist in ("hyperaudio-recipes", "hyperaudio_gridinr"):  # any spelling of the name
        _ok(sandbox.cli("plugin", "uninstall", dist, "-y"))
    assert not sandbox.installed("hyperaudio-recipes") and not sandbox.installed("hyperaudio-gridinr")
    assert sandbox.plugins() == {}


def test_broken_plugins_leave_every_plugin_command_working(sandbox):
    raises = sandbox.project("hyperaudio-raises", 'raise RuntimeError("broken on purpose")')
    dies = sandbox.project("hyperaudio-dies", 'import os\nos._exit(7)  # kills the interpreter while loading')
    for folder in (raises, dies):  # installed behind hyperaudio's back, as a user's pip would
        _ok(sandbox.python("-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", str(folder)))
    try:
        plugins = sandbox.plugins()
        assert plugins["hyperaudio-raises"]["status"] == "broken"
        assert "RuntimeError: broken on purpose" in plugins["hyperaudio-raises"]["error"]
        assert plugins["hyperaudio-dies"]["status"] == "broken"
        assert "died" in plugins["hyperaudio-dies"]["error"]
        assert "hyperaudio-raises==0.1.0" not in sandbox.freeze()  # a file:// install
        assert len(sandbox.freeze()) == 2
        result = sandbox.cli("plugin", "check", "hyperaudio-raises")
        assert result.returncode == 1 and "broken on purpose" in result.stdout
        # Installing a good plugin next to them still works (the check loads it in a child process).
        good = sandbox.project("hyperaudio-goodwave", GOOD_TARGET.format(suffix="", description="fine"))
        _ok(sandbox.cli("plugin", "install", str(good), *FAST))
        _ok(sandbox.cli("plugin", "uninstall", "hyperaudio-goodwave", "-y"))
        # hyperaudio's other commands keep working with the plugin that raises (the one that kills
        # the interpreter on import is a crash of any host that imports it; plugin commands never do).
        _ok(sandbox.cli("plugin", "uninstall", "hyperaudio-dies", "-y"))
        text = _ok(sandbox.cli("plugin", "list")).stdout
        assert "hyperaudio-raises 0.1.0  [broken]" in text and "broken on purpose" in text
        _ok(sandbox.cli("presets", "list"))
        _ok(sandbox.cli("list"))
        _ok(sandbox.cli("plugin", "uninstall", "hyperaudio-raises", "-y"))
        assert sandbox.plugins() == {}
    finally:
        for dist in ("hyperaudio-raises", "hyperaudio-dies", "hyperaudio-goodwave"):
            sandbox.python("-m", "pip", "uninstall", "-y", "-q", dist)


def test_a_plugin_failing_the_checks_is_refused_and_rolled_back(sandbox):
    bad = sandbox.project("hyperaudio-badwave", GOOD_TARGET.format(suffix="[:, 0]", description="drops an axis"))
    result = sandbox.cli("plugin", "install", str(bad), *FAST)
    assert result.returncode == 2
    assert "FAILED" in result.stdout and "expected [" in result.stdout
    assert "refused hyperaudio-badwave" in result.stderr and "uninstalled again" in result.stderr
    assert not sandbox.installed("hyperaudio-badwave")

    # Not a plugin at all: no hyperaudio entry points.
    plain = sandbox.project("hyperaudio-notaplugin", "X = 1\n", entry_point=False)
    result = sandbox.cli("plugin", "install", str(plain), *FAST)
    assert result.returncode == 2 and "not a hyperaudio plugin" in result.stderr
    assert not sandbox.installed("hyperaudio-notaplugin")

    # A failing upgrade puts the previous, working version back.
    v1 = sandbox.project("hyperaudio-wave", GOOD_TARGET.format(suffix="", description="v1"), version="1.0")
    v2 = sandbox.project("hyperaudio-wave", GOOD_TARGET.format(suffix=" * float('nan')", description="v2"),
                         version="2.0")
    try:
        _ok(sandbox.cli("plugin", "install", str(v1), *FAST))
        result = sandbox.cli("plugin", "install", "-U", str(v2), *FAST)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "non-finite" in result.stdout and "restored the previous version (1.0)" in result.stderr
        assert sandbox.version("hyperaudio-wave") == "1.0"
        # --keep keeps a failing plugin installed (for its author), and says so.
        result = sandbox.cli("plugin", "install", "-U", "--keep", str(v2), *FAST)
        assert result.returncode == 1 and "kept installed" in result.stderr
        assert sandbox.version("hyperaudio-wave") == "2.0"
    finally:
        sandbox.python("-m", "pip", "uninstall", "-y", "-q", "hyperaudio-wave")

    # Bad input: one line, exit status 2.
    for args, message in ((["install", "plugins/nonexistent"], "no such file or folder"),
                          (["uninstall", "torch", "-y"], "not a hyperaudio plugin"),
                          (["uninstall", "hyperaudio-nothere", "-y"], "no installed plugin"),
                          (["install", "-e", "some-name"], "-e installs a local project folder")):
        result = sandbox.cli("plugin", *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
