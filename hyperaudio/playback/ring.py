"""A preallocated single-producer/single-consumer ring buffer of float32 frames ``[capacity, channels]``.

The producer (the renderer thread) appends frames; the consumer (the audio callback) copies them
out. Neither side takes a lock: each side owns one monotonically increasing frame counter
(``written`` by the producer, ``read`` by the consumer) and only *reads* the other's. Under
CPython's GIL a Python int load or store is atomic, and the GIL's release/acquire orders the
producer's sample copy before its counter store, so the consumer never sees a counter ahead of
its data. (A free-threaded build would need explicit atomics here.)

The consumer side allocates no buffers: :meth:`read_into` copies straight into the caller's array.

:meth:`retract` lets the producer take back frames it wrote but the consumer has not reached,
keeping the next ``keep`` frames. That is how a parameter change (seek, speed, loop) is heard within
one block although the renderer works far ahead: the stale frames are dropped and re-rendered.
"""

from __future__ import annotations

import numpy as np


class RingBuffer:
    """SPSC float32 ring buffer. Frame indices are absolute (they count since creation)."""

    def __init__(self, capacity: int, channels: int, max_read: int):
        if capacity < 2 * max_read:
            raise ValueError(f"ring capacity {capacity} must hold at least two reads of {max_read} frames")
        self.capacity = int(capacity)
        self.channels = int(channels)
        # The most frames one read_into call may copy: retract never takes back frames an in-flight
        # read could be copying.
        self.max_read = int(max_read)
        self.buf = np.zeros((self.capacity, self.channels), dtype=np.float32)
        self.written = 0  # producer-owned
        self.read = 0  # consumer-owned

    # -- both sides ------------------------------------------------------------------------------
    def readable(self) -> int:
        return self.written - self.read

    def writable(self) -> int:
        return self.capacity - (self.written - self.read)

    # -- producer --------------------------------------------------------------------------------
    def write(self, frames: np.ndarray) -> int:
        """Append as many of ``frames`` ``[n, channels]`` as fit; returns how many were written."""
        w = self.written
        n = min(len(frames), self.capacity - (w - self.read))
        if n <= 0:
            return 0
        i = w % self.capacity
        first = min(n, self.capacity - i)
        self.buf[i : i + first] = frames[:first]
        if n > first:
            self.buf[: n - first] = frames[first:n]
        self.written = w + n  # publish only after the copy
        return n

    def peek(self, start: int, n: int) -> np.ndarray:
        """A copy of frames ``[start, start + n)`` (producer side: frames it wrote, read or not)."""
        out = np.empty((n, self.channels), dtype=np.float32)
        i = start % self.capacity
        first = min(n, self.capacity - i)
        out[:first] = self.buf[i : i + first]
        if n > first:
            out[first:] = self.buf[: n - first]
        return out

    def retract(self, keep: int) -> int:
        """Drop unread frames beyond ``read + keep``; returns the new write index.

        The consumer may be inside :meth:`read_into` right now, holding the old write index and
        copying up to ``max_read`` frames from its read index. So after lowering ``written`` we
        re-read the consumer's index and never cut below ``read + max_read``: the frames such a read
        could touch stay untouched (they are the old, valid ones), and every later read sees the
        lowered index. Frames in ``[new_w, old_w)`` keep their data until overwritten, so
        :meth:`peek` still returns them (the renderer crossfades from them).
        """
        old = self.written
        cut = self.read + max(keep, self.max_read)
        if cut >= old:
            return old
        self.written = cut
        safe = self.read + self.max_read  # the consumer may have advanced since
        if safe > cut:
            cut = min(old, safe)
            self.written = cut
        return cut

    def reset(self) -> None:
        """Empty the buffer. Only when the consumer is stopped."""
        self.read = self.written = 0

    # -- consumer --------------------------------------------------------------------------------
    def read_into(self, out: np.ndarray) -> int:
        """Copy up to ``len(out)`` frames into ``out``; returns how many. No allocation.

        Copies in portions of at most ``max_read`` frames, loading the producer's index afresh for
        each portion, which is what keeps :meth:`retract` safe for any ``len(out)``.
        """
        done, total = 0, len(out)
        while done < total:
            r = self.read
            n = min(total - done, self.written - r, self.max_read)
            if n <= 0:
                break
            i = r % self.capacity
            first = min(n, self.capacity - i)
            out[done : done + first] = self.buf[i : i + first]
            if n > first:
                out[done + first : done + n] = self.buf[: n - first]
            self.read = r + n
            done += n
        return done
