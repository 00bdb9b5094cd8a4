"""Jobs and the job queue: one worker process per job, started one after another.

A :class:`Job` owns its process (multiprocessing, *spawn*: a fresh interpreter, so nothing of the
GUI process - Qt, its threads, its locks - is inherited), the pipe it reports through, and the
pause/stop events. Its :class:`~hyperaudio_ui.jobs.monitor.JobMonitor` turns reports into signals.

The queue runs ``parallel`` jobs at a time (one by default: a fit already uses every core but the
one left to the GUI and playback) and starts the next when one ends, whichever way it ends.
"""

from __future__ import annotations

import itertools
import multiprocessing
import time

from PySide6.QtCore import QObject, QTimer, Signal

from . import worker
from .monitor import JobMonitor

KILL_AFTER_MS = 5000  # a stopped job that has not ended by then is terminated
_ids = itertools.count(1)

ACTIVE = ("running", "paused", "stopping")
ENDED = ("done", "stopped", "failed", "cancelled")


class Job(QObject):
    changed = Signal(object)
    progressed = Signal(object, dict)
    previewed = Signal(object, dict)
    logged = Signal(object, str)
    succeeded = Signal(object, object)  # job, result
    errored = Signal(object, str, str)  # job, message, details
    ended = Signal(object)

    def __init__(self, kind: str, title: str, spec: dict, context: dict | None = None):
        super().__init__()
        self.id = next(_ids)
        self.kind, self.title, self.spec = kind, title, spec
        self.context = dict(context or {})  # GUI-side objects (the sound it belongs to, ...): never pickled
        self.state = "queued"
        self.process = None
        self.monitor: JobMonitor | None = None
        self.result = None
        self.error: tuple[str, str] | None = None
        self.last: dict = {}
        self.history: dict[str, list[float]] = {"step": [], "loss": [], "sisnr": [], "time": []}
        self.lines: list[str] = []
        self._active = 0.0  # seconds spent running (not paused), up to _since
        self._since: float | None = None

    # -- timing ------------------------------------------------------------------------------------
    @property
    def active_seconds(self) -> float:
        return self._active + (time.perf_counter() - self._since if self._since is not None else 0.0)

    @property
    def fraction(self) -> float | None:
        f = self.last.get("fraction")
        return None if f is None else float(f)

    @property
    def eta(self) -> float | None:
        """Seconds left, from the running time so far (pauses excluded) and the fraction done."""
        f = self.fraction
        if self.state not in ("running", "paused") or not f or f <= 0 or f >= 1:
            return None
        return self.active_seconds * (1 - f) / f

    def _clock(self, running: bool) -> None:
        now = time.perf_counter()
        if self._since is not None:
            self._active += now - self._since
        self._since = now if running else None

    # -- control -----------------------------------------------------------------------------------
    def start(self, ctx) -> None:
        reader, writer = ctx.Pipe(duplex=False)
        self.resume_event, self.stop_event = ctx.Event(), ctx.Event()
        self.resume_event.set()
        # Not a daemon: a job may start processes of its own (data loaders); the queue ends it on exit.
        self.process = ctx.Process(target=worker.run, name=f"hyperaudio-job-{self.id}",
                                   args=(self.kind, self.spec, writer, self.resume_event, self.stop_event))
        self.process.start()
        writer.close()  # the worker holds the only write end now: its death ends the pipe (see monitor)
        self.monitor = JobMonitor(self.process, reader)
        self.monitor.progress.connect(self._on_progress)
        self.monitor.preview.connect(lambda payload: self.previewed.emit(self, payload))
        self.monitor.log.connect(self._on_log)
        self.monitor.finished.connect(self._on_done)
        self.monitor.failed.connect(self._on_failed)
        self.monitor.start()
        self._clock(True)
        self._set("running")

    def pause(self) -> None:
        if self.state == "running":
            self.resume_event.clear()
            self._clock(False)
            self._set("paused")

    def resume(self) -> None:
        if self.state == "paused":
            self.resume_event.set()
            self._clock(True)
            self._set("running")

    def stop(self) -> None:
        """Queued: cancelled. Running: asked to stop (a fit keeps what it learnt); killed if it
        does not end within ``KILL_AFTER_MS``."""
        if self.state == "queued":
            self._set("cancelled")
            self.ended.emit(self)
            return
        if self.state in ("running", "paused"):
            self.stop_event.set()
            self.resume_event.set()
            self._set("stopping")
            QTimer.singleShot(KILL_AFTER_MS, self.kill)

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.terminate()

    # -- reports -----------------------------------------------------------------------------------
    def _on_progress(self, values: dict) -> None:
        self.last.update({k: v for k, v in values.items() if v is not None})
        if values.get("loss") is not None and values.get("step") is not None:
            self.history["step"].append(float(values["step"]))
            self.history["loss"].append(float(values["loss"]))
            self.history["sisnr"].append(float(values.get("sisnr", float("nan"))))
            self.history["time"].append(self.active_seconds)
        self.progressed.emit(self, values)

    def _on_log(self, text: str) -> None:
        self.lines.append(text)
        self.logged.emit(self, text)

    def _on_done(self, result) -> None:
        self.result = result
        interrupted = isinstance(result, dict) and (result.get("interrupted") or result.get("info", {}).get("interrupted"))
        self._finish("stopped" if (self.state == "stopping" or interrupted) else "done")
        self.succeeded.emit(self, result)
        self.ended.emit(self)

    def _on_failed(self, message: str, details: str) -> None:
        self.error = (message, details)
        self._finish("failed")
        self.errored.emit(self, message, details)
        self.ended.emit(self)

    def _finish(self, state: str) -> None:
        self._clock(False)
        self._set(state)
        if self.monitor is not None:
            self.monitor.close()
        if self.process is not None:
            self.process.join(timeout=2.0)
            if self.process.is_alive():
                self.process.terminate()

    def _set(self, state: str) -> None:
        self.state = state
        self.changed.emit(self)


class JobQueue(QObject):
    added = Signal(object)

    def __init__(self, parent=None, parallel: int = 1):
        super().__init__(parent)
        self.parallel = parallel
        self.jobs: list[Job] = []
        self._ctx = multiprocessing.get_context("spawn")

    def submit(self, job: Job) -> Job:
        self.jobs.append(job)
        job.ended.connect(lambda _job: QTimer.singleShot(0, self._next))
        self.added.emit(job)
        self._next()
        return job

    def running(self) -> list[Job]:
        return [j for j in self.jobs if j.state in ACTIVE]

    def _next(self) -> None:
        while len(self.running()) < self.parallel:
            waiting = [j for j in self.jobs if j.state == "queued"]
            if not waiting:
                return
            waiting[0].start(self._ctx)

    def shutdown(self, timeout: float = 3.0) -> None:
        """Stop everything (the app is closing): ask, wait a little, then terminate."""
        for job in self.jobs:
            if job.state == "queued":
                job.state = "cancelled"
            elif job.state in ACTIVE:
                job.stop_event.set()
                job.resume_event.set()
        deadline = time.monotonic() + timeout
        for job in self.jobs:
            if job.process is not None:
                job.process.join(timeout=max(0.0, deadline - time.monotonic()))
                if job.process.is_alive():
                    job.process.terminate()
                    job.process.join(timeout=1.0)
            if job.monitor is not None:
                job.monitor.close()
