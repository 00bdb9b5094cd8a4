"""Real-time playback of INRs at any output rate (engine, sinks) and rendering through it to files.

See ``docs/playback.md`` and :mod:`hyperaudio.playback.engine` for the design. The names below are
imported on first use (PEP 562), so ``hyperaudio.playback.cli`` can be wired into the command line
without importing torch, and nothing here imports ``sounddevice`` until a device sink starts.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Engine": "engine", "default_block": "engine", "PlaybackError": "errors", "FileSink": "sinks",
    "NullSink": "sinks", "SoundDeviceSink": "sinks",
    "SampledSound": "sampled",
}
__all__ = [*_EXPORTS, "render_to_file"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def render_to_file(inr, path, sample_rate=None, **engine_kwargs):
    """Render ``inr`` to ``path`` through the streaming engine (``FileSink``); returns the ``[C, M]``
    audio written, which equals ``render.render(inr, sample_rate, ...)``."""
    from .engine import Engine
    from .sinks import FileSink

    sink = FileSink(path)
    engine = Engine(inr, sink, sample_rate, **engine_kwargs)
    try:
        engine.play()
        engine.wait()
    finally:
        engine.stop(fade=False)
    return sink.result
