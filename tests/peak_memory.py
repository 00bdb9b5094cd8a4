"""Peak resident memory of a block of code in this process, for the hostile-input tests.

Linux keeps the process's resident high-water mark (``VmHWM`` in ``/proc/self/status``) and resets
it to the current resident size when ``5`` is written to ``/proc/self/clear_refs`` (Linux >= 4.0).
Resetting before the block and reading after it measures the block's own peak, which
``ru_maxrss`` (the peak over the process's whole life) cannot.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.M)
    if match is None:
        raise OSError(f"/proc/self/status has no {field}")
    return int(match.group(1))


def available() -> bool:
    """Whether the high-water mark can be reset here (Linux with a writable clear_refs)."""
    try:
        CLEAR_REFS.write_text("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


@dataclass
class Peak:
    start: int = 0  # resident bytes when the block began
    peak: int = 0  # resident high-water mark during the block, bytes

    @property
    def growth(self) -> int:
        """Bytes the block added at its peak, above what was resident when it began."""
        return max(0, self.peak - self.start)


@contextlib.contextmanager
def peak_rss():
    """``with peak_rss() as p: ...`` then ``p.growth``: the block's peak resident growth in bytes."""
    CLEAR_REFS.write_text("5")
    result = Peak(start=_status_kib("VmRSS") * 1024)
    try:
        yield result
    finally:
        result.peak = _status_kib("VmHWM") * 1024
