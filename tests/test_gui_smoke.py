"""The app starts as a user starts it (``hyperaudio gui``, a separate process, offscreen) and reaches
its ready state; without PySide6 the command says what to install and exits with status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("hyperaudio_ui")


def test_hyperaudio_gui_starts_with_the_demo_sound_and_gets_ready(tmp_path):
    shot = tmp_path / "smoke.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path / "config")}
    result = subprocess.run([sys.executable, "-m", "hyperaudio.cli", "gui", "--demo", "--smoke-test",
                             "--screenshot", str(shot)], capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "hyperaudio-gui: ready" in result.stdout
    assert shot.stat().st_size > 10_000
    # Settings were written where QSettings keeps them (the window layout persists).
    assert list(Path(tmp_path / "config").rglob("*.conf"))


def test_the_launcher_script_is_installed():
    scripts = Path(sys.executable).parent
    assert (scripts / "hyperaudio-gui").exists()


def test_gui_without_pyside6_says_what_to_install(monkeypatch, capsys):
    import importlib.util

    from hyperaudio import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "PySide6" else real(name, *a))
    assert cli.main(["gui", "--smoke-test"]) == 2
    err = capsys.readouterr().err
    assert "PySide6" in err and "pip install 'hyperaudio[gui]'" in err


def test_core_never_imports_qt():
    code = ("import sys, hyperaudio, hyperaudio.cli, hyperaudio.fit, hyperaudio.render, hyperaudio.playback.engine, "
            "hyperaudio_ui.jobs.worker; bad = [m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gui_without_a_display_says_so(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run([sys.executable, "-m", "hyperaudio.cli", "gui", "--smoke-test"], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 2 and "no display" in result.stderr
