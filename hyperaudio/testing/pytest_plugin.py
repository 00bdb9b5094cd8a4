"""pytest plugin of the hyperaudio conformance kit (entry point ``pytest11``).

Loaded automatically wherever hyperaudio is installed; it costs nothing until used (torch and the
registry are imported lazily). It adds:

``--hyperaudio-conformance DIST``  (repeatable) collect one test per conformance check of every
                                   component the installed distribution ``DIST`` registers
``hyperaudio_registry``            fixture: a freshly loaded registry, reset again afterwards
``hyperaudio_plugins``             fixture: ``hyperaudio_plugins("my-dist")`` sets the plugin
                                   allowlist (``HYPERAUDIO_LOAD_PLUGINS``) for this test and returns a
                                   fresh registry that loaded only those plugins (plus built-ins)
``hyperaudio_config_dir``          fixture: an empty user config folder (``HYPERAUDIO_CONFIG_DIR``)

A project that cannot rely on the entry point may list it in ``conftest.py``:
``pytest_plugins = ["hyperaudio.testing.pytest_plugin"]`` (the entry point has the same name, so it
is never registered twice).
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("hyperaudio", "hyperaudio conformance kit")
    group.addoption("--hyperaudio-conformance", action="append", default=[], metavar="DIST",
                    help="run the conformance checks on everything installed plugin DIST registers (repeatable)")


def pytest_configure(config):
    config.addinivalue_line("markers", "hyperaudio_conformance: a hyperaudio conformance-kit check")


class ConformanceItem(pytest.Item):
    def __init__(self, *, subject, fn, **kwargs):
        super().__init__(**kwargs)
        self.subject, self.fn = subject, fn
        self.add_marker("hyperaudio_conformance")

    def runtest(self):
        from ._checks import SkipCheck

        try:
            self.fn(self.subject)
        except SkipCheck as exc:
            pytest.skip(str(exc))

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, AssertionError):
            return f"{self.subject.label} [{self.fn.__name__}]: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return "hyperaudio-conformance", None, self.name


class _LoadFailure(pytest.Item):
    def __init__(self, *, message, **kwargs):
        super().__init__(**kwargs)
        self.message = message

    def runtest(self):
        raise AssertionError(self.message)

    def repr_failure(self, excinfo):
        return self.message

    def reportinfo(self):
        return "hyperaudio-conformance", None, self.name


def pytest_collection_modifyitems(session, config, items):
    dists = config.getoption("--hyperaudio-conformance") or []
    if not dists:
        return
    from . import _find_plugin, _subject
    from ._checks import CHECKS, check_name
    from hyperaudio.plugins import get_registry, reset_registry

    reset_registry()
    registry = get_registry()
    for dist in dists:
        info = _find_plugin(registry, dist)
        if info is None or info.status != "ok" or not info.registered:
            why = ("not loaded (not installed, or not in HYPERAUDIO_LOAD_PLUGINS)" if info is None
                   else info.error or "registers nothing")
            items.append(_LoadFailure.from_parent(session, name=f"hyperaudio-conformance[{dist}:loads]",
                                                  message=f"plugin {dist}: {why}"))
            continue
        for kind, name in info.registered:
            subject = _subject(kind, registry.entries[kind][name].obj, None, name)
            for fn in CHECKS[kind]:
                items.append(ConformanceItem.from_parent(
                    session, name=f"hyperaudio-conformance[{dist}:{name}:{check_name(fn)}]", subject=subject, fn=fn))


@pytest.fixture
def hyperaudio_registry():
    from hyperaudio.plugins import get_registry, reset_registry

    reset_registry()
    yield get_registry()
    reset_registry()


@pytest.fixture
def hyperaudio_plugins(monkeypatch):
    from hyperaudio.plugins import get_registry, reset_registry

    def load(*dists: str):
        monkeypatch.setenv("HYPERAUDIO_LOAD_PLUGINS", ",".join(dists))
        reset_registry()
        return get_registry()

    yield load
    reset_registry()


@pytest.fixture
def hyperaudio_config_dir(tmp_path, monkeypatch):
    from hyperaudio.plugins import reset_registry

    folder = tmp_path / "hyperaudio-config"
    (folder / "presets").mkdir(parents=True)
    monkeypatch.setenv("HYPERAUDIO_CONFIG_DIR", str(folder))
    reset_registry()
    yield folder
    reset_registry()
