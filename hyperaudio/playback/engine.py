"""The real-time playback engine: a renderer thread feeding an audio callback through a ring buffer.

::

    control (CLI, GUI, tests)          renderer thread                      audio callback (sink)
    seek/speed/loop ──commands──▶  Timeline ─ voices ─ backend ──write──▶  RingBuffer ──read_into──▶ device
    gain, stop ─────────────────────────────────────────────────────────▶ (fades, gain, underruns)

* The **renderer thread** keeps the ring buffer about ``ahead`` seconds full. It asks the
  :class:`~hyperaudio.playback.timeline.Timeline` for ``block`` frames at a time (several per call on
  CUDA), which evaluates the INR through a backend (torch or onnxruntime) along the time line and
  band-limits when the output rate is below the source's (see ``timeline``).
* The **callback** (:meth:`Engine.consume`, called by a sink) only copies frames out of the ring
  buffer into the device's buffer, zero-fills and counts an underrun when the ring runs dry, and
  applies the gain and the start/stop fades with preallocated scratch arrays: no torch, no buffer
  allocation, no lock.
* A **change** of position, speed or loop region goes to the renderer, which takes back the frames it
  rendered ahead beyond ``keep`` frames (``RingBuffer.retract``), re-renders from there and crossfades
  from the old stream's frames to the new voice over ``fade`` frames. The change lands ``keep`` (half
  a block) frames after where the callback is when the renderer picks the command up, so within one
  block of the request although the renderer works up to ``ahead`` seconds in advance. Gain is
  applied in the callback, ramped over ``fade`` frames. Changing the output rate restarts the sink
  at the new rate, fading out and in.

Band-limiting (details in :mod:`~hyperaudio.playback.timeline`): at or above the INR's native rate
(``native * speed <= sr``) the INR is evaluated at the output instants, so above it the output is
the INR's own continuous interpolation; below it the INR is evaluated on its native grid and
decimated with ``soxr.ResampleStream``, so nothing above the new Nyquist frequency aliases. Same
rule and same resampler as ``render.render``: the file sink's output equals it.

Heads: live playback plays the first head of each channel (what ``render.render`` returns without
``postprocess``). Siamese SIREN's ``postprocess`` (noisereduce) estimates its noise profile from the
whole signal; on short blocks it would cost tens of milliseconds a block and gate differently from
block to block (audible pumping), so only the file sink applies it, once, to the whole rendering.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..audio import MAX_RATE, MIN_RATE
from ..hya import INR
from .backends import make_backend
from .errors import PlaybackError
from .ring import RingBuffer
from .sinks import raise_thread_priority
from .timeline import INTERPOLATIONS, Timeline


def default_block(sr: float) -> int:
    """The render block: the power of two >= 40 ms (512 frames at 8 kHz, 2048 at 44.1/48 kHz).

    A change lands within half a block (plus the renderer's reaction time), so the other half is
    what the renderer has to produce the new stream in: 20 ms, a margin that survives the
    scheduling hiccups of a busy 2-core machine.
    """
    return 1 << max(6, math.ceil(math.log2(0.04 * sr)))


def default_read(sr: float) -> int:
    """Frames per callback: the power of two nearest 10 ms (512 at 48 kHz)."""
    return 1 << max(5, round(math.log2(0.01 * sr)))


def db_to_gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


@dataclass
class Change:
    """A parameter change and where it landed, in absolute output frames."""

    kind: str
    value: object
    requested_frame: int  # the consumer's position when it was asked for
    applied_frame: int | None = None  # the first frame rendered with it (the crossfade starts here)


@dataclass
class Stats:
    underruns: int = 0  # callbacks that found the ring buffer short (after the first sound)
    underrun_frames: int = 0
    device_xruns: int = 0  # underflows the audio device itself reported
    frames_out: int = 0  # frames handed to the sink
    play_time: float | None = None  # perf_counter() when play() was called
    first_audio_time: float | None = None  # ... when the callback first delivered rendered frames
    lead_frames: int = 0  # silent frames the sink got before the first rendered one (device start-up)
    render_seconds: float = 0.0  # time spent rendering
    rendered_frames: int = 0
    changes: list[Change] = field(default_factory=list)

    @property
    def first_sound_latency(self) -> float | None:
        if self.play_time is None or self.first_audio_time is None:
            return None
        return self.first_audio_time - self.play_time

    def realtime_factor(self, sr: float) -> float | None:
        """Seconds of output rendered per second spent rendering, at output rate ``sr``."""
        return None if not self.render_seconds else self.rendered_frames / sr / self.render_seconds


class Engine:
    """Plays an INR through a sink at any output rate, with speed, loop, seek and gain.

    ``sink``          a :mod:`~hyperaudio.playback.sinks` sink (default: a real-time :class:`NullSink`)
    ``sample_rate``   output rate in Hz (default: the INR's native rate), 1-768 kHz
    ``speed``         0.5 = half speed (an octave down); ``start``, ``loop`` in seconds of the source;
                      ``loop=True`` loops the whole sound, ``(a, b)`` a region
    ``gain_db``       gain, applied in the callback
    ``backend``       ``"torch"`` or ``"onnx"``; ``device`` ``"auto"``, ``"cpu"`` or ``"cuda"`` (an
                      unusable CUDA falls back to the CPU with a warning)
    ``block``         render block in frames (default ~40 ms: :func:`default_block`); changes land
                      within one block
    ``ahead``         seconds the renderer works ahead (the ring buffer's size)
    ``fade_ms``       start/stop fades and crossfades
    ``quality``       soxr quality of band-limiting (``HQ`` live, the file sink asks for ``VHQ``)
    ``batch_blocks``  blocks per render call (default 1 on CPU, 4 on CUDA)
    ``threads``       render threads: torch on the CPU splits each block across that many
                      (``backends.ParallelBackend``); onnxruntime's intra-op threads
    ``priority``      lower the renderer's and callback's niceness when allowed
    ``interpolation`` ``"inr"`` or ``"resample"`` above the native rate (see ``timeline``); default:
                      ``"inr"``, or the source's own ``interpolation`` (``SampledSound``: ``"resample"``)

    ``inr`` may also be a :class:`~hyperaudio.playback.sampled.SampledSound`: plain audio, played
    through the same path (the desktop app's A/B switch between an original and its INR).
    """

    def __init__(self, inr: INR, sink=None, sample_rate: float | None = None, *, speed: float = 1.0,
                 start: float = 0.0, loop=None, gain_db: float = 0.0, backend: str = "torch",
                 device: str = "auto", block: int | None = None, ahead: float = 0.3, fade_ms: float = 5.0,
                 quality: str | None = None, batch_blocks: int | None = None, threads: int | None = 1,
                 priority: bool = True, interpolation: str | None = None):
        from .sinks import NullSink

        self.inr = inr
        self.sink = sink if sink is not None else NullSink()
        self.native = float(inr.sample_rate)
        self._check_rate(float(sample_rate or self.native))  # before the (possibly slow) backend build
        self._check_speed(speed)
        self.speed = float(speed)
        self.ahead, self.fade_ms = float(ahead), float(fade_ms)
        self.threads, self.priority = threads, priority
        # A source may ask for its own default (a SampledSound: "resample"); an INR plays its own
        # continuous interpolation.
        interpolation = interpolation or getattr(inr, "interpolation", "inr")
        if interpolation not in INTERPOLATIONS:
            raise PlaybackError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
        self.interpolation = interpolation
        self.quality = quality or getattr(self.sink, "quality", "HQ")
        self._block_request, self._batch_request = block, batch_blocks
        self.backend = make_backend(inr, backend, device, getattr(self.sink, "heads", "first"), threads=threads,
                                    priority=priority)
        self.device = self.backend.device
        self.channels = self.backend.channels
        self._warm_up()
        self._start_pos = self._seconds_to_pos(start)
        self._loop = self._loop_region(loop)
        self._gain = self._gain_target = self._check_gain(gain_db)
        self.stats = Stats()
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._renderer: threading.Thread | None = None
        self._error: BaseException | None = None
        self._playing = False
        self._configure(float(sample_rate or self.native))

    # -- set-up ------------------------------------------------------------------------------------
    @staticmethod
    def _check_rate(sr: float) -> None:
        if not (isinstance(sr, (int, float)) and math.isfinite(sr) and MIN_RATE <= sr <= MAX_RATE):
            raise PlaybackError(f"unsupported output rate {sr:g} Hz (supported: {MIN_RATE}-{MAX_RATE} Hz)")

    def _configure(self, sr: float) -> None:
        self._check_rate(sr)
        self.sr = sr
        self.block = int(self._block_request or default_block(sr))
        self.max_read = int(getattr(self.sink, "blocksize", None) or min(default_read(sr), self.block // 2))
        if self.max_read > self.block // 2:
            raise PlaybackError(f"sink block of {self.max_read} frames exceeds half the render block ({self.block})")
        # Frames a change leaves in the ring: the read in flight plus the time the renderer has to
        # produce the new stream before the callback gets there.
        self.keep = self.block // 2
        capacity = max(int(self.ahead * sr), 4 * self.block)
        self.ring = RingBuffer(capacity, self.channels, self.max_read)
        self.fade = max(8, round(self.fade_ms * sr / 1000))
        cuda = self.device.type == "cuda"
        self.batch = int(self._batch_request or (4 if cuda else 1))
        self.timeline = Timeline(self.backend, self.native, self.inr.num_samples, sr, fade=self.fade,
                                 chunk=self.block * self.batch, quality=self.quality, prefetch=1 if cuda else 0,
                                 interpolation=self.interpolation)
        self.timeline.speed = self.speed
        self.timeline.loop = self._loop
        self._end_frame: int | None = None
        self._done = False
        # Callback state: fades and gain ramps, and scratch arrays so the callback allocates nothing.
        scratch = max(8192, 4 * self.max_read)
        self._ramp = np.arange(1, scratch + 1, dtype=np.float32)
        self._env = np.empty(scratch, dtype=np.float32)
        self._env2 = np.empty(scratch, dtype=np.float32)
        realtime = getattr(self.sink, "realtime", True)
        self._fade_gain = 0.0 if realtime else 1.0  # fade in at the start (not in a file)
        self._fade_target = 1.0
        self._gain_step = 1.0 / self.fade
        self._stopping = False
        self._silent = False
        self._sounding = False  # rendered frames have reached the sink
        # Frames the ring must hold before the first sound (see play and prefill).
        self._start_frames = self.keep + self.block if realtime else 0

    def prefill(self, seconds: float) -> None:
        """The sink pulls about ``seconds`` of audio at once when it starts (a device filling its
        buffer): the first sound waits until that much and half a block are rendered, so the burst
        cannot empty the ring right after the first frames and leave a gap."""
        want = int(seconds * self.sr) + self.keep
        self._start_frames = min(max(self._start_frames, want), self.ring.capacity - self.ring.max_read)

    def _warm_up(self) -> None:
        """One tiny evaluation, so the first block is not slowed by lazy initialisation."""
        self.backend.submit(0.0, 1.0, 0, 64).result()

    @staticmethod
    def _check_gain(db: float) -> float:
        if not (isinstance(db, (int, float)) and math.isfinite(db) and db <= 40):
            raise PlaybackError(f"gain must be a finite number of dB <= 40, got {db}")
        return db_to_gain(db)

    @staticmethod
    def _check_speed(speed: float) -> None:
        if not (isinstance(speed, (int, float)) and math.isfinite(speed) and 1e-3 <= speed <= 1e3):
            raise PlaybackError(f"speed must be between 0.001 and 1000, got {speed}")

    def _seconds_to_pos(self, seconds: float) -> float:
        if not (math.isfinite(seconds) and 0 <= seconds <= self.inr.duration):
            raise PlaybackError(f"position {seconds} s is outside the sound (0-{self.inr.duration:.3f} s)")
        return float(seconds) * self.native

    def _loop_region(self, loop) -> tuple[float, float] | None:
        if loop is None or loop is False:
            return None
        if loop is True:
            a, b = 0.0, self.inr.duration
        else:
            a, b = (float(v) for v in loop)
        if not (0 <= a < b <= self.inr.duration + 1e-9):
            raise PlaybackError(f"loop region {a}-{b} s must lie inside the sound (0-{self.inr.duration:.3f} s)")
        if (b - a) < 0.02:
            raise PlaybackError("loop region must be at least 20 ms long")
        return a * self.native, b * self.native

    # -- lifecycle ---------------------------------------------------------------------------------
    def play(self) -> "Engine":
        """Start rendering and playing; returns once the sink is running.

        The sink starts at once, in parallel with the first render: opening an audio device takes
        about as long as rendering the first block. Until the ring holds the first block and a half,
        or the device buffer the sink fills at start-up and half a block (:meth:`prefill`), the
        callback plays silence (not counted as an underrun).
        """
        if self._playing:
            return self
        self.stats.play_time = time.perf_counter()
        self.timeline.frame = 0
        self.timeline.start(self._start_pos, self.speed)  # no preroll: the same signal as render.render(start=...)
        self._quit = False
        self._renderer = threading.Thread(target=self._render_loop, name="hyperaudio-renderer", daemon=True)
        self._renderer.start()
        self._playing = True
        try:
            self.sink.start(self)
        except BaseException:
            self._playing = False
            self._shutdown()
            raise
        return self

    def stop(self, fade: bool = True, timeout: float = 1.0) -> None:
        """Fade out (``fade_ms``), stop the sink and the renderer. Safe to call twice."""
        if self._playing and fade and not self._silent:
            self._fade_target, self._stopping = 0.0, True
            deadline = time.perf_counter() + timeout
            while not self._silent and time.perf_counter() < deadline and self.sink.running:
                time.sleep(0.002)
        self._silent = True
        self._shutdown()

    def _shutdown(self) -> None:
        if self._playing:
            self.sink.stop()
            self._playing = False
        self._quit = True
        self._commands.put(None)
        if self._renderer is not None and self._renderer is not threading.current_thread():
            self._renderer.join(timeout=5.0)
        self._renderer = None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the sound has played to its end (never, when looping); False on timeout."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        while not self._done:
            self._raise_error()
            if deadline is not None and time.perf_counter() >= deadline:
                return False
            if not self._playing:
                return False
            time.sleep(0.005)
        self.sink.finish()
        self._shutdown()
        return True

    def close(self) -> None:
        self.stop(fade=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self._shutdown()
            raise error

    # -- queries -----------------------------------------------------------------------------------
    @property
    def playing(self) -> bool:
        return self._playing and not self._done

    @property
    def done(self) -> bool:
        return self._done

    @property
    def end_frame(self) -> int | None:
        """Frames in the whole stream once its end has been rendered (None while unknown or looping)."""
        return self._end_frame

    @property
    def position(self) -> float:
        """Source position (seconds) of the frame the sink is taking now."""
        if not self.timeline.marks:  # not started yet
            return self._start_pos / self.native
        return self.timeline.position_at(self.ring.read) / self.native

    # -- control (any thread) ----------------------------------------------------------------------
    def seek(self, seconds: float) -> None:
        self._command("seek", self._seconds_to_pos(seconds))

    def set_speed(self, speed: float) -> None:
        self._check_speed(speed)
        self._command("speed", float(speed))

    def set_loop(self, loop) -> None:
        """``(start, end)`` in seconds, ``True`` for the whole sound, ``None``/``False`` for no loop."""
        self._command("loop", self._loop_region(loop))

    def set_gain(self, db: float) -> None:
        """Applied in the callback, ramped over ``fade_ms``: takes effect with the next callback."""
        target = self._check_gain(db)
        self._gain_step = max(abs(target - self._gain), 1e-9) / self.fade
        self._gain_target = target
        self.stats.changes.append(Change("gain", db, self.ring.read, self.ring.read))

    def set_sample_rate(self, sr: float) -> None:
        """Change the output rate: fade out, reopen the sink at ``sr``, fade in at the same position."""
        self._check_rate(sr)
        if sr == self.sr:
            return
        was_playing = self._playing
        pos = self.timeline.position_at(self.ring.read) if was_playing else self._start_pos
        if was_playing:
            self.stop(fade=True)
        stats = self.stats
        self._configure(float(sr))
        self.stats = stats
        self._start_pos = min(pos, self.inr.num_samples)
        if was_playing:
            self.play()

    def _command(self, kind: str, value) -> None:
        change = Change(kind, value, self.ring.read)
        self.stats.changes.append(change)
        if not self._playing:  # not started yet: just set the initial state
            self._apply_initial(change)
            return
        self._commands.put(change)

    def _apply_initial(self, change: Change) -> None:
        if change.kind == "seek":
            self._start_pos = change.value
        elif change.kind == "speed":
            self.speed = self.timeline.speed = change.value
        elif change.kind == "loop":
            self._loop = self.timeline.loop = change.value
        change.applied_frame = 0

    # -- renderer thread ---------------------------------------------------------------------------
    def _render_loop(self) -> None:
        if self.priority:
            # So a CPU-bound job beside us (a fit) cannot starve the renderer (best effort).
            raise_thread_priority()
        if self.device.type == "cpu" and self.threads:
            # One intra-op thread, set per thread (OpenMP's setting is thread-local: the control
            # thread keeps its own). More threads split blocks instead (backends.ParallelBackend).
            import torch

            torch.set_num_threads(1)
        try:
            while not self._quit:
                self._drain_commands(block=False)
                if self._quit:
                    break
                if self.timeline.finished:
                    self._drain_commands(block=True, timeout=0.05)
                    continue
                free = self.ring.writable()
                if free < self.block:
                    # Sleep until about a block has been played, or a command arrives.
                    self._drain_commands(block=True, timeout=max(0.001, 0.5 * (self.block - free) / self.sr))
                    continue
                n = min(free // self.block, self.batch) * self.block
                if self.stats.rendered_frames == 0:
                    n = self.keep  # the first sound: a short first piece
                t0 = time.perf_counter()
                y = self.timeline.render(n)
                self.stats.render_seconds += time.perf_counter() - t0
                self.stats.rendered_frames += len(y)
                self.ring.write(y)
                if self.timeline.finished:
                    self._end_frame = self.ring.written
                self.timeline.forget_before(self.ring.read)
        except BaseException as exc:  # surfaces in wait()/play() on the control thread
            self._error = exc

    def _drain_commands(self, block: bool, timeout: float = 0.0) -> None:
        changes = []
        try:
            item = self._commands.get(timeout=timeout) if block else self._commands.get_nowait()
            while True:
                if item is not None:
                    changes.append(item)
                item = self._commands.get_nowait()
        except queue.Empty:
            pass
        if changes and not self._quit:
            self._apply_changes(changes)

    def _apply_changes(self, changes: list[Change]) -> None:
        tl, ring = self.timeline, self.ring
        old_written = ring.written
        p = ring.retract(self.keep)
        tail = ring.peek(p, min(self.fade, old_written - p))
        if len(tail) < self.fade and not tl.finished:
            # Not enough of the old stream queued: render its continuation (the timeline is at old_written).
            more = tl.render(self.fade - len(tail))
            tail = np.concatenate([tail, more]) if len(tail) else more
        x = tl.position_at(p)
        tl.forget_after(p)
        tl.frame = p
        for change in changes:
            if change.kind == "seek":
                x = change.value
            elif change.kind == "speed":
                tl.speed = self.speed = change.value
            elif change.kind == "loop":
                tl.loop = self._loop = change.value
            change.applied_frame = p
        if tl.loop is not None and not tl.loop[0] <= x < tl.loop[1]:
            x = tl.loop[0] if x >= tl.loop[1] else x
        x = min(max(x, 0.0), float(self.inr.num_samples))
        self._end_frame = None
        self._done = False
        tl.start(x, tl.speed, tail=tail, preroll=True)

    # -- audio callback ----------------------------------------------------------------------------
    def consume(self, out: np.ndarray) -> int:
        """Fill ``out`` ``[frames, channels]`` float32 from the ring buffer; returns the frames of audio.

        Real-time safe: copies, in-place arithmetic on preallocated arrays, integer and float
        bookkeeping. Missing frames are zeros; they count as an underrun unless the sound has ended.
        """
        frames = len(out)
        if self._silent:
            out.fill(0.0)
            return 0
        if not (self._sounding or self.ring.readable() >= self._start_frames or self._end_frame is not None):
            out.fill(0.0)  # before the first sound: device start-up silence, not an underrun
            self.stats.frames_out += frames
            return 0
        n = self.ring.read_into(out)
        if n < frames:
            out[n:].fill(0.0)
            end = self._end_frame
            if end is not None and self.ring.read >= end:
                self._done = True
            elif self._sounding:
                self.stats.underruns += 1
                self.stats.underrun_frames += frames - n
        if n and not self._sounding:
            self._sounding = True
            self.stats.first_audio_time = time.perf_counter()
            self.stats.lead_frames = self.stats.frames_out
        self._envelope(out, frames)
        self.stats.frames_out += frames
        return n

    def _envelope(self, out: np.ndarray, frames: int) -> None:
        f0, ft, g0, gt = self._fade_gain, self._fade_target, self._gain, self._gain_target
        if f0 == ft and g0 == gt:
            if f0 * g0 != 1.0:
                np.multiply(out, f0 * g0, out=out)
            if self._stopping and f0 == 0.0:
                self._silent = True
            return
        start = 0
        while start < frames:  # in scratch-sized pieces (one piece unless the sink's block is huge)
            m = min(frames - start, len(self._env))
            env, env2, ramp = self._env[:m], self._env2[:m], self._ramp[:m]
            f0 = self._ramp_into(env, ramp, self._fade_gain, self._fade_target, 1.0 / self.fade)
            g0 = self._ramp_into(env2, ramp, self._gain, self._gain_target, self._gain_step)
            self._fade_gain, self._gain = f0, g0
            np.multiply(env, env2, out=env)
            seg = out[start : start + m]
            np.multiply(seg, env[:, None], out=seg)
            start += m
        if self._stopping and self._fade_gain == 0.0:
            self._silent = True

    @staticmethod
    def _ramp_into(env: np.ndarray, ramp: np.ndarray, value: float, target: float, step: float) -> float:
        """``env[k] = value + (k + 1) * step`` towards ``target``, clamped there; returns the last value."""
        if value == target:
            env.fill(value)
            return value
        np.multiply(ramp, step if target > value else -step, out=env)
        env += value
        lo, hi = (value, target) if target > value else (target, value)
        np.clip(env, lo, hi, out=env)
        last = float(env[-1])
        return target if abs(last - target) < 1e-7 else last
