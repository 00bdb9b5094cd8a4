"""The rendered stream: voices that read the INR along a time line, loops, crossfades, the end.

Time convention (``hyperaudio.render``): a *source position* is a fractional index into the
original's native samples. Playing at output rate ``sr`` and speed ``s`` advances the position by
``inc = native * s / sr`` per output sample.

Band-limiting. A :class:`DirectVoice` evaluates the INR at the output instants themselves: right
when ``inc <= 1`` (the source is sampled at or above its native rate, and above it what we hear is
the INR's own continuous interpolation). When ``inc > 1`` that would alias everything between the
output's Nyquist frequency and the native one, so a :class:`ResampledVoice` evaluates the INR on
the native grid (one position per native sample: a rate of ``native * s`` output-time samples per
second) and decimates it to ``sr`` with ``soxr.ResampleStream``, a streaming band-limited resampler
whose output is aligned with its input (no added delay), exactly what ``render.render`` does
offline with ``soxr.resample``. With the same quality (``VHQ``) and start, the streamed and offline
signals are identical; live playback uses ``HQ``, whose shorter filter needs less look-ahead.

Changes. A voice has one fixed speed. Any change of position or speed (seek, speed, loop region,
the wrap at a loop's end) starts a new voice and crossfades to it linearly over ``fade`` samples,
so nothing clicks; the old stream's continuation is either a voice still running or, after the
engine took back frames it had rendered ahead (``RingBuffer.retract``), those frames themselves
(:class:`BufferVoice`).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import soxr  # imported here, not when the first resampling voice starts: that import takes ~30 ms

MIN_FADE = 8
# Above the native rate: "inr" evaluates the INR at every output instant (its own continuous
# interpolation, what render.render does); "resample" evaluates it on the native grid only and
# interpolates with soxr, at native/sr of the cost, losing whatever the INR holds above the native
# Nyquist frequency. Below the native rate both resample (band-limiting).
INTERPOLATIONS = ("inr", "resample")


class LinearSource:
    """The backend evaluated along ``anchor + k * inc``, ``k = 0, 1, ...``, in order.

    ``prefetch`` requests are kept in flight ahead of what was taken (CUDA: the GPU computes the next
    block while the renderer hands over this one); on CPU it is 0 and every request is synchronous.
    """

    def __init__(self, backend, anchor: float, inc: float, chunk: int, prefetch: int = 0):
        self.backend, self.anchor, self.inc = backend, float(anchor), float(inc)
        self.chunk, self.prefetch = max(1, int(chunk)), int(prefetch)
        self.next_k = 0  # first index not yet submitted
        self.pending: deque = deque()
        self.left = np.zeros((0, backend.channels), dtype=np.float32)

    def _submit(self, n: int) -> None:
        self.pending.append(self.backend.submit(self.anchor, self.inc, self.next_k, n))
        self.next_k += n

    def take(self, n: int) -> np.ndarray:
        parts, have = [], 0
        if len(self.left):
            parts.append(self.left[:n])
            have = len(parts[0])
            self.left = self.left[have:]
        while have < n:
            if not self.pending:
                self._submit(max(self.chunk, n - have))
            block = self.pending.popleft().result()
            need = n - have
            parts.append(block[:need])
            have += min(need, len(block))
            if len(block) > need:
                self.left = block[need:]
        while len(self.pending) < self.prefetch:
            self._submit(self.chunk)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class Voice:
    """Renders output frames ``[n, channels]``; ``pos`` is the source position of the next one."""

    inc: float
    channels: int

    @property
    def pos(self) -> float:
        raise NotImplementedError

    def render(self, n: int) -> np.ndarray:
        raise NotImplementedError


class DirectVoice(Voice):
    """Evaluates the INR at the output instants (``inc <= 1``: at or above the native rate)."""

    def __init__(self, backend, x0: float, inc: float, chunk: int, prefetch: int = 0):
        self.channels, self.inc = backend.channels, float(inc)
        self.x0 = float(x0)
        self.count = 0
        self.source = LinearSource(backend, x0, inc, chunk, prefetch)

    @property
    def pos(self) -> float:
        return self.x0 + self.count * self.inc

    def render(self, n: int) -> np.ndarray:
        self.count += n
        return self.source.take(n)


class ResampledVoice(Voice):
    """Evaluates the INR on the native grid and resamples it to the output rate: decimation when
    ``inc > 1`` (band-limiting), interpolation otherwise (``interpolation="resample"``).

    ``preroll``: a voice that starts mid-sound (after a seek or a loop wrap) first renders about a
    filter length of earlier source and drops its output, so its first frames see real signal
    history instead of the zeros a resampler assumes before its start. The input grid is shifted by
    a fraction of a sample so the kept output starts exactly at ``x0``. The first voice of a
    playback from ``start`` has no preroll, like ``render.render``.
    """

    def __init__(self, backend, x0: float, speed: float, native: float, sr: float, chunk: int,
                 quality: str = "HQ", preroll: bool = True, prefetch: int = 0):
        self.channels = backend.channels
        self.in_rate = native * speed  # native-grid samples per second of output time
        self.ratio = sr / self.in_rate  # < 1: decimation, > 1: interpolation
        self.inc = 1.0 / self.ratio  # source samples per output frame
        self.x0 = float(x0)
        self.count = 0
        self.stream = soxr.ResampleStream(self.in_rate, sr, self.channels, dtype="float32", quality=quality)
        skip = 0
        anchor = self.x0
        if preroll:
            # ~64 output periods of history covers soxr's HQ/VHQ filter support at any ratio.
            skip = 64
            anchor = self.x0 - skip * self.inc
        self.skip = skip
        self.source = LinearSource(backend, anchor, 1.0, max(chunk, 256), prefetch)
        self.out = np.zeros((0, self.channels), dtype=np.float32)
        self.in_chunk = max(256, int(math.ceil(chunk * self.inc)))

    @property
    def pos(self) -> float:
        return self.x0 + self.count * self.inc

    def render(self, n: int) -> np.ndarray:
        parts, have = [self.out], len(self.out)
        while have < n + self.skip:
            need = n + self.skip - have
            x = self.source.take(max(self.in_chunk, int(math.ceil(need * self.inc)) + 16))
            y = self.stream.resample_chunk(x)
            parts.append(y)
            have += len(y)
        y = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if self.skip:
            y, self.skip = y[self.skip :], 0
        self.out = y[n:]
        self.count += n
        return y[:n]


class BufferVoice(Voice):
    """Plays frames already rendered (the old stream's tail after a retract), then silence."""

    def __init__(self, frames: np.ndarray, pos: float = 0.0, inc: float = 1.0):
        self.frames, self.channels, self.inc = frames, frames.shape[1], inc
        self._pos = pos

    @property
    def pos(self) -> float:
        return self._pos

    def render(self, n: int) -> np.ndarray:
        out = np.zeros((n, self.channels), dtype=np.float32)
        m = min(n, len(self.frames))
        out[:m] = self.frames[:m]
        self.frames = self.frames[m:]
        self._pos += n * self.inc
        return out


class _Active:
    """A voice with its gain envelope: ``gain`` moves by ``step`` per frame, clamped to [0, 1]."""

    __slots__ = ("voice", "gain", "step", "delay")

    def __init__(self, voice: Voice, gain: float, step: float, delay: int = 0):
        self.voice, self.gain, self.step, self.delay = voice, gain, step, delay

    def envelope(self, n: int) -> np.ndarray | None:
        if self.step == 0:
            return None if self.gain == 1.0 else np.full(n, self.gain, dtype=np.float32)
        env = np.clip(self.gain + self.step * np.arange(1, n + 1), 0.0, 1.0).astype(np.float32)
        self.gain = float(env[-1])
        if self.gain in (0.0, 1.0):
            self.step = 0.0
        return env


class Timeline:
    """The mixed output: a main voice, voices fading out, loop wraps and the end of the sound.

    ``native`` and ``num_samples`` describe the INR; ``sr`` is the output rate; ``fade`` the crossfade
    length in frames. Loop bounds and positions are in native samples. ``render(n)`` returns fewer
    than ``n`` frames only at the end of a non-looping sound.
    """

    def __init__(self, backend, native: float, num_samples: int, sr: float, *, fade: int, chunk: int,
                 quality: str = "HQ", prefetch: int = 0, interpolation: str = "inr"):
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
        self.interpolation = interpolation
        self.backend, self.native, self.num_samples, self.sr = backend, float(native), int(num_samples), float(sr)
        self.channels = backend.channels
        self.fade = max(MIN_FADE, int(fade))
        self.chunk, self.quality, self.prefetch = int(chunk), quality, int(prefetch)
        self.speed = 1.0
        self.loop: tuple[float, float] | None = None
        self.active: list[_Active] = []
        self.main: _Active | None = None
        self.frame = 0  # absolute index of the next frame render() returns
        self.finished = False
        self.marks: deque = deque()  # (frame, pos, inc): where each main voice took over

    # -- voices ----------------------------------------------------------------------------------
    def _voice(self, x0: float, speed: float, preroll: bool) -> Voice:
        inc = self.native * speed / self.sr
        if inc <= 1.0 + 1e-12 and self.interpolation == "inr":
            return DirectVoice(self.backend, x0, inc, self.chunk, self.prefetch)
        return ResampledVoice(self.backend, x0, speed, self.native, self.sr, self.chunk, self.quality,
                              preroll=preroll, prefetch=self.prefetch)

    def start(self, x0: float, speed: float, *, tail: np.ndarray | None = None, preroll: bool = False) -> None:
        """Make a voice at ``x0`` the main one from the current frame.

        Without ``tail`` (the beginning of playback) it starts at full gain and replaces everything.
        With ``tail`` (the old stream's frames from this point on) it fades in while the tail fades
        out over ``fade`` frames.
        """
        self.speed = float(speed)
        voice = self._voice(x0, speed, preroll)
        step = 1.0 / self.fade
        if tail is None:
            self.active = [_Active(voice, 1.0, 0.0)]
        else:
            self.active = [_Active(BufferVoice(tail[: self.fade]), 1.0, -step), _Active(voice, 0.0, step)]
        self.main = self.active[-1]
        self.finished = False
        self.marks.append((self.frame, voice.pos, voice.inc))

    def _wrap(self) -> None:
        """At the loop end: a new main voice at the loop start, crossfaded from the running one."""
        a, b = self.loop
        old = self.main
        x = a + (old.voice.pos - b)  # keep the fractional phase
        if not a <= x < b:
            x = a
        voice = self._voice(x, self.speed, preroll=True)
        step = 1.0 / self.fade
        old.step = -step
        self.main = _Active(voice, 0.0, step)
        self.active.append(self.main)
        self.marks.append((self.frame, voice.pos, voice.inc))

    # -- queries ---------------------------------------------------------------------------------
    def position_at(self, frame: int) -> float:
        """Source position (native samples) of the main stream at an absolute output frame."""
        marks = list(self.marks)  # one C-level copy under the GIL: safe while the renderer appends
        for f, pos, inc in reversed(marks):
            if f <= frame:
                return pos + (frame - f) * inc
        if marks:
            f, pos, inc = marks[0]
            return pos + (frame - f) * inc
        return 0.0

    def forget_before(self, frame: int) -> None:
        """Drop position marks nobody can ask about any more (all but the last one before ``frame``)."""
        while len(self.marks) > 1 and self.marks[1][0] <= frame:
            self.marks.popleft()

    def forget_after(self, frame: int) -> None:
        while self.marks and self.marks[-1][0] > frame:
            self.marks.pop()

    # -- rendering -------------------------------------------------------------------------------
    def _frames_until_event(self, limit: int) -> tuple[int, str | None]:
        main = self.main.voice
        if self.loop is not None:
            a, b = self.loop
            k = 0 if main.pos >= b else math.ceil((b - main.pos) / main.inc)
            if k < limit:
                return k, "wrap"
            return limit, None
        # render.render makes round((N - x0) / inc) frames: those with pos < N - inc / 2.
        end = self.num_samples - 0.5 * main.inc
        k = max(0, math.ceil((end - main.pos) / main.inc - 1e-9))
        if k <= limit:
            return k, "end"
        return limit, None

    def _mix(self, n: int) -> np.ndarray:
        if len(self.active) == 1 and self.active[0].step == 0 and self.active[0].gain == 1.0:
            return self.active[0].voice.render(n)  # the steady state: no mixing, no copy
        out = None
        for act in self.active:
            y = act.voice.render(n)
            env = act.envelope(n)
            if env is not None:
                y = y * env[:, None]
            out = y.copy() if out is None else out.__iadd__(y)
        self.active = [a for a in self.active if a is self.main or a.gain > 0.0 or a.step > 0]
        return out

    def render(self, n: int) -> np.ndarray:
        parts, done = [], 0
        while done < n and not self.finished:
            k, event = self._frames_until_event(n - done)
            if k > 0:
                parts.append(self._mix(k))
                done += k
                self.frame += k
            if event == "wrap":
                self._wrap()
            elif event == "end":
                self.finished = True
        if not parts:
            return np.zeros((0, self.channels), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
