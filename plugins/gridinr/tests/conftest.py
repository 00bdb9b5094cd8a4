"""The conformance kit's pytest plugin (fixtures such as ``hyperaudio_plugins``) is normally loaded
through its ``pytest11`` entry point; load it explicitly where that entry point is missing."""

import importlib.metadata

_PLUGIN = "hyperaudio.testing.pytest_plugin"
if not any(ep.value == _PLUGIN for ep in importlib.metadata.entry_points(group="pytest11")):
    pytest_plugins = [_PLUGIN]
