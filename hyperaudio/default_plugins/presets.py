"""Built-in presets: every ``*.toml`` shipped in the top-level ``presets/`` folder."""

from importlib import resources

from hyperaudio import hookimpl


@hookimpl
def register_presets(register):
    for item in sorted(resources.files("hyperaudio_presets").iterdir(), key=lambda p: p.name):
        if item.name.endswith(".toml"):
            register(item.name[: -len(".toml")], str(item))
