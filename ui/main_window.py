"""The main window: library and job setup on the left, views in the middle, jobs on the right,
transport on top, the playback monitor below. It wires the parts together; each part lives in its
own module."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QInputDialog, QLabel, QMainWindow, QSplitter, QToolBar,
                               QWidget)

from hyperaudio import audio as audio_mod
from hyperaudio import hya, metrics, render
from hyperaudio.errors import ConfigError, HyperaudioError
from hyperaudio.plugins import get_registry

from . import compress_dialog, export
from .errors import show_error, show_exception
from .job_setup import NewJobPanel
from .jobs.panel import JobPanel
from .jobs.queue import ACTIVE, Job, JobQueue
from .library import InrItem, LibraryPanel, Sound
from .plugins_dialog import PluginsDialog
from .settings import Settings
from .tasks import Tasks
from .transport import RATES, Player, TransportBar, parse_rate
from .views.spectrogram import ScrollingSpectrogram, SpectrogramView
from .views.waveform import WaveformView

AUDIO_FILTER = "Audio and INRs (*.wav *.flac *.ogg *.mp3 *.aiff *.aif *.au *.hya);;All files (*)"


class MainWindow(QMainWindow):
    ready = Signal()

    def __init__(self, settings: Settings | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("hyperaudio")
        self.setAcceptDrops(True)
        self.settings = settings or Settings()
        self.tasks = Tasks(self)
        self.jobs = JobQueue(self)
        self.player = Player(self)
        self.work_dir = Path(tempfile.mkdtemp(prefix="hyperaudio-gui-"))
        self.shown: tuple[Sound | None, InrItem | Job | None] = (None, None)
        self._live: dict[int, Job] = {}  # sound id -> its running fit

        self.waveform = WaveformView()
        self.spectrogram = SpectrogramView()
        self.spectrogram.link_x(self.waveform.getPlotItem())
        self.views = QSplitter(Qt.Orientation.Vertical)
        self.views.setObjectName("views")
        self.views.addWidget(self.waveform)
        self.views.addWidget(self.spectrogram)
        self.views.setStretchFactor(0, 2)
        self.views.setStretchFactor(1, 3)
        self.setCentralWidget(self.views)
        # The side panels run the full height; the playback monitor sits under the views only.
        self.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)

        self.library = LibraryPanel()
        self.new_job = NewJobPanel()
        self.job_panel = JobPanel(self.jobs)
        self.new_job.fit.watch(self.jobs)  # its ETA waits for the queue; its races fill the recipe display
        self.monitor = ScrollingSpectrogram()
        self.monitor.attach(self.player.tap)
        self.library_dock = self._dock("Library", self.library, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.new_job_dock = self._dock("New job", self.new_job, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.jobs_dock = self._dock("Jobs", self.job_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self.monitor_dock = self._dock("Now playing", self.monitor, Qt.DockWidgetArea.BottomDockWidgetArea)

        self.transport = TransportBar(self.player)
        toolbar = QToolBar("Transport")
        toolbar.setObjectName("transport")
        toolbar.setMovable(False)
        toolbar.addWidget(self.transport)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, toolbar)
        self.busy_label = QLabel()
        self.statusBar().addPermanentWidget(self.busy_label)
        self.tasks.busy_changed.connect(lambda n: self.busy_label.setText(f"working ({n})…" if n else ""))

        self._build_menus()
        QShortcut(QKeySequence(Qt.Key.Key_Space), self, self.player.toggle)

        self.library.selected.connect(self._selection_changed)
        self.new_job.fit.start.connect(lambda: self.start_fit())
        self.new_job.encode.start.connect(lambda: self.start_encode())
        self.new_job.train.start.connect(lambda: self.start_train())
        self.player.failed.connect(lambda message: show_error(self, "Playback", message))
        self.player.position.connect(self._playhead)
        self.player.started.connect(lambda: self.monitor.run(True))
        self.player.stopped.connect(lambda: self.monitor.run(False))
        self.jobs.added.connect(self._job_added)

        self._restore()
        broken = get_registry().broken()
        if broken:
            self.statusBar().showMessage(f"{len(broken)} broken plugin(s): {', '.join(p.name for p in broken)} "
                                         "(Help ▸ Plugins shows why)")
        QTimer.singleShot(0, self.ready.emit)

    # -- layout ------------------------------------------------------------------------------------
    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title.lower().replace(" ", "_"))
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu("&File")
        self.open_action = self._action(file, "&Open…", self.open_dialog, QKeySequence.StandardKey.Open)
        self.recent_menu = file.addMenu("Open &recent")
        file.addSeparator()
        export_menu = file.addMenu("&Export")
        self._action(export_menu, "INR as &WAV…", self.export_wav_dialog)
        self._action(export_menu, "INR as .&hya…", self.export_hya_dialog)
        self._action(export_menu, "INR as &ONNX…", self.export_onnx_dialog)
        self._action(export_menu, "Views as &PNG…", self.export_png_dialog)
        self._action(export_menu, "Metrics &report…", self.export_report_dialog)
        self._action(file, "Export &compressed…", lambda: compress_dialog.open_dialog(self))
        file.addSeparator()
        self._action(file, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        jobs = bar.addMenu("&Jobs")
        self._action(jobs, "&Fit selected sound", lambda: self.new_job.fit.start_button.click())
        view = bar.addMenu("&View")
        for dock in (self.library_dock, self.new_job_dock, self.jobs_dock, self.monitor_dock):
            view.addAction(dock.toggleViewAction())
        self._action(view, "&Refresh output devices", lambda: self.transport.refresh_devices())
        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "&Plugins…", self.show_plugins)
        self._rebuild_recent()

    def _action(self, menu, text, slot, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(shortcut)
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        return action

    def _rebuild_recent(self) -> None:
        self.recent_menu.clear()
        files = self.settings.recent_files()
        for path in files:
            self._action(self.recent_menu, path, lambda p=path: self.open_paths([p]))
        if files:
            self.recent_menu.addSeparator()
            self._action(self.recent_menu, "Clear", lambda: (self.settings.clear_recent(), self._rebuild_recent()))
        self.recent_menu.setEnabled(bool(files))

    def _restore(self) -> None:
        geometry = self.settings.bytes("geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1280, 800)
            self.resizeDocks([self.library_dock, self.jobs_dock], [330, 330], Qt.Orientation.Horizontal)
            self.resizeDocks([self.library_dock, self.new_job_dock], [260, 420], Qt.Orientation.Vertical)
            self.resizeDocks([self.monitor_dock], [120], Qt.Orientation.Vertical)
        state = self.settings.bytes("window_state")
        if state is not None:
            self.restoreState(state)
        views = self.settings.bytes("views_splitter")
        if views is not None:
            self.views.restoreState(views)
        device = self.settings.value("device")
        if device is not None:
            self.transport.set_device(str(device))
        rate = self.settings.value("rate")
        if rate:
            self.transport.set_rate_text(str(rate))

    def save_settings(self) -> None:
        self.settings.set("geometry", self.saveGeometry())
        self.settings.set("window_state", self.saveState())
        self.settings.set("views_splitter", self.views.saveState())
        self.settings.set("device", self.player.device)
        self.settings.set("rate", self.transport.rate_box.currentText())
        self.settings.sync()

    def closeEvent(self, event) -> None:
        self.save_settings()
        self.player.stop()
        self.jobs.shutdown()
        self.tasks.shutdown()
        shutil.rmtree(self.work_dir, ignore_errors=True)
        super().closeEvent(event)

    # -- opening -----------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open sounds or INRs", self.settings.value("last_dir", ""),
                                                AUDIO_FILTER)
        if paths:
            self.settings.set("last_dir", str(Path(paths[0]).parent))
            self.open_paths(paths)

    def open_paths(self, paths) -> list[Sound]:
        opened = []
        for path in map(Path, paths):
            try:
                if path.suffix.lower() == ".hya":
                    opened.append(self._open_hya(path))
                else:
                    opened.append(self.add_sound(*audio_mod.load(path), path=path))
            except Exception as exc:  # AudioError, HyaError, anything unexpected in a file
                show_exception(self, f"Cannot open {path.name}", exc)
                continue
            self.settings.add_recent(path)
        self._rebuild_recent()
        return opened

    def add_sound(self, x: np.ndarray, sample_rate: float, path: Path | None = None, name: str | None = None) -> Sound:
        sound = Sound(name or (path.name if path else "untitled"), np.asarray(x, np.float32), float(sample_rate), path)
        self.library.add_sound(sound)
        self.library.select(sound)
        self.statusBar().showMessage(f"opened {sound.name}: {sound.duration:.2f} s, {sound.sample_rate:g} Hz, "
                                     f"{sound.channels} channel(s)", 8000)
        return sound

    def _open_hya(self, path: Path) -> Sound:
        inr = hya.load(path)
        sound = Sound(path.name, None, inr.sample_rate, path)
        self.library.add_sound(sound)
        self.add_inr(InrItem(path.stem, inr, sound, "file", path))
        return sound

    def add_inr(self, entry: InrItem) -> None:
        """Show ``entry`` in the library, then render it and measure it in the background."""
        self.library.add_inr(entry)
        sound = entry.sound

        def work():
            y = render.render(entry.inr, sound.sample_rate)
            values = {}
            if sound.audio is not None:
                n = min(sound.audio.shape[1], y.shape[1])
                values = metrics.evaluate(sound.audio[:, :n], y[:, :n], sound.sample_rate)
            return y, values

        def done(result):
            entry.reconstruction, entry.metrics = result
            self.library.update_inr(entry)
            if self.shown[1] is entry:
                self._show(sound, entry)

        self.tasks.run(work, on_done=done, on_error=lambda exc: show_exception(self, f"Cannot render {entry.name}", exc))

    # -- drag and drop -----------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_paths(paths)

    # -- selection and views -----------------------------------------------------------------------
    def _selection_changed(self, sound: Sound | None, inr: InrItem | None) -> None:
        explicit_inr = bool(self.library.selectedItems()) and self.library.selectedItems()[0].parent() is not None
        live = self._live.get(sound.id) if sound is not None else None
        if live is not None and not explicit_inr:
            self._show(sound, live)
        else:
            self._show(sound, inr)

    def _show(self, sound: Sound | None, what: InrItem | Job | None) -> None:
        self.shown = (sound, what)
        if sound is None:
            self.waveform.set_signals(None, None, 1.0)
            self.spectrogram.set_signals(None, None, 1.0)
            self.player.set_sources(None, None, None)
            return
        if isinstance(what, Job):
            reconstruction = what.context["preview"]
            inr = None
        elif isinstance(what, InrItem):
            reconstruction, inr = what.reconstruction, what.inr
        else:
            reconstruction, inr = None, None
        # Spectrograms first: their new time limits must be in place when the waveform's range,
        # which they follow, changes.
        self.spectrogram.set_signals(sound.audio, reconstruction, sound.sample_rate)
        self.waveform.set_signals(sound.audio, reconstruction, sound.sample_rate)
        self.player.set_sources(sound.audio, sound.sample_rate, inr)
        label = f"{sound.name}" + (f" — {what.name}" if isinstance(what, InrItem) else
                                   " — live fit preview" if isinstance(what, Job) else "")
        self.setWindowTitle(f"hyperaudio — {label}")

    def _playhead(self, seconds) -> None:
        self.waveform.set_playhead(seconds)
        self.spectrogram.set_playhead(seconds)

    # -- jobs --------------------------------------------------------------------------------------
    def selected_sound(self) -> Sound | None:
        return self.library.current()[0]

    def start_fit(self, cfg: dict | None = None) -> Job | None:
        sound = self.selected_sound()
        if sound is None or sound.audio is None:
            show_error(self, "Fit", "Select a sound in the library first (open one with File ▸ Open or drop a file).")
            return None
        try:
            cfg = cfg if cfg is not None else self.new_job.fit.resolved()
        except ConfigError as exc:
            show_exception(self, "Invalid settings", exc)
            return None
        target = cfg["target"]["name"]
        job = Job("fit", f"fit {sound.name} ({target})", {"audio": sound.audio, "sample_rate": sound.sample_rate,
                                                         "config": cfg},
                  context={"sound": sound, "preview": np.zeros_like(sound.audio), "target": target})
        job.spec["out"] = str(self.work_dir / f"{Path(sound.name).stem}-{target}-{job.id}.hya")
        return self.jobs.submit(job)

    def start_encode(self) -> Job | None:
        sound = self.selected_sound()
        if sound is None or sound.audio is None:
            show_error(self, "Encode", "Select a sound in the library first (open one with File ▸ Open or drop a file).")
            return None
        try:
            model = self.new_job.encode.model()
        except ConfigError as exc:
            show_exception(self, "Encode", exc)
            return None
        steps = self.new_job.encode.refine_box.value()
        job = Job("encode", f"encode {sound.name}" + (f" (+{steps} steps)" if steps else ""),
                  {"model": model, "audio": sound.audio, "sample_rate": sound.sample_rate, "refine_steps": steps},
                  context={"sound": sound})
        job.spec["out"] = str(self.work_dir / f"{Path(sound.name).stem}-encoded-{job.id}.hya")
        return self.jobs.submit(job)

    def start_train(self) -> Job | None:
        try:
            spec = self.new_job.train.request()
        except ConfigError as exc:
            show_exception(self, "Train", exc)
            return None
        name = (spec["config"] or {}).get("preset", {}).get("name") or "hypernetwork"
        return self.jobs.submit(Job("train", f"train {name} → {Path(spec['out_dir']).name}", spec))

    def _job_added(self, job: Job) -> None:
        job.previewed.connect(self._job_preview)
        job.succeeded.connect(self._job_succeeded)
        job.errored.connect(self._job_failed)
        job.changed.connect(self._job_changed)

    def _job_changed(self, job: Job) -> None:
        sound = job.context.get("sound")
        if sound is None or job.kind != "fit":
            return
        if job.state == "running" and sound.id not in self._live:
            self._live[sound.id] = job
            if self.selected_sound() is sound:
                self._show(sound, job)
        elif job.state not in ACTIVE and self._live.get(sound.id) is job:
            del self._live[sound.id]

    def _job_preview(self, job: Job, payload: dict) -> None:
        buf = job.context.get("preview")
        if buf is None:
            return
        regions = []
        for channel, start, values in payload["segments"]:
            stop = min(buf.shape[1], start + len(values))
            buf[channel, start:stop] = values[: stop - start]
            regions.append((start, stop))
        if self.shown[1] is job:
            for start, stop in _merge(regions):
                mono = buf[:, start:stop].mean(axis=0) if buf.shape[0] > 1 else buf[0, start:stop]
                self.waveform.patch_reconstruction(start, mono)
                self.spectrogram.patch_reconstruction(start, mono)

    def _job_succeeded(self, job: Job, result) -> None:
        stopped = " (stopped)" if job.state == "stopped" else ""
        if job.kind in ("fit", "encode"):
            sound = job.context["sound"]
            path = Path(result["path"])
            try:
                inr = hya.load(path)
            except HyperaudioError as exc:
                show_exception(self, f"{job.title}: cannot read the result", exc)
                return
            label = job.context.get("target") or f"encoded {inr.config.get('target', {}).get('name', '')}".strip()
            self.add_inr(InrItem(f"{label} #{job.id}{stopped}", inr, sound, job.kind, path))
        elif job.kind == "train":
            # The trained model is ready to encode with: offer it in the Encode tab.
            self.new_job.encode.set_model(result["model_path"])
        self.statusBar().showMessage(f"{job.title}: {job.state}", 8000)

    def _job_failed(self, job: Job, message: str, details: str) -> None:
        show_error(self, "Job failed", f"{job.title} failed:\n{message}", details or None)

    # -- exports -----------------------------------------------------------------------------------
    def _selected_inr(self) -> InrItem | None:
        sound, inr = self.library.current()
        if inr is None:
            show_error(self, "Export", "Select an INR in the library first (fit a sound, or open a .hya).")
        return inr

    def _save_name(self, title: str, suggestion: str, filter_: str) -> str | None:
        folder = self.settings.value("export_dir", str(Path.home()))
        path, _ = QFileDialog.getSaveFileName(self, title, str(Path(folder) / suggestion), filter_)
        if path:
            self.settings.set("export_dir", str(Path(path).parent))
        return path or None

    def _export(self, title: str, fn, *args, message) -> None:
        """Run ``fn(*args)`` in the background; ``message``: the status line, or a function of the result."""
        def done(result):
            self.statusBar().showMessage(message(result) if callable(message) else message, 8000)

        self.tasks.run(fn, *args, on_done=done, on_error=lambda exc: show_exception(self, title, exc))

    def export_wav_dialog(self) -> None:
        entry = self._selected_inr()
        if entry is None:
            return
        current = self.transport.rate_box.currentText()
        items = ["native"] + [str(r) for r in RATES]
        text, ok = QInputDialog.getItem(self, "Export WAV", "sample rate (Hz)", items,
                                        items.index(current) if current in items else 0, True)
        if not ok:
            return
        rate = parse_rate(text)
        if rate is False:
            show_error(self, "Export WAV", f"not a sample rate: {text!r} (use 1000 to 768000 Hz)")
            return
        rate = rate or entry.inr.sample_rate
        path = self._save_name("Export WAV", f"{Path(entry.sound.name).stem}_{rate:g}.wav", "WAV (*.wav)")
        if path:
            self._export("Export WAV", export.export_wav, entry.inr, path, rate, message=f"wrote {path} at {rate:g} Hz")

    def export_hya_dialog(self) -> None:
        entry = self._selected_inr()
        path = entry and self._save_name("Save INR", f"{Path(entry.sound.name).stem}.hya", "INR (*.hya)")
        if path:
            self._export("Save .hya", export.export_hya, entry.inr, path, message=f"wrote {path}")

    def export_onnx_dialog(self) -> None:
        entry = self._selected_inr()
        path = entry and self._save_name("Export ONNX", f"{Path(entry.sound.name).stem}.onnx", "ONNX (*.onnx)")
        if path:
            self._export("Export ONNX", export.export_onnx, entry.inr, path,
                         message=lambda diff: f"wrote {path} (max difference from PyTorch {diff:.3g})")

    def export_png_dialog(self) -> None:
        path = self._save_name("Save views as PNG", "views.png", "PNG (*.png)")
        if path:
            self.save_views_png(path)

    def save_views_png(self, path) -> Path:
        if not self.views.grab().save(str(path), "PNG"):
            show_error(self, "Save PNG", f"could not write {path}")
        else:
            self.statusBar().showMessage(f"wrote {path}", 8000)
        return Path(path)

    def export_report_dialog(self) -> None:
        entry = self._selected_inr()
        if entry is None:
            return
        if entry.reconstruction is None:
            show_error(self, "Metrics report", "the INR is still being rendered; try again in a moment")
            return
        path = self._save_name("Metrics report", f"{Path(entry.sound.name).stem}-report.md", "Markdown (*.md)")
        if path:
            self._export("Metrics report", export.export_report, path, entry.name, entry.sound.audio,
                         entry.reconstruction, entry.sound.sample_rate, entry.inr, dict(entry.metrics),
                         message=f"wrote {path}")

    # -- plugins -----------------------------------------------------------------------------------
    def show_plugins(self) -> PluginsDialog:
        dialog = PluginsDialog(self)
        dialog.reloaded.connect(self.new_job.reload)
        dialog.open()
        return dialog


def _merge(regions: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in sorted(regions):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]

