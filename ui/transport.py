"""Transport: play/stop/loop, output device, sample rate, speed and the A/B switch, all through
``hyperaudio.playback.Engine`` (the original plays as a ``SampledSound``, the INR as itself).

The audio callback must never wait for the GUI, so what it plays is copied into a :class:`Tap` (a
preallocated ring the callback writes and a GUI timer reads) for the scrolling spectrogram; the
playhead reads ``engine.position`` on the same timer.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QDoubleValidator
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QPushButton,
                               QRadioButton, QWidget)

from hyperaudio.playback import Engine, NullSink, SampledSound, SoundDeviceSink
from hyperaudio.playback.errors import PlaybackError

RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000, 176400, 192000)
NULL_DEVICE = "null"  # the device key of the silent sink (plays in real time, no sound card needed)
DEFAULT_DEVICE = ""  # the system's default output
POLL_MS = 40


class Tap:
    """The last ``capacity`` frames played (first channel). One writer (the audio callback), one reader."""

    def __init__(self, capacity: int = 1 << 17):
        self.buf = np.zeros(capacity, np.float32)
        self.capacity = capacity
        self.written = 0
        self.sample_rate = 48000.0

    def write(self, frames: np.ndarray) -> None:
        n = len(frames)
        if n > self.capacity:
            frames, n = frames[-self.capacity:], self.capacity
        i = self.written % self.capacity
        first = min(n, self.capacity - i)
        self.buf[i : i + first] = frames[:first, 0]
        if n > first:
            self.buf[: n - first] = frames[first:, 0]
        self.written += n  # publish after the copy (the GIL orders the two)

    def read_since(self, mark: int) -> tuple[np.ndarray, int]:
        """Frames written after ``mark`` (at most ``capacity``) and the new mark."""
        w = self.written
        n = min(w - mark, self.capacity)
        if n <= 0:
            return np.zeros(0, np.float32), w
        i = (w - n) % self.capacity
        first = min(n, self.capacity - i)
        out = np.concatenate([self.buf[i : i + first], self.buf[: n - first]]) if n > first else self.buf[i : i + n].copy()
        return out, w


class _TappedEngine:
    """What a sink sees: the engine, with ``consume`` also feeding the tap."""

    def __init__(self, engine: Engine, tap: Tap):
        self._engine, self._tap = engine, tap

    def consume(self, out: np.ndarray) -> int:
        n = self._engine.consume(out)
        self._tap.write(out)
        return n

    def __getattr__(self, name):
        return getattr(self._engine, name)


class TapSink:
    """Wraps any sink so that what it plays also reaches a :class:`Tap`."""

    def __init__(self, sink, tap: Tap):
        self.sink, self.tap = sink, tap
        self.realtime = getattr(sink, "realtime", True)
        self.heads = getattr(sink, "heads", "first")
        self.blocksize = getattr(sink, "blocksize", None)

    @property
    def running(self) -> bool:
        return self.sink.running

    def start(self, engine) -> None:
        self.tap.sample_rate = engine.sr
        self.sink.start(_TappedEngine(engine, self.tap))

    def finish(self) -> None:
        self.sink.finish()

    def stop(self) -> None:
        self.sink.stop()


class Player(QObject):
    """Owns the engine. ``sources``: {"A": original-or-None, "B": INR-or-None}."""

    started = Signal()
    stopped = Signal()
    sources_changed = Signal()
    position = Signal(object)  # seconds, or None when stopped
    failed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.engine: Engine | None = None
        self.sources: dict[str, object] = {"A": None, "B": None}
        self.choice = "B"
        self.device = DEFAULT_DEVICE
        self.rate: float | None = None  # None: the source's native rate
        self.speed = 1.0
        self.loop = False
        self.tap = Tap()
        self._timer = QTimer(self, interval=POLL_MS)
        self._timer.timeout.connect(self._poll)

    # -- sources -----------------------------------------------------------------------------------
    def set_sources(self, original: np.ndarray | None, sample_rate: float | None, inr) -> None:
        """Stops playback if the source being played changes."""
        a = (original, sample_rate) if original is not None else None
        current = self._current()
        self.sources = {"A": a, "B": inr}
        self.sources_changed.emit()
        if self.playing and self._current() is not current and not _same(self._current(), current):
            self.stop()

    def _current(self):
        return self.sources.get(self.choice) or self.sources.get("B" if self.choice == "A" else "A")

    @property
    def playing(self) -> bool:
        return self.engine is not None and self.engine.playing

    # -- control -----------------------------------------------------------------------------------
    def play(self, start: float = 0.0) -> bool:
        source = self._current()
        if source is None:
            self.failed.emit("nothing to play: open a sound or select an INR")
            return False
        self.stop(emit=False)
        sink = NullSink(keep=False) if self.device == NULL_DEVICE else SoundDeviceSink(self.device or None)
        try:
            if isinstance(source, tuple):  # an original: plain samples through the same engine
                source = SampledSound(*source)
            engine = Engine(source, TapSink(sink, self.tap), self.rate or source.sample_rate, speed=self.speed,
                            start=min(max(0.0, start), source.duration), loop=True if self.loop else None)
            engine.play()
        except Exception as exc:  # PlaybackError (no device, unsupported rate), PortAudio errors
            self.failed.emit(str(exc) if isinstance(exc, PlaybackError) else f"{type(exc).__name__}: {exc}")
            return False
        self.engine = engine
        self._timer.start()
        self.started.emit()
        return True

    def stop(self, emit: bool = True) -> None:
        engine, self.engine = self.engine, None
        self._timer.stop()
        if engine is not None:
            engine.stop(fade=True)
            if emit:
                self.stopped.emit()
                self.position.emit(None)

    def toggle(self) -> None:
        if self.playing:
            self.stop()
        else:
            self.play()

    def set_choice(self, choice: str) -> None:
        """A/B: continue from the same place in the other source."""
        if choice == self.choice:
            return
        self.choice = choice
        if self.engine is not None and self.engine.playing:
            position = self.engine.position
            self.play(start=position)

    def set_rate(self, rate: float | None) -> None:
        self.rate = rate
        if self.engine is not None:
            try:
                self.engine.set_sample_rate(rate or self.engine.native)
            except Exception as exc:
                self.stop()
                self.failed.emit(str(exc))

    def set_speed(self, speed: float) -> None:
        self.speed = float(speed)
        if self.engine is not None:
            self.engine.set_speed(self.speed)

    def set_loop(self, loop: bool) -> None:
        self.loop = bool(loop)
        if self.engine is not None:
            self.engine.set_loop(True if self.loop else None)

    def set_device(self, device: str) -> None:
        if device == self.device:
            return
        self.device = device
        if self.engine is not None and self.engine.playing:
            self.play(start=self.engine.position)

    def _poll(self) -> None:
        engine = self.engine
        if engine is None:
            return
        try:
            done = engine.done
            if not done:
                engine.wait(timeout=0)  # raises what the renderer thread raised
        except Exception as exc:
            self.stop()
            self.failed.emit(f"playback stopped: {exc}")
            return
        if done or not engine.playing:
            self.stop()
            return
        self.position.emit(engine.position)


def _same(a, b) -> bool:
    """The same original (a tuple of its samples and rate) or the same INR."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return a[0] is b[0] and a[1] == b[1]
    return a is b


def list_devices() -> tuple[list[tuple[str, str]], str | None]:
    """``[(label, key)]`` of output devices (the default, each device, the silent null sink) and a
    reason when the audio devices cannot be listed."""
    devices = [("System default output", DEFAULT_DEVICE)]
    problem = None
    try:
        from hyperaudio.playback.sinks import import_sounddevice, output_devices

        for d in output_devices(import_sounddevice()):
            devices.append((f"{d['name']} ({d['hostapi']})", str(d["index"])))
    except PlaybackError as exc:
        problem = str(exc)
    devices.append(("Null sink (silent, no audio device)", NULL_DEVICE))
    return devices, problem


class TransportBar(QWidget):
    """The controls; the window puts it in a toolbar. Space toggles play (the window's shortcut)."""

    def __init__(self, player: Player, parent=None):
        super().__init__(parent)
        self.player = player
        self.play_button = QPushButton("▶ Play")
        self.play_button.setToolTip("Play / stop (Space)")
        self.play_button.clicked.connect(lambda: player.toggle())
        self.loop_box = QCheckBox("Loop")
        self.loop_box.toggled.connect(player.set_loop)
        self.a_button, self.b_button = QRadioButton("A: original"), QRadioButton("B: INR")
        self.b_button.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.a_button)
        group.addButton(self.b_button)
        self.a_button.toggled.connect(lambda on: on and player.set_choice("A"))
        self.b_button.toggled.connect(lambda on: on and player.set_choice("B"))
        self.rate_box = QComboBox()
        self.rate_box.setEditable(True)
        self.rate_box.addItem("native")
        self.rate_box.addItems([f"{r}" for r in RATES])
        self.rate_box.lineEdit().setValidator(_RateValidator(self))
        self.rate_box.setToolTip("output sample rate in Hz (any rate from 1000 to 768000, or native)")
        self.rate_box.setMinimumContentsLength(7)
        self.rate_box.currentTextChanged.connect(self._rate_changed)
        self.speed_box = QDoubleSpinBox()
        self.speed_box.setRange(0.05, 8.0)
        self.speed_box.setSingleStep(0.05)
        self.speed_box.setValue(1.0)
        self.speed_box.setSuffix("×")
        self.speed_box.setToolTip("playback speed (0.5 = half speed, an octave down)")
        self.speed_box.valueChanged.connect(player.set_speed)
        self.device_box = QComboBox()
        self.device_box.setMinimumContentsLength(14)
        self.device_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.device_box.currentIndexChanged.connect(self._device_changed)
        self.time_label = QLabel("0.00 s")
        self.time_label.setMinimumWidth(60)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        for widget in (self.play_button, self.loop_box, self.a_button, self.b_button, QLabel("rate"), self.rate_box,
                       QLabel("speed"), self.speed_box, QLabel("output"), self.device_box, self.time_label):
            layout.addWidget(widget)
        player.started.connect(lambda: self._playing(True))
        player.stopped.connect(lambda: self._playing(False))
        player.position.connect(self._show_position)
        player.sources_changed.connect(self._label_b)
        self.device_problem: str | None = None
        self.refresh_devices()

    def refresh_devices(self, select: str | None = None) -> None:
        devices, self.device_problem = list_devices()
        current = select if select is not None else self.player.device
        self.device_box.blockSignals(True)
        self.device_box.clear()
        for label, key in devices:
            self.device_box.addItem(label, key)
        index = max(0, self.device_box.findData(current))
        self.device_box.setCurrentIndex(index)
        self.device_box.blockSignals(False)
        self.player.device = self.device_box.currentData()

    def set_device(self, key: str) -> None:
        index = self.device_box.findData(key)
        if index >= 0:
            self.device_box.setCurrentIndex(index)

    def set_rate_text(self, text: str) -> None:
        self.rate_box.setCurrentText(text)

    def _device_changed(self, _index: int) -> None:
        self.player.set_device(self.device_box.currentData())

    def _rate_changed(self, text: str) -> None:
        rate = parse_rate(text)
        if rate is not False:
            self.player.set_rate(rate)

    def _label_b(self) -> None:
        """B names what it plays: a compressed file says so, and at what bitrate (issue #17)."""
        inr = self.player.sources.get("B")
        compressed = getattr(inr, "info", {}).get("compressed") if inr is not None else None
        self.b_button.setText(f"B: compressed ({compressed.split(', budget ')[-1]})" if compressed else "B: INR")

    def _playing(self, on: bool) -> None:
        self.play_button.setText("■ Stop" if on else "▶ Play")

    def _show_position(self, seconds) -> None:
        self.time_label.setText("0.00 s" if seconds is None else f"{seconds:.2f} s")


def parse_rate(text: str):
    """``"native"`` -> None, ``"44100"``/``"44.1k"`` -> 44100.0, anything else -> False (ignored)."""
    text = text.strip().lower()
    if text in ("", "native"):
        return None
    scale = 1000.0 if text.endswith("k") else 1.0
    try:
        rate = float(text.rstrip("khz").strip()) * scale
    except ValueError:
        return False
    return rate if 1000 <= rate <= 768000 else False


class _RateValidator(QDoubleValidator):
    def validate(self, text, pos):
        lowered = text.strip().lower()
        if "native".startswith(lowered) or parse_rate(text) is not False:
            return QDoubleValidator.State.Acceptable, text, pos
        return QDoubleValidator.State.Intermediate, text, pos
