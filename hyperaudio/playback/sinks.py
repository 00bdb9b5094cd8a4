"""Where the engine's frames go. A sink pulls frames with ``engine.consume(out)``.

Sink interface (duck-typed)::

    realtime   True: paced by a clock, fades in at the start; False: as fast as frames come
    blocksize  frames per pull (the ring buffer's ``max_read``); None: the engine picks
    heads      "first" (play the first head) or "all" (the file sink, to apply ``postprocess``)
    running    True between start() and stop()
    start(engine) / stop() / finish()   finish(): the sound ended, let the tail out (or write it)

* :class:`SoundDeviceSink` - a PortAudio output stream (``sounddevice``); its callback is
  ``engine.consume`` and nothing else.
* :class:`NullSink` - a thread that pulls at real-time pace (or ``pace`` times faster) and keeps
  what it "played": for tests and benchmarks without a sound card.
* :class:`FileSink` - pulls as soon as frames are rendered and writes a WAV (or any format
  ``hyperaudio.audio.save`` knows) atomically at the end; with a multi-head target network it
  applies the network's ``postprocess`` to the whole signal, like ``render.render``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from .errors import PlaybackError

def raise_thread_priority(nice: int = -10) -> bool:
    """Best effort: lower the calling thread's niceness to ``nice`` (Linux niceness is per thread).

    Keeps a CPU-bound job beside us (a fit) from starving the renderer and the audio callback. Needs
    CAP_SYS_NICE (root, or a raised RLIMIT_NICE); returns False where that is not allowed.
    """
    if not hasattr(os, "setpriority"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid), nice))
        return True
    except (OSError, AttributeError):
        return False


def _native_threads() -> set[int]:
    """Ids of this process's threads (Linux: /proc/self/task; elsewhere empty)."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _raise_threads(tids, nice: int = -10) -> None:
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid), nice))
        except OSError:  # not allowed, or the thread is gone
            pass


PORTAUDIO_HINT = "install PortAudio (Debian/Ubuntu: sudo apt-get install libportaudio2)"


def import_sounddevice():
    """``sounddevice``, or a PlaybackError that says what is missing."""
    try:
        import sounddevice as sd
    except ImportError:
        raise PlaybackError("live playback needs the sounddevice package: pip install 'hyperaudio[audio]'") from None
    except OSError as exc:  # sounddevice raises OSError when the PortAudio library is missing
        raise PlaybackError(f"PortAudio library not found ({exc}); {PORTAUDIO_HINT}") from None
    return sd


def output_devices(sd=None) -> list[dict]:
    """Every device with output channels: ``index``, ``name``, ``hostapi``, ``channels``,
    ``default_samplerate``, ``default`` (is the default output)."""
    sd = sd or import_sounddevice()
    try:
        devices = sd.query_devices()
        default = sd.default.device[1]
        hostapis = sd.query_hostapis()
    except Exception as exc:  # sd.PortAudioError
        raise PlaybackError(f"cannot query audio devices: {exc}") from None
    out = []
    for d in devices:
        if d["max_output_channels"] > 0:
            out.append({
                "index": d["index"], "name": d["name"], "hostapi": hostapis[d["hostapi"]]["name"],
                "channels": d["max_output_channels"], "default_samplerate": d["default_samplerate"],
                "default": d["index"] == default,
            })
    return out


def resolve_output_device(device, sd=None):
    """``None`` (default output), an index, or a (part of a) name -> a sounddevice device id."""
    if device is None or device == "":
        return None
    sd = sd or import_sounddevice()
    key = int(device) if isinstance(device, int) or str(device).isdigit() else str(device)
    try:
        info = sd.query_devices(key, "output")
    except Exception as exc:  # ValueError: no/ambiguous match; PortAudioError
        names = ", ".join(f"{d['index']}: {d['name']}" for d in output_devices(sd)) or "none"
        raise PlaybackError(f"no output device {device!r} ({exc}); output devices: {names}") from None
    return info["index"]


class SoundDeviceSink:
    """A PortAudio output stream through ``sounddevice``.

    ``latency``: PortAudio's suggested output latency (``"low"``, ``"high"`` or seconds). The ring
    buffer absorbs the renderer's jitter; the device buffer only has to cover the callback's. On
    PulseAudio ``"low"`` is 21 ms, which a busy 2-core machine (a fit running beside us) overran a
    few times a minute; 50 ms (43 ms reported) did not, so that is the default.
    """

    realtime = True
    heads = "first"

    def __init__(self, device=None, blocksize: int | None = None, latency=0.05):
        self.device_request, self.blocksize, self.latency_request = device, blocksize, latency
        self.stream = None
        self.running = False

    def start(self, engine) -> None:
        sd = import_sounddevice()
        # (No sd.check_output_settings: it opens the device once more, ~40 ms on PulseAudio; the
        # stream itself reports an unsupported rate or channel count.)
        device = resolve_output_device(self.device_request, sd)
        self._engine = engine
        first = [True]

        def callback(outdata, frames, time_info, status):
            if first[0]:  # PortAudio's thread: raise its priority once, like the renderer's
                first[0] = False
                raise_thread_priority()
            if status.output_underflow:
                engine.stats.device_xruns += 1
            engine.consume(outdata)

        before = _native_threads()
        try:
            engine.prefill(self._buffer_seconds(sd, device))
            self.stream = sd.OutputStream(samplerate=engine.sr, channels=engine.channels, dtype="float32",
                                          blocksize=engine.max_read, device=device, latency=self.latency_request,
                                          callback=callback)
            self.stream.start()
            # The audio stack's own threads (e.g. the PulseAudio client's mainloop, which carries
            # our frames to the server) need the same priority as the callback: under load a
            # nice-0 mainloop thread was the cause of the remaining device underflows.
            _raise_threads(_native_threads() - before - {threading.get_native_id()})
        except Exception as exc:  # PortAudioError: unsupported rate or channels, device busy, no server...
            self.stream = None
            raise PlaybackError(f"cannot play {engine.channels} channel(s) at {engine.sr:g} Hz on the audio "
                                f"output: {exc}") from None
        self.running = True

    def _buffer_seconds(self, sd, device) -> float:
        """The device buffer the stream will fill when it starts: the requested latency."""
        latency = self.latency_request
        if latency is None:
            return 0.0
        if isinstance(latency, str):  # "low" / "high": the device's defaults
            latency = sd.query_devices(device, "output")[f"default_{latency}_output_latency"]
        return float(latency)

    @property
    def latency(self) -> float:
        """The stream's output latency in seconds (what PortAudio reports)."""
        return float(self.stream.latency) if self.stream is not None else 0.0

    def finish(self) -> None:
        time.sleep(self.latency + 0.02)  # the device still holds this much of the tail

    def stop(self) -> None:
        stream, self.stream = self.stream, None
        self.running = False
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception:  # the server may be gone already; nothing left to release
                pass


class NullSink:
    """Pulls ``blocksize`` frames every ``blocksize / sr / pace`` seconds and keeps them.

    ``pace=1`` is real time (what tests of timing need); the schedule is absolute, so a late pull
    is followed by quicker ones, like a sound card's clock. ``keep=False`` discards the frames
    (long benchmarks). ``burst``: seconds pulled without waiting as soon as the first sound
    arrives, the worst case of a device filling its buffer at start-up (announced to the engine
    with ``prefill``, as the sounddevice sink announces its latency).
    """

    realtime = True
    heads = "first"

    def __init__(self, blocksize: int | None = None, pace: float = 1.0, keep: bool = True, burst: float = 0.0):
        self.blocksize, self.pace, self.keep, self.burst = blocksize, float(pace), keep, float(burst)
        self.running = False
        self._thread = None
        self._parts: list[np.ndarray] = []
        self.pull_times: list[tuple[int, float]] = []  # (frames before this pull, perf_counter)

    def start(self, engine) -> None:
        engine.prefill(self.burst)
        self.running = True
        self._thread = threading.Thread(target=self._run, args=(engine,), name="hyperaudio-null-sink", daemon=True)
        self._thread.start()

    def _run(self, engine) -> None:
        frames = engine.max_read
        buf = np.zeros((frames, engine.channels), dtype=np.float32)
        period = frames / engine.sr / self.pace
        due = time.perf_counter()
        total = 0
        burst = round(self.burst * engine.sr / frames)  # pulls without waiting, from the first sound on
        sounding = False
        while self.running:
            self.pull_times.append((total, time.perf_counter()))
            sounding = engine.consume(buf) > 0 or sounding
            total += frames
            if self.keep:
                self._parts.append(buf.copy())
            if sounding and burst > 0:
                burst -= 1
                continue
            due += period
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

    @property
    def played(self) -> np.ndarray:
        """Everything pulled so far, ``[frames, channels]``, including the silence before the first
        rendered frame (``engine.stats.lead_frames`` of it)."""
        parts = list(self._parts)
        if not parts:
            return np.zeros((0, 1), dtype=np.float32)
        return np.concatenate(parts)

    def finish(self) -> None:
        pass

    def stop(self) -> None:
        self.running = False
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self._thread = None


class FileSink:
    """Renders to a file through the same engine path (renderer, ring buffer, consume).

    Pulls frames as soon as they are rendered (no clock, no fades at the start) and, at the end,
    writes ``path`` atomically (``hyperaudio.audio.save`` -> ``atomic_path``; 32-bit float WAV by
    default). ``quality="VHQ"`` makes band-limited passages identical to ``render.render``'s.
    """

    realtime = False
    quality = "VHQ"

    def __init__(self, path, postprocess: bool = True, subtype: str | None = None, blocksize: int | None = None):
        self.path, self.postprocess, self.subtype, self.blocksize = Path(path), postprocess, subtype, blocksize
        self.heads = "all" if postprocess else "first"
        self.running = False
        self._thread = None
        self._parts: list[np.ndarray] = []
        self.result: np.ndarray | None = None  # [C, M] what was written

    def start(self, engine) -> None:
        if self.path.suffix.lower() not in (".wav", ".flac", ".ogg", ".mp3"):
            raise PlaybackError(f"{self.path}: unsupported output format (use .wav, .flac, .ogg or .mp3)")
        self._engine = engine
        self.running = True
        self._thread = threading.Thread(target=self._run, args=(engine,), name="hyperaudio-file-sink", daemon=True)
        self._thread.start()

    def _run(self, engine) -> None:
        frames = engine.max_read
        buf = np.zeros((frames, engine.channels), dtype=np.float32)
        while self.running and not engine.done:
            if engine.ring.readable() >= frames or engine._end_frame is not None:
                n = engine.consume(buf)
                if n:
                    self._parts.append(buf[:n].copy())
            else:
                time.sleep(0.0005)

    def finish(self) -> None:
        """Write the file (called by ``engine.wait()`` once the sound has ended)."""
        from ..audio import save
        from ..functional import postprocess

        self.stop()
        engine = self._engine
        y = np.concatenate(self._parts) if self._parts else np.zeros((0, engine.channels), np.float32)
        inr = engine.inr
        if self.heads == "all":
            h = engine.backend.heads
            y = y.T.reshape(inr.channels, h, -1)  # channel-major [C*H] columns -> [C, H, M]
            y = np.stack([postprocess(inr.module, y[c], engine.sr) for c in range(inr.channels)])
        else:
            y = y.T
        self.result = np.ascontiguousarray(y, dtype=np.float32)
        save(self.path, self.result, engine.sr, subtype=self.subtype)

    def stop(self) -> None:
        self.running = False
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._thread = None
