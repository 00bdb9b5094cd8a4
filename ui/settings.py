"""Persistent settings (QSettings): window layout, recent files, the last output device and rate."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

MAX_RECENT = 10


class Settings:
    """Typed access to one QSettings store (the user's by default; tests pass a file of their own)."""

    def __init__(self, store: QSettings | None = None):
        self.store = store if store is not None else QSettings("hyperaudio", "hyperaudio-gui")

    @classmethod
    def at(cls, path: str | Path) -> "Settings":
        return cls(QSettings(str(path), QSettings.Format.IniFormat))

    # -- recent files ------------------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        value = self.store.value("recent_files", [])
        if isinstance(value, str):  # QSettings returns a one-element list as a plain string
            value = [value]
        return [str(v) for v in value or []]

    def add_recent(self, path: str | Path) -> list[str]:
        path = str(Path(path).resolve())
        files = [path] + [p for p in self.recent_files() if p != path]
        self.store.setValue("recent_files", files[:MAX_RECENT])
        return files[:MAX_RECENT]

    def clear_recent(self) -> None:
        self.store.setValue("recent_files", [])

    # -- playback ----------------------------------------------------------------------------------
    def value(self, key: str, default=None, kind=None):
        value = self.store.value(key, default)
        if kind is not None and value is not None:
            try:
                return kind(value)
            except (TypeError, ValueError):
                return default
        return value

    def set(self, key: str, value) -> None:
        self.store.setValue(key, value)

    # -- window layout -----------------------------------------------------------------------------
    def bytes(self, key: str) -> QByteArray | None:
        value = self.store.value(key)
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def sync(self) -> None:
        self.store.sync()
