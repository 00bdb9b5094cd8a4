"""Every hook in hyperaudio/hookspecs.py has a section in docs/plugins.md and a test of its own.

Adding a hookspec without documenting it (a ``### `hook_name(...)` `` section that quotes the
``register(...)`` signature from its docstring) or without adding it to ``HOOK_TESTS`` below
fails this module.
"""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pytest
from torch import nn

from hyperaudio import hookimpl, hookspecs
from hyperaudio.hypernet.strategies import Strategy
from hyperaudio.plugins import Registry
from hyperaudio.testing import check_encoder, check_preset, check_strategy, check_target_network

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def hook_names() -> list[str]:
    return sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
                  if hasattr(fn, "hyperaudio_spec"))


def doc_sections() -> dict[str, str]:
    """``{title: body}`` for every Markdown heading of docs/plugins.md."""
    text = DOCS.read_text()
    parts = re.split(r"^(#{1,6} .*)$", text, flags=re.M)
    return {parts[i].lstrip("#").strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def signature_in_docstring(name: str) -> str:
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    match = re.search(r"``(register\(.*?\))``", doc)
    assert match, f"hookspec {name} documents no ``register(...)`` signature in its docstring"
    return match.group(1)


def _registry_with(**hooks) -> tuple[Registry, object]:
    registry = Registry()
    registry.load_default_plugins()
    plugin = types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})
    return registry, registry.register_plugin(plugin, dist="hook-test", version="1.0")


# -- one test per hook ----------------------------------------------------------------------------
class HookTarget(nn.Module):
    def __init__(self, width: int = 6):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, width), nn.Tanh(), nn.Linear(width, 1))

    def forward(self, t):
        return self.net(t)


class HookEncoder(nn.Module):
    conformance_samples = 512

    def __init__(self, latent: int = 3):
        super().__init__()
        self.proj = nn.Linear(16, latent)

    def forward(self, x):
        return self.proj(x.unfold(-1, 16, 16).mean(1))


class HookStrategy(Strategy):
    def __init__(self, target, init_scale: float = 0.1):
        super().__init__(target, init_scale)
        for name, value in target.named_parameters():
            self.generate(name, value, 1.0)

    def combine(self, generated, step=None):
        return dict(generated)


def hook_register_target_networks():
    def register_target_networks(register):
        register("hook-target", HookTarget, description="a test network", paper="none")

    registry, info = _registry_with(register_target_networks=register_target_networks)
    assert info.status == "ok" and info.registered == [("target_networks", "hook-target")]
    entry = registry.get("target_networks", "hook-target")
    assert entry.obj is HookTarget and entry.description == "a test network" and entry.dist == "hook-test"
    check_target_network(entry.obj, name=None)

    def invalid(register):
        register("hook-target", HookTarget())  # an instance, not the class

    _, info = _registry_with(register_target_networks=invalid)
    assert info.status == "broken" and "torch.nn.Module subclass" in info.error


def hook_register_encoders():
    def register_encoders(register):
        register("hook-encoder", HookEncoder, description="mean of frames")

    registry, info = _registry_with(register_encoders=register_encoders)
    assert info.status == "ok" and registry.get("encoders", "hook-encoder").obj is HookEncoder
    check_encoder(HookEncoder)

    def invalid(register):
        register("hook-encoder", lambda x: x)

    _, info = _registry_with(register_encoders=invalid)
    assert info.status == "broken" and "encoder 'hook-encoder' must be a torch.nn.Module subclass" in info.error


def hook_register_strategies():
    def register_strategies(register):
        register("hook-strategy", HookStrategy, description="all weights")

    registry, info = _registry_with(register_strategies=register_strategies)
    assert info.status == "ok" and registry.get("strategies", "hook-strategy").obj is HookStrategy
    check_strategy(HookStrategy)

    def invalid(register):
        register("hook-strategy", HookStrategy(HookTarget()))

    _, info = _registry_with(register_strategies=invalid)
    assert info.status == "broken" and "must be a class" in info.error


def hook_register_presets(tmp_path: Path):
    path = tmp_path / "hook-file.toml"
    path.write_text('[preset]\ndescription = "from a file"\n[target]\nname = "hook-target"\n'
                    '[target.params]\nwidth = 4\n')

    def register_target_networks(register):
        register("hook-target", HookTarget)

    def register_presets(register):
        register("hook-dict", {"target": {"name": "hook-target", "params": {"width": 3}}, "fit": {"lr": 0.01}})
        register("hook-file", str(path))

    registry, info = _registry_with(register_target_networks=register_target_networks,
                                    register_presets=register_presets)
    assert info.status == "ok"
    assert registry.get("presets", "hook-file").obj["preset"]["description"] == "from a file"
    from hyperaudio.testing import plugin_report

    report = plugin_report("hook-test", registry)
    presets = [r for r in report["results"] if r["kind"] == "presets"]
    assert len(presets) == 2 and {r["status"] for r in presets} == {"passed"}, presets

    for bad, reason in (({"fit": {}}, "needs a [target] table"), (str(tmp_path / "missing.toml"), "cannot read")):
        def invalid(register, bad=bad):
            register("hook-bad", bad)

        _, info = _registry_with(register_presets=invalid)
        assert info.status == "broken" and reason in info.error
    with pytest.raises(AssertionError, match="unknown target network"):
        check_preset({"target": {"name": "no-such-network"}})


HOOK_TESTS = {
    "register_target_networks": hook_register_target_networks,
    "register_encoders": hook_register_encoders,
    "register_strategies": hook_register_strategies,
    "register_presets": hook_register_presets,
}


# -- the guards -----------------------------------------------------------------------------------
def test_hookspecs_are_found():
    assert "register_target_networks" in hook_names()


def test_every_hook_has_a_test():
    missing = sorted(set(hook_names()) - set(HOOK_TESTS))
    assert not missing, f"hooks without a test in HOOK_TESTS (tests/test_hooks_documented.py): {missing}"
    stale = sorted(set(HOOK_TESTS) - set(hook_names()))
    assert not stale, f"HOOK_TESTS names hooks that no longer exist: {stale}"


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_has_a_documentation_section(name):
    sections = doc_sections()
    titles = [t for t in sections if re.search(rf"`{name}\(register\)`", t)]
    assert titles, f"docs/plugins.md has no section titled `{name}(register)`"
    body = sections[titles[0]]
    signature = signature_in_docstring(name)
    assert signature in body, f"the section on {name} does not quote its signature {signature}"
    assert "Validated at registration" in body, f"the section on {name} does not state its validation rules"


@pytest.mark.parametrize("name", sorted(HOOK_TESTS))
def test_hook(name, tmp_path):
    fn = HOOK_TESTS[name]
    fn(tmp_path) if "tmp_path" in inspect.signature(fn).parameters else fn()


def test_docs_cover_the_commands_and_variables():
    text = DOCS.read_text()
    for needle in ("HYPERAUDIO_LOAD_PLUGINS", "HYPERAUDIO_CONFIG_DIR", "hyperaudio.testing", "pytest11",
                   "plugin install", "plugin uninstall", "plugin list", "plugin freeze", "plugin check",
                   "presets list", "presets show", "presets dir", "--hyperaudio-conformance"):
        assert needle in text, needle
    from hyperaudio.testing._checks import CHECKS

    for checks in CHECKS.values():
        for fn in checks:
            assert f"`{fn.__name__[len('check_'):]}`" in text, f"check {fn.__name__} is not documented"
