"""Short background work (rendering a reconstruction, metrics, exports) off the GUI thread.

Fits and trainings take minutes and run in worker processes (``jobs``); these take well under a
minute, so a thread is enough: torch and numpy release the GIL while they compute. Results come back
to the GUI thread through a queued signal.
"""

from __future__ import annotations

import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from PySide6.QtCore import QObject, Signal


class Tasks(QObject):
    _finished = Signal(object, object)  # (callback, result)
    _failed = Signal(object, object)  # (callback, exception)
    busy_changed = Signal(int)

    def __init__(self, parent=None, workers: int = 2):
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hyperaudio-ui-task")
        self.pending = 0
        self._finished.connect(self._call)
        self._failed.connect(self._call_error)

    def run(self, fn: Callable, *args, on_done: Callable | None = None,
            on_error: Callable[[BaseException], None] | None = None, **kwargs) -> Future:
        self.pending += 1
        self.busy_changed.emit(self.pending)

        def work():
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # reported in the GUI thread, never lost in a thread
                exc.__traceback_text__ = traceback.format_exc()
                self._failed.emit(on_error, exc)
                raise
            self._finished.emit(on_done, result)
            return result

        return self._pool.submit(work)

    def _call(self, callback, result) -> None:
        self._settle()
        if callback is not None:
            callback(result)

    def _call_error(self, callback, exc) -> None:
        self._settle()
        if callback is not None:
            callback(exc)
        else:
            raise exc  # the exception hook shows it

    def _settle(self) -> None:
        self.pending -= 1
        self.busy_changed.emit(self.pending)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
