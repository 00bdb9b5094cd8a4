"""A guard against reference-count bugs in PySide6 on CPython before 3.12.

Measured with PySide6 6.12.0 on CPython 3.11: every ``Signal.emit()`` called from Python drops one
reference to ``True`` that it never took, ``QTimer.singleShot(ms, callable)`` drops one to ``None``,
and emitting ``False`` or ``None`` as an ``object`` argument leaks one. pyqtgraph emits signals on
every view change, so within minutes (a few thousand emits) ``True``'s count reaches zero and the
interpreter aborts ("Fatal Python error: bool_dealloc: deallocating True or False"; the test suite
hit it, and "none_dealloc", at exit). CPython 3.12 made these singletons immortal, which makes such
bugs harmless there; before 3.12 we do what 3.12 does: give the three singletons a reference count
no leak can use up (2**40 more: 10**12 emits). They are static objects that are never freed anyway,
so this changes nothing but the counter.
"""

from __future__ import annotations

import platform
import sys

_done = False


def immortalize_singletons() -> bool:
    """Raise the reference counts of None, True and False once; True where that was needed."""
    global _done
    if _done or sys.version_info >= (3, 12) or platform.python_implementation() != "CPython":
        return False
    import ctypes

    for obj in (None, True, False):
        # ob_refcnt is the first field of every CPython object.
        ctypes.c_ssize_t.from_address(id(obj)).value += 1 << 40
    _done = True
    return True
