"""Process-wide CPU settings for the command-line tools (never applied on import of the library).

PyTorch's CPU allocator does not cache: every large tensor is a fresh ``mmap`` whose pages fault
in one by one and are returned to the kernel when freed. A fit step allocates the same few
hundred MB over and over, so on a VM that page-fault traffic costs about a quarter of a KAN step
(``bench/kan_speed.py --keep-freed-memory``: 268 -> 202 ms median, 2 threads). Asking glibc to
serve large blocks from its heap and to keep freed memory removes it, at the price of the process
holding on to its peak memory. Only the CLI processes, which own their address space, do this.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Tell glibc's malloc to keep freed blocks below ``threshold`` bytes; False if not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold)) and bool(mallopt(M_TRIM_THRESHOLD, threshold))
