"""The conformance kit (hyperaudio.testing), the plugin manager's pieces, user presets, presets commands."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from hyperaudio import hookimpl
from hyperaudio.errors import HyperaudioError
from hyperaudio.functional import in_direct_call
from hyperaudio.hypernet.strategies import Strategy
from hyperaudio.plugins import Entry, Registry, get_registry
from hyperaudio.testing import (
    ConformanceError,
    check_encoder,
    check_preset,
    check_strategy,
    check_target_network,
    checks_for,
    parametrize_with_checks,
    plugin_report,
    run_checks,
)


# -- components, good and bad ---------------------------------------------------------------------
class Good(nn.Module):
    def __init__(self, width: int = 8, out_channels: int = 1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, width), nn.Tanh(), nn.Linear(width, out_channels))

    def forward(self, t):
        return self.net(t)


class TwoHeads(Good):
    heads = 2

    def __init__(self, width: int = 8):
        super().__init__(width, out_channels=2)


class DropsAxis(Good):
    def forward(self, t):
        return self.net(t)[:, 0]


class Float64(Good):
    def forward(self, t):
        return self.net(t).double()


class NotPointwise(Good):
    def forward(self, t):
        y = self.net(t)
        return y - y.mean(0)


class CachesWeight(Good):
    """Keeps its own weight in a plain attribute: parameters supplied from outside are ignored."""

    def __init__(self, width: int = 8):
        super().__init__(width)
        self.cached = [self.net[0].weight]

    def forward(self, t):
        return self.net[2](torch.tanh(t @ self.cached[0].T + self.net[0].bias))


class NeedsArgument(Good):
    def __init__(self, width):
        super().__init__(width)


class ObjectDefault(Good):
    def __init__(self, width: int = 8, activation=nn.Tanh):
        super().__init__(width)


class RandomAttribute(Good):
    """A random projection kept as a plain tensor, not a buffer: lost by .hya files."""

    def __init__(self, width: int = 8):
        super().__init__(width)
        self.freq = torch.randn(1, 4) * 5

    def forward(self, t):
        return self.net(t) + torch.sin(t @ self.freq).sum(-1, keepdim=True)


class UnusedParameter(Good):
    def __init__(self, width: int = 8):
        super().__init__(width)
        self.spare = nn.Parameter(torch.zeros(3))


class DataDependent(Good):
    """Python control flow on tensor values: cannot run under vmap."""

    def forward(self, t):
        y = self.net(t)
        return y * 2 if y.sum().item() > 0 else y


class WrongWhenRendering(Good):
    """An inference-only path (``in_direct_call``) that does not match the ordinary one."""

    def forward(self, t):
        return self.net(t) * (1.5 if in_direct_call() else 1.0)


class Explodes(Good):
    def forward(self, t):
        return self.net(t) / 0.0


BAD_TARGETS = [
    (DropsAxis, "forward_shapes_and_dtypes", "returned shape [1], expected [1, C * H]"),
    (Float64, "forward_shapes_and_dtypes", "expected torch.float32"),
    (Explodes, "forward_shapes_and_dtypes", "non-finite"),
    (NotPointwise, "pointwise", "two blocks"),
    (CachesWeight, "external_parameters_match_own", "member"),
    (DataDependent, "external_parameters_match_own", ""),
    (NeedsArgument, "constructor_keywords", "no default"),
    (ObjectDefault, "constructor_keywords", "TOML"),
    (RandomAttribute, "hya_roundtrip", "output after the .hya round trip"),
    (UnusedParameter, "gradients_flow", "'spare' receives no gradient"),
    (WrongWhenRendering, "plays_like_render", "playback renderer vs render.evaluate"),
]


@pytest.mark.parametrize("cls", [Good, TwoHeads])
def test_a_conforming_target_network_passes(cls):
    results = check_target_network(cls)
    status = {r.check: r.status for r in results}
    assert status.pop("onnx_export") in ("passed", "skipped")
    assert set(status.values()) == {"passed"}, results


@pytest.mark.parametrize("cls, check, message", BAD_TARGETS, ids=[c.__name__ for c, _, _ in BAD_TARGETS])
def test_each_broken_contract_fails_its_check(cls, check, message):
    results = {r.check: r for r in run_checks("target_networks", cls)}
    assert results[check].status == "failed", results[check]
    assert message in results[check].message
    with pytest.raises(ConformanceError, match=check):
        check_target_network(cls)


def test_the_kit_leaves_the_registry_as_it_found_it():
    before = {k: dict(v) for k, v in get_registry().entries.items()}
    run_checks("target_networks", Good)
    assert {k: dict(v) for k, v in get_registry().entries.items()} == before


def test_conformance_params_and_explicit_params():
    class Sized(Good):
        conformance_params = {"width": 3}

    assert checks_for("target", Sized)[0][0] == "constructor_keywords"
    results = run_checks("target", Sized)
    assert "25 parameters" not in " ".join(r.message for r in results)
    params = next(r for r in results if r.check == "parameter_declarations").message
    assert params.startswith("10 parameters")  # (3 + 3) + (3 + 1) with width 3
    params = next(r for r in run_checks("target", Sized, {"width": 4}) if r.check == "parameter_declarations")
    assert params.message.startswith("13 parameters")


# -- strategies -----------------------------------------------------------------------------------
class DirectStrategy(Strategy):
    """Generates every parameter of the target network."""

    def __init__(self, target, init_scale: float = 0.1):
        super().__init__(target, init_scale)
        for name, p in target.named_parameters():
            self.generate(name, p, 1.0)

    def combine(self, generated, step=None):
        return dict(generated)


class FiLMOnly(Strategy):
    def __init__(self, target):
        super().__init__(target)
        names = list(getattr(target, "modulation_parameters", ()))
        if not names:
            raise ValueError("FiLMOnly needs modulation_parameters")
        for name in names:
            self.generate(name, self.initial(name), 1.0)

    @staticmethod
    def supports(target):
        return bool(getattr(target, "modulation_parameters", None))

    def combine(self, generated, step=None):
        return dict(generated)


class DropsBatch(DirectStrategy):
    def combine(self, generated, step=None):
        return {n: v[0] for n, v in generated.items()}


class DetachesShared(Strategy):
    def __init__(self, target):
        super().__init__(target)
        names = [n for n, _ in target.named_parameters()]
        self.share(names[0], self.initial(names[0]))
        for name in names[1:]:
            self.generate(name, self.initial(name), 1.0)

    def combine(self, generated, step=None):
        batch = next(iter(generated.values())).shape[0]
        return {**{n: v.detach() for n, v in self.expand_shared(batch).items()}, **generated}


class NeedsMore:
    def __init__(self, target, latent_dim):
        pass


class RefusesAll:
    def __init__(self, target):
        pass

    @staticmethod
    def supports(target):
        return False


def test_strategy_checks():
    check_strategy(DirectStrategy)
    check_strategy(FiLMOnly)  # refuses the plain MLP via supports(), builds for the modulated one
    for cls, message in ((NeedsMore, "needs ['latent_dim']"), (RefusesAll, "refused every"),
                         (DropsBatch, "expected [2, "), (DetachesShared, "no finite gradient")):
        with pytest.raises(ConformanceError, match=re.escape(message)):
            check_strategy(cls)


def test_target_networks_are_checked_against_every_registered_strategy():
    registry = get_registry()
    table = registry.entries["strategies"]
    table["direct"] = Entry("strategies", "direct", DirectStrategy, "test")
    table["film-only"] = Entry("strategies", "film-only", FiLMOnly, "test")
    result = {r.check: r for r in run_checks("target", Good)}["works_with_strategies"]
    assert result.status == "passed" and "direct" in result.message.split(";")[0] and "film-only" in result.message

    class Picky:
        def __init__(self, target):
            raise RuntimeError("only works with SIREN")

    table["picky"] = Entry("strategies", "picky", Picky, "test")
    result = {r.check: r for r in run_checks("target", Good)}["works_with_strategies"]
    assert result.status == "failed" and "only works with SIREN" in result.message


# -- encoders -------------------------------------------------------------------------------------
class GoodEncoder(nn.Module):
    conformance_samples = 1000

    def __init__(self, latent: int = 6):
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 9, stride=4)
        self.out = nn.Linear(4, latent)

    def forward(self, x):
        return self.out(self.conv(x.unsqueeze(1)).mean(-1))


class FlatEncoder(GoodEncoder):
    def forward(self, x):
        return super().forward(x).flatten()


class BatchMixing(GoodEncoder):
    def forward(self, x):
        return super().forward(x - x.mean(0))


class FrozenEncoder(GoodEncoder):
    def forward(self, x):
        with torch.no_grad():
            h = self.conv(x.unsqueeze(1)).mean(-1)
        return self.out(h)


def test_encoder_checks():
    assert {r.status for r in check_encoder(GoodEncoder)} == {"passed"}
    for cls, check in ((FlatEncoder, "encoder_output"), (BatchMixing, "encoder_batch_independent"),
                       (FrozenEncoder, "encoder_gradients")):
        results = {r.check: r.status for r in run_checks("encoder", cls)}
        assert results[check] == "failed", (cls, results)


# -- presets --------------------------------------------------------------------------------------
def test_preset_checks(tmp_path):
    registry = get_registry()
    registry.entries["target_networks"]["good-test"] = Entry("target_networks", "good-test", Good, "test")
    check_preset({"target": {"name": "good-test", "params": {"width": 4}}, "fit": {"lr": 0.01}})
    path = tmp_path / "mine.toml"
    path.write_text('[target]\nname = "good-test"\n[target.params]\nwidth = 5\n')
    assert check_preset(path)[0].component == "mine"
    for preset, message in (({"target": {"name": "no-such-net"}}, "unknown target network"),
                            ({"target": {"name": "good-test", "params": {"depth": 3}}}, "depth"),
                            ({"target": {"name": "good-test"}, "fit": {"lr": "fast"}}, "fit.lr")):
        with pytest.raises(ConformanceError, match=message):
            check_preset(preset)


# -- pytest integration ---------------------------------------------------------------------------
@parametrize_with_checks(target_networks=[(Good, {"width": 4})], encoders=[GoodEncoder], strategies=[DirectStrategy])
def test_parametrize_with_checks(check):
    check()


def test_parametrize_with_checks_ids():
    mark = parametrize_with_checks(target_networks=[Good], presets={"p": {"target": {"name": "x"}}})
    ids = [p.id for p in mark.args[1]]
    assert "Good-external_parameters_match_own" in ids and "p-preset_resolves" in ids
    with pytest.raises(ValueError):
        parametrize_with_checks()


def _fake_distribution(root: Path, dist: str, source: str) -> None:
    modname = dist.replace("-", "_")
    (root / f"{modname}.py").write_text(textwrap.dedent(source))
    info = root / f"{modname}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[hyperaudio]\nplug = {modname}\n")


GOOD_PLUGIN = """
    import torch
    from hyperaudio import hookimpl

    class Line(torch.nn.Module):
        def __init__(self, width: int = 4):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(1, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))

        def forward(self, t):
            return self.net(t)

    @hookimpl
    def register_target_networks(register):
        register("line", Line)

    @hookimpl
    def register_presets(register):
        register("line-small", {"target": {"name": "line", "params": {"width": 2}}})
"""


def test_pytest_plugin_option_and_fixtures(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _fake_distribution(site, "kit-good", GOOD_PLUGIN)
    _fake_distribution(site, "kit-broken", 'raise ImportError("nope")')
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_fixtures.py").write_text(textwrap.dedent("""
        import os

        def test_plugins_fixture(hyperaudio_plugins):
            registry = hyperaudio_plugins("kit-good")
            assert "line" in registry.names("target_networks")
            assert "kit-broken" not in registry.plugins

        def test_config_dir_fixture(hyperaudio_config_dir, hyperaudio_registry):
            assert os.environ["HYPERAUDIO_CONFIG_DIR"] == str(hyperaudio_config_dir)
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "HYPERAUDIO_LOAD_PLUGINS": "kit-good,kit-broken", "HYPERAUDIO_CONFIG_DIR": str(tmp_path / "cfg")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "hyperaudio.testing.pytest_plugin",
         "--hyperaudio-conformance", "kit-good", "--hyperaudio-conformance", "kit-broken", str(tests)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = result.stdout
    assert "hyperaudio-conformance[kit-good:line:external_parameters_match_own] PASSED" in out, out[-3000:]
    assert "hyperaudio-conformance[kit-good:line-small:preset_resolves] PASSED" in out
    assert "hyperaudio-conformance[kit-broken:loads] FAILED" in out
    assert "test_plugins_fixture PASSED" in out and "test_config_dir_fixture PASSED" in out
    assert result.returncode == 1 and " 1 failed" in out


def test_plugin_report_of_registered_plugins():
    registry = Registry()
    registry.load_default_plugins()
    ns: dict = {}
    exec(textwrap.dedent(GOOD_PLUGIN), ns)
    plugin = types.SimpleNamespace(register_target_networks=ns["register_target_networks"],
                                   register_presets=ns["register_presets"])
    registry.register_plugin(plugin, dist="kit-good", version="0.1")
    report = plugin_report("kit_good", registry)  # any spelling of the distribution name
    assert report["status"] == "ok" and report["registered"]["target_networks"] == ["line"]
    assert {r["status"] for r in report["results"]} <= {"passed", "skipped"}
    assert any(r["check"] == "preset_resolves" and r["status"] == "passed" for r in report["results"])

    @hookimpl
    def register_encoders(register):
        raise RuntimeError("boom")

    registry.register_plugin(types.SimpleNamespace(register_encoders=register_encoders), dist="kit-bad")
    report = plugin_report("kit-bad", registry)
    assert report["results"][0]["status"] == "failed" and "boom" in report["results"][0]["message"]
    assert plugin_report("not-installed", registry)["status"] == "missing"


# -- plugin manager pieces ------------------------------------------------------------------------
def test_installer_command_prefers_pip_then_uv(monkeypatch, tmp_path):
    from hyperaudio import plugin_manager as pm

    assert pm.installer_command("install", ["-U", "x"])[:4] == [sys.executable, "-m", "pip", "install"]
    monkeypatch.setattr(pm, "_has_pip", lambda: False)
    uv = tmp_path / "uv"
    uv.write_text("#!/bin/sh\n")
    uv.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    cmd = pm.installer_command("install", ["--force-reinstall", "x"])
    assert cmd == [str(uv), "pip", "install", "--python", sys.executable, "--reinstall", "x"]
    assert pm.installer_command("uninstall", ["-y", "x"]) == [str(uv), "pip", "uninstall", "--python",
                                                                sys.executable, "x"]
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(pm.PluginCommandError, match="neither pip nor uv"):
        pm.installer_command("install", ["x"])


def test_parse_spec(tmp_path, monkeypatch):
    from hyperaudio import plugin_manager as pm

    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "hyperaudio-thing"\nversion = "1"\n')
    monkeypatch.chdir(tmp_path)
    assert pm.parse_spec("./proj") == ([str(project)], "hyperaudio-thing")
    assert pm.parse_spec("proj", editable=True) == (["-e", str(project)], "hyperaudio-thing")
    wheel = tmp_path / "hyperaudio_thing-1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert pm.parse_spec(str(wheel))[1] == "hyperaudio_thing"
    sdist = tmp_path / "hyperaudio-thing-1.0.tar.gz"
    sdist.write_bytes(b"")
    assert pm.parse_spec(str(sdist))[1] == "hyperaudio-thing"
    assert pm.parse_spec("hyperaudio-gridinr>=0.1") == (["hyperaudio-gridinr>=0.1"], "hyperaudio-gridinr")
    assert pm.parse_spec("hyperaudio-x[extra] @ https://example.invalid/x.whl")[1] == "hyperaudio-x"
    for spec, kwargs, message in (("./missing", {}, "no such file"), ("name", {"editable": True}, "-e installs"),
                                  (str(wheel), {"editable": True}, "-e needs a project folder"),
                                  (str(tmp_path), {}, "not a Python project")):
        with pytest.raises(pm.PluginCommandError, match=message):
            pm.parse_spec(spec, **kwargs)
    with pytest.raises(pm.PluginCommandError, match="not a plugin"):
        pm.install("hyperaudio")


@pytest.mark.parametrize("direct_url, line", [
    (None, "hyperaudio-x==1.2"),
    ({"url": "file:///src/x", "dir_info": {"editable": True}}, "-e /src/x"),
    ({"url": "file:///src/x", "dir_info": {}}, "hyperaudio-x @ file:///src/x"),
    ({"url": "https://github.com/a/x", "vcs_info": {"vcs": "git", "commit_id": "abc"}},
     "hyperaudio-x @ git+https://github.com/a/x@abc"),
])
def test_freeze_lines(tmp_path, direct_url, line):
    import importlib.metadata

    from hyperaudio.plugin_manager import freeze_line

    info = tmp_path / "hyperaudio_x-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hyperaudio-x\nVersion: 1.2\n")
    if direct_url:
        (info / "direct_url.json").write_text(json.dumps(direct_url))
    assert freeze_line(importlib.metadata.PathDistribution(info)) == line


def test_disabled_and_broken_plugins_are_listed(tmp_path, monkeypatch):
    from hyperaudio import plugin_manager as pm

    _fake_distribution(tmp_path, "kit-good", GOOD_PLUGIN)
    _fake_distribution(tmp_path, "kit-broken", 'raise ImportError("nope")')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("HYPERAUDIO_LOAD_PLUGINS", "kit-broken")
    rows = {r["name"]: r for r in pm.plugin_rows()}
    assert rows["kit-good"]["status"] == "disabled" and "HYPERAUDIO_LOAD_PLUGINS" in rows["kit-good"]["error"]
    assert rows["kit-broken"]["status"] == "broken" and "nope" in rows["kit-broken"]["error"]
    assert "hyperaudio" not in rows
    # Only the fakes: plugin distributions installed in this environment (make test installs some) also show.
    assert [p.name for p in pm.installed_plugins() if p.name.startswith("kit-")] == ["kit-broken", "kit-good"]
    assert pm.find_plugin("kit_good").name == "kit-good" and pm.find_plugin("plug").name == "kit-broken"
    assert sorted(line for line in pm.freeze() if line.startswith("kit-")) == ["kit-broken==0.1", "kit-good==0.1"]
    with pytest.raises(pm.PluginCommandError, match="not a hyperaudio plugin"):
        pm.uninstall("torch")


# -- user presets and the presets commands --------------------------------------------------------
def _cli(*argv) -> int:
    from hyperaudio.plugin_cli import add_commands

    parser = argparse.ArgumentParser()
    handlers = add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return handlers[args.command](args)


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    folder = tmp_path / "config"
    (folder / "presets").mkdir(parents=True)
    monkeypatch.setenv("HYPERAUDIO_CONFIG_DIR", str(folder))
    return folder


def _fresh_registry_with_user_presets():
    """A registry loaded now (after the test wrote its preset files), plus the test target network."""
    from hyperaudio.plugin_manager import registry_with_user_presets
    from hyperaudio.plugins import reset_registry

    reset_registry()
    registry = registry_with_user_presets()
    registry.entries["target_networks"]["good-test"] = Entry("target_networks", "good-test", Good, "test")
    return registry


def test_user_presets_are_a_source(config_dir, capsys):
    from hyperaudio.config import resolve
    from hyperaudio.plugin_manager import user_presets_dir

    assert user_presets_dir() == config_dir / "presets"
    (config_dir / "presets" / "mine.toml").write_text(
        '[preset]\ndescription = "my own"\n[target]\nname = "good-test"\n[target.params]\nwidth = 3\n'
        '[fit]\nlr = 0.02\n')
    (config_dir / "presets" / "kan-inr.toml").write_text('[target]\nname = "good-test"\n')  # clashes
    registry = _fresh_registry_with_user_presets()
    assert registry.plugins["user"].status == "ok"
    assert registry.get("presets", "mine").dist == "user"
    assert registry.get("presets", "user.kan-inr").dist == "user"  # clash rule: renamed
    assert resolve("mine")["fit"]["lr"] == 0.02

    assert _cli("presets", "list", "--json") == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["mine"] == {"name": "mine", "target": "good-test", "source": "user", "description": "my own"}

    assert _cli("presets", "show", "mine", "--resolved") == 0
    assert tomllib.loads(capsys.readouterr().out) == resolve("mine")
    assert _cli("presets", "show", "mine") == 0
    assert tomllib.loads(capsys.readouterr().out)["target"]["params"] == {"width": 3}
    assert _cli("presets", "dir") == 0
    assert capsys.readouterr().out.strip() == str(config_dir / "presets")
    with pytest.raises(HyperaudioError, match="did you mean 'mine'"):
        _cli("presets", "show", "mien")


def test_a_broken_user_preset_is_reported_not_fatal(config_dir, capsys):
    (config_dir / "presets" / "bad.toml").write_text("[target\nname = ")
    registry = _fresh_registry_with_user_presets()
    assert registry.plugins["user"].status == "broken" and "bad.toml" in registry.plugins["user"].error
    assert _cli("presets", "list") == 0
    captured = capsys.readouterr()
    assert "kan-inr" in captured.out and "plugin user is broken" in captured.err


def test_toml_writer_round_trips():
    from hyperaudio.config import dumps_toml

    data = {"title": 'a "quoted" \\ string', "preset": {"name": "n", "description": "§ ünïcode\ttab"},
            "target": {"name": "x", "params": {"hidden": [1, 2], "omega": 30.0, "flag": True, "empty": []}},
            "fit": {"lr": 1e-05, "big": float("inf")}, "weird key": {"a.b": 1, "nested": {"deep": [[1, 2], ["a"]]}},
            "loss": {}}
    assert tomllib.loads(dumps_toml(data)) == data


def test_toml_writer_leaves_out_none_and_refuses_it_in_a_list():
    from hyperaudio.config import dumps_toml, resolve

    cfg = resolve("debug-standard")
    assert tomllib.loads(dumps_toml(cfg)) == cfg
    # A None setting (only possible from Python) is left out, as if never set.
    with_none = {**cfg, "train": {**cfg["train"], "seed": None}}
    assert "seed" not in tomllib.loads(dumps_toml(with_none))["train"]
    with pytest.raises(HyperaudioError, match="TOML"):
        dumps_toml({"target": {"params": {"hidden": [1, None]}}})
