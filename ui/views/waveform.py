"""Waveform view: original and reconstruction overlaid, zoom and pan, a playhead.

Curves are drawn from a *peak envelope*: for whatever is visible, the minimum and maximum of the
samples under each pixel column, so a minute of audio costs as many points as the view is wide and
no peak is lost to decimation. Data changes (live fit previews) and range changes only mark the view
dirty; a timer redraws at most ``REFRESH_MS`` apart.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer

REFRESH_MS = 50
COARSE = 256  # samples per block of the precomputed coarse envelope of long sounds


class Envelope:
    """Min/max per pixel column of a 1-D signal, with a coarse level precomputed for long signals."""

    def __init__(self, x: np.ndarray):
        self.x = np.array(x, dtype=np.float32)  # a copy: patches must not write into the caller's array
        self.coarse = None
        if len(self.x) >= 64 * COARSE:
            self._build_coarse()

    def _build_coarse(self) -> None:
        m = len(self.x) // COARSE
        blocks = self.x[: m * COARSE].reshape(m, COARSE)
        self.coarse = (blocks.min(axis=1), blocks.max(axis=1))

    def patch(self, start: int, values: np.ndarray) -> None:
        """Overwrite samples from ``start`` (a fit preview of one chunk) and refresh the coarse level there."""
        stop = min(len(self.x), start + len(values))
        if stop <= start:
            return
        self.x[start:stop] = values[: stop - start]
        if self.coarse is not None:
            a, b = start // COARSE, min(len(self.coarse[0]), math.ceil(stop / COARSE))
            blocks = self.x[a * COARSE : b * COARSE].reshape(b - a, COARSE)
            self.coarse[0][a:b], self.coarse[1][a:b] = blocks.min(axis=1), blocks.max(axis=1)

    def points(self, start: int, stop: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample indices and values to draw ``[start, stop)`` on ``columns`` pixels: the samples
        themselves when they are few, otherwise (min, max) pairs per column."""
        start, stop = max(0, int(start)), min(len(self.x), int(stop))
        n = stop - start
        columns = max(1, int(columns))
        if n <= 0:
            return np.zeros(0), np.zeros(0, np.float32)
        if n <= 2 * columns:
            return np.arange(start, stop, dtype=np.float64), self.x[start:stop]
        per = math.ceil(n / columns)
        if self.coarse is not None and per >= 4 * COARSE:
            per_blocks = per // COARSE
            a, b = start // COARSE, stop // COARSE
            cols = max(1, (b - a) // per_blocks)
            lo = self.coarse[0][a : a + cols * per_blocks].reshape(cols, per_blocks).min(axis=1)
            hi = self.coarse[1][a : a + cols * per_blocks].reshape(cols, per_blocks).max(axis=1)
            centers = (a + (np.arange(cols) + 0.5) * per_blocks) * COARSE
        else:
            cols = n // per
            seg = self.x[start : start + cols * per].reshape(cols, per)
            lo, hi = seg.min(axis=1), seg.max(axis=1)
            centers = start + (np.arange(cols) + 0.5) * per
        t = np.repeat(centers, 2)
        y = np.empty(2 * len(lo), dtype=np.float32)
        y[0::2], y[1::2] = lo, hi
        return t, y


class WaveformView(pg.PlotWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setBackground("w")
        self.setMinimumHeight(120)
        item = self.getPlotItem()
        item.showGrid(x=True, y=True, alpha=0.25)
        item.setLabel("bottom", "time", units="s")
        item.setYRange(-1.05, 1.05)
        item.setMouseEnabled(x=True, y=False)  # zoom and pan in time; amplitude stays put
        item.addLegend(offset=(-10, 8))
        self.original_curve = item.plot([], [], pen=pg.mkPen("#1f77b4", width=1), name="original")
        self.reconstruction_curve = item.plot([], [], pen=pg.mkPen("#ff7f0e", width=1), name="reconstruction")
        self.playhead = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#d62728", width=2))
        self.playhead.setVisible(False)
        item.addItem(self.playhead, ignoreBounds=True)
        self.sample_rate = 1.0
        self.duration = 0.0
        self._original: Envelope | None = None
        self._reconstruction: Envelope | None = None
        self._timer = QTimer(self, singleShot=True, interval=REFRESH_MS)
        self._timer.timeout.connect(self.redraw)
        item.sigXRangeChanged.connect(self.schedule)
        self.redraws = 0  # for tests: how many times the curves were rebuilt

    # -- data --------------------------------------------------------------------------------------
    def set_signals(self, original: np.ndarray | None, reconstruction: np.ndarray | None, sample_rate: float) -> None:
        """``[C, N]`` or ``[N]`` arrays (mono mixes are shown); either may be None."""
        self.sample_rate = float(sample_rate)
        self._original = Envelope(_mono(original)) if original is not None else None
        self._reconstruction = Envelope(_mono(reconstruction)) if reconstruction is not None else None
        n = max((len(e.x) for e in (self._original, self._reconstruction) if e is not None), default=0)
        self.duration = n / self.sample_rate
        self.getPlotItem().setLimits(xMin=0, xMax=max(self.duration, 1e-3))
        self.getPlotItem().setXRange(0, max(self.duration, 1e-3), padding=0)
        self.redraw()

    def set_reconstruction(self, reconstruction: np.ndarray | None) -> None:
        self._reconstruction = Envelope(_mono(reconstruction)) if reconstruction is not None else None
        self.schedule()

    def patch_reconstruction(self, start: int, values: np.ndarray) -> None:
        """A live preview of ``values`` (mono) from sample ``start``: cheap, redrawn by the timer."""
        if self._reconstruction is None:
            n = len(self._original.x) if self._original is not None else start + len(values)
            self._reconstruction = Envelope(np.zeros(n, np.float32))
        self._reconstruction.patch(start, values)
        self.schedule()

    def set_playhead(self, seconds: float | None) -> None:
        if seconds is None:
            self.playhead.setVisible(False)
        else:
            self.playhead.setPos(seconds)
            self.playhead.setVisible(True)

    # -- drawing -----------------------------------------------------------------------------------
    def schedule(self, *_args) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def redraw(self) -> None:
        self.redraws += 1
        (x0, x1), _ = self.getPlotItem().viewRange()
        columns = max(200, self.getPlotItem().vb.width())
        a, b = math.floor(x0 * self.sample_rate) - 1, math.ceil(x1 * self.sample_rate) + 2
        for envelope, curve in ((self._original, self.original_curve), (self._reconstruction, self.reconstruction_curve)):
            if envelope is None:
                curve.setData([], [])
                continue
            t, y = envelope.points(a, b, columns)
            curve.setData(t / self.sample_rate, y)


def _mono(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x if x.ndim == 1 else (x[0] if x.shape[0] == 1 else x.mean(axis=0))
