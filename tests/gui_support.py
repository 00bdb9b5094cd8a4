"""Fixtures and helpers shared by the desktop-app tests (tests/test_gui_*.py).

The app runs on Qt's offscreen platform (tests/conftest.py sets QT_QPA_PLATFORM). Dialogs that
would block are replaced: ``QMessageBox.exec`` records the box, file and input dialogs return what a
test injects. Screenshots of the window in each state go to ``$HYPERAUDIO_SCREENSHOTS`` (or a
temporary folder).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
pytest.importorskip("hyperaudio_ui")

from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox  # noqa: E402

SR = 16000
WAIT_MS = 90_000  # generous: a worker process imports torch first, on a shared 2-core machine


def tone_and_noise(seconds: float = 0.3, sr: int = SR, seed: int = 0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(seed)
    x = 0.4 * np.sin(2 * np.pi * 330 * t) * np.hanning(len(t)) + 0.1 * np.sin(2 * np.pi * 1250 * t)
    return (x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)[None]


@pytest.fixture
def dialogs(monkeypatch):
    """Every QMessageBox the app shows, as (title, text, details), instead of a blocking dialog."""
    shown: list[tuple[str, str, str]] = []

    def record(box):
        shown.append((box.windowTitle(), box.text(), box.detailedText()))
        return QMessageBox.StandardButton.Ok

    monkeypatch.setattr(QMessageBox, "exec", record)
    return shown


@pytest.fixture
def inject(monkeypatch):
    """``inject.open(paths)``, ``inject.save(path)``, ``inject.item(text)``: what the next file or
    input dialog answers."""

    class Inject:
        def open(self, paths):
            monkeypatch.setattr(QFileDialog, "getOpenFileNames", staticmethod(lambda *a, **k: ([str(p) for p in paths], "")))

        def save(self, path):
            monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(path), "")))

        def item(self, text):
            monkeypatch.setattr(QInputDialog, "getItem", staticmethod(lambda *a, **k: (text, True)))

    return Inject()


@pytest.fixture
def settings_path(tmp_path):
    return tmp_path / "settings.ini"


@pytest.fixture
def window(qtbot, dialogs, settings_path):
    from hyperaudio_ui.main_window import MainWindow
    from hyperaudio_ui.settings import Settings

    w = MainWindow(Settings.at(settings_path))
    w.dialogs = dialogs
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.player.stop()
    w.jobs.shutdown(timeout=5.0)


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    folder = os.environ.get("HYPERAUDIO_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def screenshot(screenshot_dir, qtbot):
    def take(widget, name: str) -> Path:
        qtbot.wait(150)  # let the refresh timers draw
        path = screenshot_dir / f"{name}.png"
        assert widget.grab().save(str(path), "PNG")
        return path

    return take


def small_inr(seconds: float = 0.3, sr: int = SR, channels: int = 1):
    """An untrained but valid NeRF INR (two chunks), quick to render and export."""
    import torch

    from hyperaudio import config
    from hyperaudio.fit import chunk_layout
    from hyperaudio.hya import INR

    cfg = config.resolve("nerf-inr", None, ["target.params.hidden=[16, 16]", "target.params.encoding_length=4"])
    torch.manual_seed(0)
    module = config.build_target(cfg)
    n = int(sr * seconds)
    chunks = chunk_layout(n, n // 2 + 256, 256)
    params = {k: torch.stack([p.detach() * (1 + 0.1 * j) for j in range(len(chunks) * channels)])
              for k, p in module.named_parameters()}
    return INR(cfg, module, params, float(sr), n, channels, chunks, {"steps": 0})


def finite(values) -> bool:
    return all(isinstance(v, float) and not math.isnan(v) for v in values)


