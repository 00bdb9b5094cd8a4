"""The Jobs panel: the queue with progress bars and ETAs, pause/resume/stop, and live curves of the
selected job's loss and SI-SNR (redrawn by a timer, not per report)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (QHBoxLayout, QHeaderView, QProgressBar, QPushButton, QSplitter, QTreeWidget,
                               QTreeWidgetItem, QVBoxLayout, QWidget)

from .queue import ACTIVE, Job, JobQueue

REFRESH_MS = 200


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds // 60 % 60:02d}"


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def recipe_text(recipe: dict) -> str:
    """What the auto recipe's race chose, in a line (``info["recipe"]``)."""
    lr = f"{recipe['lr']:.0e}".replace("e-0", "e-")  # 3e-3, as the docs write it
    text = (f"lr {lr}, time scale ×{recipe['time_scale']:g} "
            f"(raced {recipe.get('race_seconds', 0):.1f} s, {recipe.get('race_steps', 0)} steps)")
    if recipe.get("restarts"):
        text += f"; restarted {_times(recipe['restarts'])}: nothing learnt at first"
    if recipe.get("spectral_encoding"):
        text += "; the sound's partials put into its positional encoding"
    return text


def state_text(job: Job) -> str:
    """The job's state as its row shows it: with what a fit is doing, and a fit that learns nothing."""
    state = job.state
    if state == "running" and job.last.get("phase") == "race":
        state = "choosing lr and time scale"
    low = job.not_learning()
    if low is not None:
        state += f": {'not learning' if job.state in ACTIVE else 'nothing learnt'} (SI-SNR {low:.1f} dB)"
    restarts = (job.recipe or {}).get("restarts")
    if restarts:
        state += f", restarted ×{restarts}" if low is not None else f", restarted ×{restarts}: nothing learnt at first"
    return f"{state} %p%" if job.state in ("running", "paused", "stopping", "done") else state


class JobPanel(QWidget):
    COLUMNS = ("job", "progress", "ETA", "loss", "SI-SNR")

    def __init__(self, queue: JobQueue, parent=None):
        super().__init__(parent)
        self.queue = queue
        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(self.COLUMNS))
        self.tree.setHeaderLabels(list(self.COLUMNS))
        self.tree.setRootIsDecorated(False)
        header = self.tree.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(self.COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.pause_button = QPushButton("Pause")
        self.stop_button = QPushButton("Stop")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.stop_button.clicked.connect(self.stop_selected)
        buttons = QHBoxLayout()
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)

        self.curves = pg.GraphicsLayoutWidget()
        self.curves.setBackground("w")
        self.curves.setMinimumHeight(160)
        self.loss_plot = self.curves.addPlot(row=0, col=0)
        self.loss_plot.setLabel("left", "loss")
        self.loss_plot.setLogMode(y=True)
        self.loss_plot.showGrid(x=True, y=True, alpha=0.25)
        self.sisnr_plot = self.curves.addPlot(row=1, col=0)
        self.sisnr_plot.setLabel("left", "SI-SNR", units="dB")
        self.sisnr_plot.setLabel("bottom", "step")
        self.sisnr_plot.showGrid(x=True, y=True, alpha=0.25)
        self.sisnr_plot.setXLink(self.loss_plot)
        self.loss_curve = self.loss_plot.plot([], [], pen=pg.mkPen("#d62728", width=2))
        self.sisnr_curve = self.sisnr_plot.plot([], [], pen=pg.mkPen("#2ca02c", width=2))

        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.tree)
        top_layout.addLayout(buttons)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(self.curves)
        split.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(split)

        self._items: dict[int, QTreeWidgetItem] = {}
        self._bars: dict[int, QProgressBar] = {}
        self._jobs: dict[int, Job] = {}
        self._curves_dirty = False
        self.curve_updates = 0  # for tests
        self._timer = QTimer(self, interval=REFRESH_MS)
        self._timer.timeout.connect(self._refresh)
        self._timer.start()
        queue.added.connect(self.add_job)
        self.tree.itemSelectionChanged.connect(self._selection_changed)
        self._update_buttons()

    # -- jobs --------------------------------------------------------------------------------------
    def add_job(self, job: Job) -> None:
        item = QTreeWidgetItem([job.title, "", "", "", ""])
        item.setData(0, Qt.ItemDataRole.UserRole, job.id)
        item.setToolTip(0, job.title)
        self.tree.addTopLevelItem(item)
        bar = QProgressBar()
        bar.setRange(0, 1000)
        bar.setValue(0)
        bar.setTextVisible(True)
        bar.setFormat(f"{job.state} %p%")  # the state rides in the bar: one column less
        bar.setMaximumHeight(16)
        bar.setMinimumWidth(110)
        self.tree.setItemWidget(item, 1, bar)
        self._items[job.id], self._bars[job.id], self._jobs[job.id] = item, bar, job
        job.changed.connect(self._job_changed)
        job.progressed.connect(self._job_progressed)
        self.tree.setCurrentItem(item)

    def state_text(self, job: Job) -> str:
        return self._bars[job.id].format()

    def _show_state(self, job: Job) -> None:
        bar, text = self._bars[job.id], state_text(job)
        if bar.format() != text:
            bar.setFormat(text)
            # The state rides in the bar: widen it to show a longer one whole.
            bar.setMinimumWidth(max(110, bar.fontMetrics().horizontalAdvance(text.replace("%p%", "100%")) + 16))

    def selected_job(self) -> Job | None:
        items = self.tree.selectedItems()
        return self._jobs.get(items[0].data(0, Qt.ItemDataRole.UserRole)) if items else None

    def toggle_pause(self) -> None:
        job = self.selected_job()
        if job is None:
            return
        if job.state == "paused":
            job.resume()
        elif job.state == "running":
            job.pause()

    def stop_selected(self) -> None:
        job = self.selected_job()
        if job is not None:
            job.stop()

    # -- updates -----------------------------------------------------------------------------------
    def _job_changed(self, job: Job) -> None:
        item = self._items.get(job.id)
        if item is None:
            return
        bar = self._bars[job.id]
        self._show_state(job)
        if job.recipe:
            item.setToolTip(0, f"{job.title}\nrecipe: {recipe_text(job.recipe)}")
            bar.setToolTip(f"{state_text(job).replace(' %p%', '')}\nrecipe: {recipe_text(job.recipe)}")
        if job.state == "failed" and job.error:
            item.setToolTip(0, f"{job.title}\n{job.error[0]}")
            item.setForeground(0, Qt.GlobalColor.red)
            bar.setToolTip(job.error[0])
        if job.state == "done":
            bar.setValue(1000)
        self._update_row(job)
        self._update_buttons()

    def _job_progressed(self, job: Job, _values: dict) -> None:
        if job is self.selected_job():
            self._curves_dirty = True

    def _update_row(self, job: Job) -> None:
        item = self._items[job.id]
        if job.fraction is not None:
            self._bars[job.id].setValue(int(round(1000 * job.fraction)))
        self._show_state(job)
        item.setText(2, _duration(job.eta))
        loss, sisnr = job.last.get("loss"), job.last.get("sisnr")
        item.setText(3, "" if loss is None else f"{loss:.4g}")
        item.setText(4, "" if sisnr is None else f"{sisnr:.1f} dB")

    def _refresh(self) -> None:
        for job in self._jobs.values():
            if job.state in ACTIVE:
                self._update_row(job)
        if self._curves_dirty:
            self._draw_curves()

    def _selection_changed(self) -> None:
        self._curves_dirty = True
        self._draw_curves()
        self._update_buttons()

    def _draw_curves(self) -> None:
        self._curves_dirty = False
        job = self.selected_job()
        if job is None or not job.history["step"]:
            self.loss_curve.setData([], [])
            self.sisnr_curve.setData([], [])
            return
        steps = np.asarray(job.history["step"])
        # Group boundaries restart the step count; plot against report index when steps go back.
        x = steps if np.all(np.diff(steps) > 0) else np.arange(len(steps), dtype=float)
        loss = np.asarray(job.history["loss"])
        ok = np.isfinite(loss) & (loss > 0)
        # Dots while there are few reports (a short job may send two): a line alone would not show.
        symbol = "o" if len(x) < 40 else None
        self.loss_curve.setData(x[ok], loss[ok], symbol=symbol, symbolSize=5, symbolBrush="#d62728")
        sisnr = np.asarray(job.history["sisnr"])
        ok = np.isfinite(sisnr)
        self.sisnr_curve.setData(x[ok], sisnr[ok], symbol=symbol, symbolSize=5, symbolBrush="#2ca02c")
        self.curve_updates += 1

    def _update_buttons(self) -> None:
        job = self.selected_job()
        state = job.state if job else None
        self.pause_button.setText("Resume" if state == "paused" else "Pause")
        self.pause_button.setEnabled(state in ("running", "paused"))
        self.stop_button.setEnabled(state in ("queued", "running", "paused"))
