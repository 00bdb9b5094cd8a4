"""File ▸ Export compressed… (issue #17): the dialog's kb/s and size, the compression as a job in
the queue, its result in the library, and the transport's A/B against the original."""

from __future__ import annotations

from pathlib import Path

from gui_support import SR, WAIT_MS, dialogs, screenshot, screenshot_dir, settings_path, tone_and_noise, window  # noqa: F401
from PySide6.QtWidgets import QDialog, QDialogButtonBox

from hyperaudio import compress, hya


def test_dialog_shows_the_budget_and_refuses_one_too_small(window, write_audio, tmp_path):
    from hyperaudio_ui.compress_dialog import CompressDialog

    (sound,) = window.open_paths([write_audio("voice.wav", tone_and_noise(0.5), SR)])
    dialog = CompressDialog(sound, tmp_path)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    dialog.kbps_box.setValue(24.0)
    assert f"{compress.budget_bytes(24.0, 0.5):,} bytes" in dialog.size_label.text() and ok.isEnabled()
    assert dialog.path_edit.text().endswith("voice_24kbps.hya")
    small = dialog.plan.parameters
    dialog.kbps_box.setValue(96.0)
    assert dialog.plan.parameters * dialog.plan.bits > small * 4
    dialog.kbps_box.setValue(1.0)
    assert not ok.isEnabled() and "raise --kbps" in dialog.size_label.text()


def test_export_compressed_runs_as_a_job_and_ab_compares_with_the_original(
        window, qtbot, write_audio, tmp_path, monkeypatch, screenshot):
    from hyperaudio_ui import compress_dialog

    (sound,) = window.open_paths([write_audio("voice.wav", tone_and_noise(0.5), SR)])
    out = tmp_path / "voice_c.hya"

    def accept(dialog):
        dialog.kbps_box.setValue(32.0)
        dialog.seconds_box.setValue(6.0)
        dialog.path_edit.setText(str(out))
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(compress_dialog.CompressDialog, "exec", accept)
    menu = next(a for a in window.menuBar().actions() if a.text() == "&File").menu()
    next(a for a in menu.actions() if a.text() == "Export &compressed…").trigger()
    (job,) = window.jobs.jobs
    assert job.state in ("queued", "running")  # the GUI thread only queued it
    qtbot.waitUntil(lambda: job.state == "done", timeout=WAIT_MS)
    assert out.stat().st_size <= compress.budget_bytes(32.0, 0.5)
    assert hya.read_header(out).quantization is not None
    qtbot.waitUntil(lambda: len(sound.inrs) == 1 and bool(sound.inrs[0].metrics), timeout=WAIT_MS)
    entry = sound.inrs[0]
    assert entry.name.startswith("compressed") and "kb/s" in entry.name and Path(entry.path) == out
    assert window.library.current()[1] is entry
    bar = window.transport
    assert bar.b_button.text() == "B: compressed (32 kb/s)"
    assert window.player._current() is entry.inr
    bar.a_button.setChecked(True)
    original = window.player._current()
    assert isinstance(original, tuple) and original[0] is sound.audio
    bar.b_button.setChecked(True)
    assert window.player._current() is entry.inr
    screenshot(window, "compressed")
    assert not window.dialogs
