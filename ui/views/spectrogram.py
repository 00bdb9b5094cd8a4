"""Spectrograms: original, reconstruction and their difference, and the scrolling playback monitor.

Images are preallocated float32 arrays in dB, drawn through a fixed colour lookup table and fixed
levels (no autoscaling per update). A live fit preview recomputes only the STFT frames that the
updated samples touch; a timer pushes the arrays to the screen at most ``REFRESH_MS`` apart.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, QTimer

REFRESH_MS = 100
N_FFT = 1024
MAX_FRAMES = 2000  # frames of an overview image: long sounds get a longer hop
DYNAMIC_RANGE = 90.0  # dB shown below the loudest bin of the original
FLOOR_DB = -100.0
_WINDOWS: dict[int, np.ndarray] = {}


def lookup_table(name: str = "magma") -> np.ndarray:
    return pg.colormap.get(name).getLookupTable(0.0, 1.0, 256)


def stft_db(x: np.ndarray, n_fft: int = N_FFT, hop: int = N_FFT // 4, frames: slice | None = None) -> np.ndarray:
    """Power in dB, ``[frames, n_fft // 2 + 1]``; frame ``f`` covers ``x[f*hop : f*hop + n_fft]``
    (zero-padded past the end). ``frames`` selects a range of frames (a partial update)."""
    total = frame_count(len(x), hop)
    f0, f1 = (0, total) if frames is None else (frames.start, min(frames.stop, total))
    if f1 <= f0:
        return np.zeros((0, n_fft // 2 + 1), np.float32)
    a, b = f0 * hop, (f1 - 1) * hop + n_fft
    seg = np.asarray(x[a:b], dtype=np.float32)
    if len(seg) < b - a:
        seg = np.pad(seg, (0, b - a - len(seg)))
    if not np.isfinite(seg).all():  # a broken sound still draws (the rest of the app reports it)
        seg = np.nan_to_num(seg, nan=0.0, posinf=0.0, neginf=0.0)
    window = _WINDOWS.get(n_fft)
    if window is None:
        window = _WINDOWS[n_fft] = np.hanning(n_fft).astype(np.float32)
    blocks = np.lib.stride_tricks.sliding_window_view(seg, n_fft)[::hop] * window
    power = np.abs(np.fft.rfft(blocks, axis=-1)) ** 2
    return (10 * np.log10(power + 1e-10)).astype(np.float32)


def frame_count(n: int, hop: int) -> int:
    return max(1, -(-n // hop))


class SpectrogramView(pg.GraphicsLayoutWidget):
    """Three rows sharing the time axis (with the waveform): original, reconstruction, difference."""

    KINDS = ("original", "reconstruction", "difference")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setBackground("w")
        self.setMinimumHeight(180)
        self.lut = lookup_table()
        self.plots: dict[str, pg.PlotItem] = {}
        self.images: dict[str, pg.ImageItem] = {}
        self.playheads: list[pg.InfiniteLine] = []
        for row, kind in enumerate(self.KINDS):
            plot = self.addPlot(row=row, col=0)
            plot.setLabel("left", "kHz")
            plot.setMouseEnabled(x=True, y=False)
            plot.hideButtons()
            title = pg.TextItem(kind, color="w", anchor=(0, 0), fill=pg.mkBrush(0, 0, 0, 140))
            title.setParentItem(plot.vb)
            title.setPos(4, 2)
            image = pg.ImageItem(axisOrder="col-major")
            image.setLookupTable(self.lut)
            plot.addItem(image)
            if row:
                plot.setXLink(self.plots[self.KINDS[0]])
            playhead = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#2ca02c", width=2))
            playhead.setVisible(False)
            plot.addItem(playhead, ignoreBounds=True)
            self.plots[kind], self.images[kind] = plot, image
            self.playheads.append(playhead)
        self.plots["difference"].setLabel("bottom", "time", units="s")
        for plot in self.plots.values():  # empty until a sound is shown: a plausible frame, not autorange's
            plot.setRange(xRange=(0, 1), yRange=(0, 11.025), padding=0)
        self.data: dict[str, np.ndarray | None] = dict.fromkeys(self.KINDS)
        self._original: np.ndarray | None = None
        self._reconstruction: np.ndarray | None = None
        self.hop, self.sample_rate, self.levels = N_FFT // 4, 1.0, (-DYNAMIC_RANGE, 0.0)
        self._dirty: set[str] = set()
        self._timer = QTimer(self, singleShot=True, interval=REFRESH_MS)
        self._timer.timeout.connect(self.flush)
        self.flushes = 0  # for tests: image uploads

    def link_x(self, plot: pg.PlotItem) -> None:
        self.plots[self.KINDS[0]].setXLink(plot)

    def set_playhead(self, seconds: float | None) -> None:
        for line in self.playheads:
            line.setVisible(seconds is not None)
            if seconds is not None:
                line.setPos(seconds)

    # -- data --------------------------------------------------------------------------------------
    def set_signals(self, original: np.ndarray | None, reconstruction: np.ndarray | None, sample_rate: float) -> None:
        self.sample_rate = float(sample_rate)
        ref = original if original is not None else reconstruction
        n = 0 if ref is None else len(_mono(ref))
        self.hop = max(N_FFT // 4, -(-n // MAX_FRAMES))
        self._original = None if original is None else _mono(original).copy()
        self._reconstruction = None if reconstruction is None else _mono(reconstruction).copy()
        self.data = dict.fromkeys(self.KINDS)
        if self._original is not None:
            self.data["original"] = stft_db(self._original, hop=self.hop)
        if self._reconstruction is not None:
            self.data["reconstruction"] = stft_db(self._reconstruction, hop=self.hop)
        if self._original is not None and self._reconstruction is not None:
            self.data["difference"] = stft_db(self._difference(0, n), hop=self.hop)
        loudest = max((float(d.max()) for d in self.data.values() if d is not None and d.size), default=0.0)
        self.levels = (loudest - DYNAMIC_RANGE, loudest)
        self._dirty = set(self.KINDS)
        self.flush()
        duration = n / self.sample_rate
        for plot in self.plots.values():
            plot.setLimits(xMin=0, xMax=max(duration, 1e-3), yMin=0, yMax=self.sample_rate / 2000)
            plot.setYRange(0, self.sample_rate / 2000, padding=0)
        self.plots[self.KINDS[0]].setXRange(0, max(duration, 1e-3), padding=0)

    def patch_reconstruction(self, start: int, values: np.ndarray) -> None:
        """Live preview: update samples ``[start, start + len)`` and only the frames they touch."""
        if self._reconstruction is None:
            n = len(self._original) if self._original is not None else start + len(values)
            self._reconstruction = np.zeros(n, np.float32)
            self.data["reconstruction"] = np.full((frame_count(n, self.hop), N_FFT // 2 + 1), FLOOR_DB, np.float32)
            if self._original is not None:
                self.data["difference"] = self.data["original"].copy()
        n = len(self._reconstruction)
        stop = min(n, start + len(values))
        if stop <= start:
            return
        self._reconstruction[start:stop] = values[: stop - start]
        f0 = max(0, (start - N_FFT) // self.hop + 1)
        f1 = min(frame_count(n, self.hop), (stop - 1) // self.hop + 1)
        frames = slice(f0, f1)
        self.data["reconstruction"][f0:f1] = stft_db(self._reconstruction, hop=self.hop, frames=frames)
        self._dirty.add("reconstruction")
        if self._original is not None:
            a, b = f0 * self.hop, min(n, (f1 - 1) * self.hop + N_FFT)
            self.data["difference"][f0:f1] = stft_db(self._difference(a, b), hop=self.hop, frames=slice(0, f1 - f0))
            self._dirty.add("difference")
        if not self._timer.isActive():
            self._timer.start()

    def _difference(self, a: int, b: int) -> np.ndarray:
        m = min(len(self._original), len(self._reconstruction))
        out = np.zeros(b - a, np.float32)
        hi = min(b, m)
        if hi > a:
            out[: hi - a] = self._original[a:hi] - self._reconstruction[a:hi]
        return out

    # -- drawing -----------------------------------------------------------------------------------
    def flush(self) -> None:
        for kind in self._dirty:
            data = self.data.get(kind)
            image = self.images[kind]
            if data is None:
                image.clear()
                continue
            image.setImage(data, autoLevels=False, levels=self.levels)
            image.setRect(QRectF(0, 0, data.shape[0] * self.hop / self.sample_rate, self.sample_rate / 2000))
        self._dirty.clear()
        self.flushes += 1


class ScrollingSpectrogram(pg.PlotWidget):
    """What is being played, scrolling right to left: STFT columns of the tapped output.

    The image is preallocated (``columns`` x bins); each refresh shifts it left by the new columns
    and writes them at the right edge. Audio arrives through a :class:`~hyperaudio_ui.transport.Tap`
    (a ring buffer the audio callback writes), read by a timer, never per audio block.
    """

    def __init__(self, parent=None, columns: int = 320, n_fft: int = N_FFT, hop: int = N_FFT // 2):
        super().__init__(parent)
        self.setBackground("w")
        self.setMinimumHeight(90)
        self.columns, self.n_fft, self.hop = columns, n_fft, hop
        self.image = pg.ImageItem(axisOrder="col-major")
        self.image.setLookupTable(lookup_table())
        self.addItem(self.image)
        self.getPlotItem().setLabel("left", "kHz")
        self.getPlotItem().setMouseEnabled(x=False, y=False)
        self.getPlotItem().hideButtons()
        self.getPlotItem().getAxis("bottom").setStyle(showValues=False)
        self.data = np.full((columns, n_fft // 2 + 1), FLOOR_DB, np.float32)
        self._pending = np.zeros(0, np.float32)
        self.sample_rate = 48000.0
        self.columns_written = 0
        self.reset(self.sample_rate)

    def attach(self, tap) -> None:
        """Follow ``tap`` (a transport Tap) on a timer while :meth:`run` is on."""
        self.tap, self._mark = tap, tap.written
        if not hasattr(self, "_timer"):
            self._timer = QTimer(self, interval=REFRESH_MS // 2)
            self._timer.timeout.connect(self._follow)

    def run(self, on: bool) -> None:
        if on:
            self._mark = self.tap.written
            if self.tap.sample_rate != self.sample_rate:
                self.reset(self.tap.sample_rate)
            self._timer.start()
        else:
            self._timer.stop()

    def _follow(self) -> None:
        if self.tap.sample_rate != self.sample_rate:  # the output rate changed while playing
            self.reset(self.tap.sample_rate)
        samples, self._mark = self.tap.read_since(self._mark)
        if len(samples):
            self.push(samples)

    def reset(self, sample_rate: float) -> None:
        self.sample_rate = float(sample_rate)
        self.data.fill(FLOOR_DB)
        self._pending = np.zeros(0, np.float32)
        self._show()
        self.image.setRect(QRectF(-self.columns * self.hop / self.sample_rate, 0,
                                  self.columns * self.hop / self.sample_rate, self.sample_rate / 2000))
        self.getPlotItem().setYRange(0, self.sample_rate / 2000, padding=0)
        self.getPlotItem().setXRange(-self.columns * self.hop / self.sample_rate, 0, padding=0)

    def push(self, samples: np.ndarray) -> None:
        """Add newly played samples (mono); draws once for the whole batch."""
        x = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        count = max(0, (len(x) - self.n_fft) // self.hop + 1)
        if count == 0:
            self._pending = x
            return
        cols = stft_db(x[: (count - 1) * self.hop + self.n_fft], self.n_fft, self.hop)[:count]
        self._pending = x[count * self.hop :]
        k = min(count, self.columns)
        self.data[:-k] = self.data[k:]  # in place (memmove): no new image per refresh
        self.data[-k:] = cols[-k:]
        self.columns_written += count
        self._show()

    def _show(self) -> None:
        # A full-scale sine peaks at 48 dB with this window and FFT size: show 90 dB below that.
        self.image.setImage(self.data, autoLevels=False, levels=(48.0 - DYNAMIC_RANGE, 48.0))


def _mono(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x if x.ndim == 1 else (x[0] if x.shape[0] == 1 else x.mean(axis=0))
