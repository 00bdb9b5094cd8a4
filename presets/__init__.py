"""Preset TOML files, installed as the ``hyperaudio_presets`` package (data only)."""
