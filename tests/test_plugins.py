"""The plugin registry: built-ins through the hooks, broken plugins isolated, clashes renamed."""

import json
import os
import subprocess
import sys
import textwrap
import types

import pytest
import torch

from hyperaudio import hookimpl
from hyperaudio.plugins import Registry, RegistryError, get_registry

BUILTIN_TARGETS = {"nerf", "siren", "rff", "finer", "wire", "kan", "siamese-siren", "film-siren"}


def fake_distribution(root, dist, module_source, entry="plug"):
    """A real distribution on sys.path (dist-info + entry point), discovered by importlib.metadata."""
    modname = dist.replace("-", "_")
    (root / f"{modname}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{modname}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[hyperaudio]\n{entry} = {modname}\n")
    return root


def run_cli(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "hyperaudio.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_builtins_register_through_the_hooks():
    registry = get_registry()
    assert BUILTIN_TARGETS <= set(registry.names("target_networks"))
    assert {"kan-inr", "siren-inr", "nerf-inr", "rff-inr", "finer-inr", "wire-inr", "siamese-siren",
            "film-siren"} <= set(registry.names("presets"))
    assert registry.plugins["hyperaudio"].status == "ok"
    assert all(registry.get("target_networks", n).dist == "hyperaudio" for n in BUILTIN_TARGETS)


class Tiny(torch.nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(1, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))

    def forward(self, t):
        return self.net(t)


def test_plugin_object_registers_and_clash_is_renamed():
    registry = Registry()
    registry.load_default_plugins()
    plugin = types.SimpleNamespace()

    @hookimpl
    def register_target_networks(register):
        register("tiny", Tiny, description="two layers")
        register("kan", Tiny)  # clashes with the built-in

    plugin.register_target_networks = register_target_networks
    info = registry.register_plugin(plugin, dist="my-dist", version="1.0")
    assert info.status == "ok"
    assert registry.get("target_networks", "tiny").dist == "my-dist"
    assert registry.get("target_networks", "kan").dist == "hyperaudio"
    assert registry.get("target_networks", "my-dist.kan").obj is Tiny
    assert any("already provided by hyperaudio" in m for m in info.messages)


@pytest.mark.parametrize(
    "body, reason",
    [
        ('register("bad", object)', "must be a torch.nn.Module subclass"),
        ('register("Bad Name", Tiny)', "invalid target network name"),
        ('raise RuntimeError("boom")', "RuntimeError: boom"),
    ],
)
def test_invalid_registration_marks_plugin_broken_and_keeps_nothing(body, reason):
    registry = Registry()
    registry.load_default_plugins()
    namespace = {"hookimpl": hookimpl, "Tiny": Tiny}
    exec(textwrap.dedent(f"""
        @hookimpl
        def register_target_networks(register):
            register("fine", Tiny)
            {body}
    """), namespace)
    plugin = types.SimpleNamespace(register_target_networks=namespace["register_target_networks"])
    info = registry.register_plugin(plugin, dist="bad-dist")
    assert info.status == "broken" and reason in info.error
    assert "fine" not in registry.names("target_networks")  # all-or-nothing
    assert BUILTIN_TARGETS <= set(registry.names("target_networks"))


def test_unknown_component_suggests_a_name():
    with pytest.raises(RegistryError, match="did you mean 'siren'"):
        get_registry().get("target_networks", "sirne")


def test_plugin_raising_on_import_leaves_the_host_working(tmp_path):
    fake_distribution(tmp_path, "explodes-on-import", 'raise ImportError("this plugin is broken on purpose")')
    fake_distribution(tmp_path, "good-plugin", """
        import torch
        from hyperaudio import hookimpl

        class Line(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(1, 1)
            def forward(self, t):
                return self.lin(t)

        @hookimpl
        def register_target_networks(register):
            register("line", Line, description="a straight line")
    """)
    env = {"PYTHONPATH": str(tmp_path), "HYPERAUDIO_LOAD_PLUGINS": "explodes-on-import,good-plugin"}
    result = run_cli("list", "inrs", env_extra=env)
    assert result.returncode == 0, result.stderr
    assert "kan" in result.stdout and "line" in result.stdout and "[good-plugin]" in result.stdout
    assert "explodes-on-import is broken" in result.stderr
    result = run_cli("plugin", "list", "--json", env_extra=env)
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["explodes-on-import"]["status"] == "broken"
    assert "broken on purpose" in plugins["explodes-on-import"]["error"]
    assert plugins["good-plugin"]["registered"]["target_networks"] == ["line"]
    # The allowlist keeps plugins out (listed as disabled); empty means none.
    result = run_cli("plugin", "list", "--json", "--all", env_extra={**env, "HYPERAUDIO_LOAD_PLUGINS": ""})
    statuses = {p["name"]: p["status"] for p in json.loads(result.stdout)}
    assert statuses["hyperaudio"] == "ok"  # plugins installed in this environment (make test installs some) also show
    assert {"explodes-on-import", "good-plugin"} <= set(statuses)
    assert all(status == "disabled" for name, status in statuses.items() if name != "hyperaudio")
