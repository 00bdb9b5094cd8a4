"""A thread per running job that reads its worker's pipe and re-emits each message as a Qt signal.

The monitor thread blocks on the pipe, so the GUI thread never does; Qt delivers the signals to the
GUI thread through its event loop (queued connections). The pipe's write end lives only in the
worker (the parent closes its copy), so a worker that dies, even in the middle of a message, ends the
pipe and the read fails at once instead of waiting forever for the rest. A worker that ends without
a final ``done``/``error`` message (killed, crashed in native code, out of memory) is reported as
failed with its exit code.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Signal


class JobMonitor(QObject):
    progress = Signal(dict)
    preview = Signal(dict)
    log = Signal(str)
    finished = Signal(object)  # the job's result
    failed = Signal(str, str)  # message, details

    POLL = 0.1

    def __init__(self, process, conn, parent=None):
        super().__init__(parent)
        self.process, self.conn = process, conn
        self._thread = threading.Thread(target=self._run, name="hyperaudio-ui-job-monitor", daemon=True)
        self._quit = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._quit.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        try:
            while not self._quit.is_set():
                try:
                    if not self.conn.poll(self.POLL):
                        continue
                    message = self.conn.recv()
                except (EOFError, OSError):  # the worker's end is gone: it ended without a last word
                    self._died()
                    return
                if self._dispatch(message):
                    return
        finally:
            self.conn.close()

    def _died(self) -> None:
        self.process.join(timeout=2.0)  # for its exit code
        code = self.process.exitcode
        self.failed.emit(f"the job's worker process ended unexpectedly (exit code {code})",
                         "It was killed or crashed without reporting an error (for example, it ran out of "
                         "memory or was terminated).")

    def _dispatch(self, message) -> bool:
        """Emit one message; True when it was the job's last."""
        kind = message[0]
        if kind == "progress":
            self.progress.emit(message[1])
        elif kind == "preview":
            self.preview.emit(message[1])
        elif kind == "log":
            self.log.emit(message[1])
        elif kind == "done":
            self.finished.emit(message[1])
            return True
        elif kind == "error":
            self.failed.emit(message[1], message[2] if len(message) > 2 else "")
            return True
        return False
