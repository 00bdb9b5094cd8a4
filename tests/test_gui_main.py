"""The desktop app without jobs: opening sounds (dialog, drag and drop, recent files, .hya), the
views, exports, the plugin registry, the settings form, persistence and error dialogs."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import soundfile as sf
from gui_support import SR, dialogs, inject, screenshot, screenshot_dir, settings_path, small_inr, tone_and_noise, window  # noqa: F401

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent  # noqa: E402


def drop(widget, paths) -> bool:
    """Drag files over ``widget`` and drop them, as the window system would: enter, move, drop.
    Returns whether the widget accepted the drag. (Qt delivers a drop only after an accepted enter.)"""
    from PySide6.QtWidgets import QApplication

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the QPoint constructors, still the documented ones
        enter = QDragEnterEvent(QPoint(300, 300), *args)
        QApplication.sendEvent(widget, enter)
        accepted = enter.isAccepted()
        QApplication.sendEvent(widget, QDragMoveEvent(QPoint(310, 300), *args))
    QApplication.sendEvent(widget, QDropEvent(QPointF(310, 300), *args))
    return accepted


def test_open_by_dialog_and_by_drop_with_recent_files_and_bad_files(window, inject, write_audio, tmp_path,
                                                                    screenshot, settings_path):
    first = write_audio("first.wav", tone_and_noise(), SR)
    second = write_audio("second.flac", np.concatenate([tone_and_noise(seed=1)] * 2, axis=1), SR)
    inject.open([first])
    window.open_action.trigger()
    assert [s.name for s in window.library.sounds] == ["first.wav"]
    assert window.waveform.original_curve.getData()[0] is not None
    assert len(window.waveform.original_curve.getData()[0]) > 100
    assert window.spectrogram.data["original"] is not None and window.spectrogram.data["reconstruction"] is None

    assert drop(window, [second])
    assert [s.name for s in window.library.sounds] == ["first.wav", "second.flac"]
    assert window.library.current()[0].name == "second.flac"
    assert abs(window.waveform.duration - 0.6) < 1e-3

    # Recent files persist in the settings and reopen from the menu.
    recent = window.settings.recent_files()
    assert recent[:2] == [str(second.resolve()), str(first.resolve())]
    actions = [a for a in window.recent_menu.actions() if a.text() == str(first.resolve())]
    actions[0].trigger()
    assert len(window.library.sounds) == 3

    # Bad files are dialogs, not crashes; nothing is added.
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio")
    nan = tone_and_noise()
    nan[0, 10] = np.nan
    nan_path = tmp_path / "nan.wav"
    sf.write(str(nan_path), nan.T, SR, subtype="FLOAT")
    inject.open([not_audio, nan_path, tmp_path / "missing.flac"])
    window.open_action.trigger()
    assert len(window.library.sounds) == 3
    messages = [text for _, text, _ in window.dialogs]
    assert len(messages) == 3
    assert "not an audio file" in messages[0] and "NaN" in messages[1] and "no such file" in messages[2]
    screenshot(window, "01-opened")



def test_hostile_hya_files_are_dialogs_and_add_nothing(window, inject, tmp_path):
    # Issue #15: what the CLI refuses in one line, the app refuses in a dialog, and nothing is added.
    import json

    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from hyperaudio import hya

    good = hya.save(small_inr(), tmp_path / "good.hya")
    with safe_open(str(good), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    huge = json.loads(meta["config"])
    huge["target"]["params"]["hidden"] = [10**9, 10**9]
    poisoned = {k: (torch.full_like(v, float("nan")) if k.startswith("params.") else v) for k, v in tensors.items()}
    cases = {"huge.hya": ({**meta, "config": json.dumps(huge)}, tensors),
             "nan.hya": (meta, poisoned),
             "rate.hya": ({**meta, "sample_rate": "0.0"}, tensors),
             "chunks.hya": ({**meta, "chunks": "[]"}, tensors)}
    for name, (m, t) in cases.items():
        save_file(t, str(tmp_path / name), metadata=m)
    before = len(window.library.sounds)
    inject.open([tmp_path / name for name in cases])
    window.open_action.trigger()
    assert len(window.library.sounds) == before
    messages = [text for _, text, _ in window.dialogs]
    assert len(messages) == 4, messages
    for text, expected in zip(messages, ["too large", "NaN or infinite", "unsupported sample rate", "0 chunks"]):
        assert expected in text and "Traceback" not in text, text

def test_views_show_original_and_reconstruction_peak_downsampled(window, qtbot):
    from hyperaudio_ui.library import InrItem
    from hyperaudio_ui.views.waveform import Envelope

    x = 0.5 * np.sin(np.linspace(0, 400 * np.pi, 200_000)).astype(np.float32)
    x[123_457] = 0.99  # a single-sample peak must survive the downsampling
    env = Envelope(x)
    t, y = env.points(0, len(x), 500)
    assert len(t) <= 1000 and y.max() == pytest.approx(0.99) and y.min() == pytest.approx(-0.5, abs=1e-3)
    t, y = env.points(100, 150, 500)  # zoomed in: the samples themselves
    assert np.array_equal(y, x[100:150])
    long = Envelope(np.tile(x, 10))  # coarse level: same peaks
    assert long.coarse is not None and long.points(0, 2_000_000, 800)[1].max() == pytest.approx(0.99)

    sound = window.add_sound(tone_and_noise(), SR, name="tone")
    entry = InrItem("inr", small_inr(), sound, "fit")
    window.add_inr(entry)
    qtbot.waitUntil(lambda: entry.reconstruction is not None and bool(entry.metrics), timeout=30_000)
    qtbot.waitUntil(lambda: window.spectrogram.data["difference"] is not None, timeout=10_000)
    assert {"si-snr", "psnr", "lsd", "mse"} <= set(entry.metrics)
    item = window.library._items[entry.id]
    assert item.text(3).endswith("dB") and item.text(6).replace(",", "").isdigit()
    rec_t, rec_y = window.waveform.reconstruction_curve.getData()
    assert rec_t is not None and len(rec_t) > 100
    # Zooming redraws from the envelope of what is visible.
    before = window.waveform.redraws
    window.waveform.getPlotItem().setXRange(0.1, 0.11, padding=0)
    qtbot.waitUntil(lambda: window.waveform.redraws > before, timeout=5000)
    t, _ = window.waveform.original_curve.getData()
    assert t.min() >= 0.1 - 2 / SR and t.max() <= 0.11 + 3 / SR


def test_exports_wav_hya_onnx_png_and_report(window, inject, qtbot, tmp_path, screenshot):
    pytest.importorskip("onnxruntime")
    from hyperaudio import hya
    from hyperaudio_ui.library import InrItem

    sound = window.add_sound(tone_and_noise(), SR, name="tone.wav")
    entry = InrItem("nerf", small_inr(), sound, "fit")
    window.add_inr(entry)
    qtbot.waitUntil(lambda: entry.reconstruction is not None, timeout=30_000)
    actions = {a.text(): a for a in window.findChildren(type(window.open_action))}

    wav = tmp_path / "out" / "tone_8k.wav"
    inject.item("8000")
    inject.save(wav)
    actions["INR as &WAV…"].trigger()
    qtbot.waitUntil(wav.exists, timeout=30_000)
    info = sf.info(str(wav))
    assert info.samplerate == 8000 and abs(info.frames - 0.3 * 8000) <= 1

    path = tmp_path / "out" / "tone.hya"
    inject.save(path)
    actions["INR as .&hya…"].trigger()
    qtbot.waitUntil(path.exists, timeout=30_000)
    assert hya.load(path).num_samples == entry.inr.num_samples

    onnx = tmp_path / "out" / "tone.onnx"
    inject.save(onnx)
    actions["INR as &ONNX…"].trigger()
    qtbot.waitUntil(onnx.exists, timeout=60_000)
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    (y,) = session.run(["audio"], {"position": np.arange(100, dtype=np.float64)})
    assert y.shape == (1, 100)

    png = tmp_path / "out" / "views.png"
    inject.save(png)
    actions["Views as &PNG…"].trigger()
    assert png.exists() and png.stat().st_size > 5000

    report = tmp_path / "out" / "tone-report.md"
    inject.save(report)
    actions["Metrics &report…"].trigger()
    qtbot.waitUntil(lambda: report.exists() and report.with_suffix(".json").exists(), timeout=60_000)
    text = report.read_text()
    assert "si-snr" in text and "| reconstruction |" in text
    assert window.dialogs == []

    # The exported .hya opens on its own (no original) and renders.
    window.open_paths([path])
    opened = window.library.sounds[-1]
    assert opened.audio is None and opened.inrs[0].origin == "file"
    qtbot.waitUntil(lambda: opened.inrs[0].reconstruction is not None, timeout=30_000)
    screenshot(window, "05-exported")

    # Export without an INR selected: a dialog.
    window.library.select(window.add_sound(tone_and_noise(), SR, name="bare"))
    inject.save(tmp_path / "never.hya")
    actions["INR as .&hya…"].trigger()
    assert window.dialogs and "Select an INR" in window.dialogs[-1][1]


def test_registry_drives_the_choices_and_broken_plugins_are_listed(window, screenshot):
    import torch

    from hyperaudio.hookspecs import hookimpl
    from hyperaudio.plugins import get_registry

    fit = window.new_job.fit
    registry = get_registry()
    assert [fit.target_box.itemText(i) for i in range(fit.target_box.count())] == registry.names("target_networks")

    class Wobble(torch.nn.Module):
        def __init__(self, partials: int = 3, depth: float = 0.5):
            super().__init__()
            self.amp = torch.nn.Parameter(torch.zeros(partials))
            self.depth = depth

        def forward(self, t):
            return (self.amp * torch.sin(t * (1 + torch.arange(len(self.amp))))).sum(-1, keepdim=True)

    class Plugin:
        @hookimpl
        def register_target_networks(self, register):
            register("wobble", Wobble, description="a test network")

    class Broken:
        @hookimpl
        def register_target_networks(self, register):
            raise RuntimeError("needs a GPU from the future")

    registry.register_plugin(Plugin(), dist="wobble-plugin", version="1.0")
    registry.register_plugin(Broken(), dist="broken-plugin", version="0.1")
    fit.reload()
    assert "wobble" in [fit.target_box.itemText(i) for i in range(fit.target_box.count())]
    fit.select("wobble")
    assert fit.preset_box.currentText() == "(auto recipe)"
    assert {"target.params.partials", "target.params.depth"} <= set(fit.form.fields)
    fit.form.set_value("target.params.partials", 5)
    assert fit.resolved()["target"]["params"] == {"partials": 5}

    dialog = window.show_plugins()
    assert "broken-plugin" in dialog.broken_rows()
    top = [dialog.tree.topLevelItem(i) for i in range(dialog.tree.topLevelItemCount())]
    broken = next(item for item in top if item.text(0) == "broken-plugin")
    assert "needs a GPU from the future" in broken.text(2)
    wobble = next(item for item in top if item.text(0) == "wobble-plugin")
    assert wobble.child(0).text(0) == "wobble" and wobble.child(0).text(1) == "target network"
    screenshot(dialog, "08-plugins")
    # Reload: the registry is loaded afresh from the installed plugins (the test's own are gone).
    dialog.reload_button.click()
    assert "wobble" not in [fit.target_box.itemText(i) for i in range(fit.target_box.count())]
    assert "broken-plugin" not in dialog.broken_rows()
    dialog.close()


def test_settings_form_sends_only_changes_and_rejects_bad_values(window, qtbot):
    fit = window.new_job.fit
    fit.select("nerf", "nerf-inr")
    assert fit.form.fields["target.params.hidden"].widget.text() == "[90, 90, 90, 90, 90]"
    assert fit.form.overrides() == ["fit.eval_every=5"]  # the app's own default, visibly set
    fit.form.fields["fit.lr"].widget.setText("2e-3")
    fit.form.fields["target.params.hidden"].widget.setText("[8, 8]")
    fit.form.fields["fit.optimizer"].widget.setCurrentText("adam")
    cfg = fit.resolved()
    assert cfg["fit"]["lr"] == 0.002 and cfg["fit"]["optimizer"] == "adam"
    assert cfg["target"]["params"]["hidden"] == [8, 8]
    fit.form.fields["fit.lr"].widget.setText("fast")
    window.add_sound(tone_and_noise(), SR, name="tone")
    fit.start_button.click()
    assert window.jobs.jobs == [] and "not a number" in window.dialogs[-1][1]
    fit.form.fields["fit.lr"].widget.setText("-1")
    fit.start_button.click()
    assert window.jobs.jobs == [] and "fit.lr must be positive" in window.dialogs[-1][1]


def test_layout_and_playback_settings_persist(qtbot, dialogs, settings_path):
    from hyperaudio_ui.main_window import MainWindow
    from hyperaudio_ui.settings import Settings
    from hyperaudio_ui.transport import NULL_DEVICE

    first = MainWindow(Settings.at(settings_path))
    qtbot.addWidget(first)
    first.show()
    first.resize(1100, 700)
    first.transport.set_device(NULL_DEVICE)
    first.transport.set_rate_text("32000")
    first.jobs_dock.hide()
    first.close()
    second = MainWindow(Settings.at(settings_path))
    qtbot.addWidget(second)
    second.show()
    # Restored, not the 1280 x 800 default (Qt fits the width to the offscreen platform's 800 px screen).
    assert second.height() == 700 and second.width() <= 1100
    assert second.player.device == NULL_DEVICE and second.player.rate == 32000.0
    assert second.transport.rate_box.currentText() == "32000"
    assert not second.jobs_dock.isVisible()
    second.close()


def test_uncaught_exceptions_become_dialogs(window, qtbot):
    from hyperaudio_ui import errors

    old = sys.excepthook
    errors.install_excepthook()
    try:
        try:
            raise ZeroDivisionError("a bug in a slot")
        except ZeroDivisionError:
            sys.excepthook(*sys.exc_info())
    finally:
        sys.excepthook = old
    title, text, details = window.dialogs[-1]
    assert title == "Unexpected error" and "ZeroDivisionError: a bug in a slot" in text
    assert "Traceback" in details
    assert window.isVisible()
