"""Jobs and the job queue: one worker process per job, started one after another.

A :class:`Job` owns its process (multiprocessing, *spawn*: a fresh interpreter, so nothing of the
GUI process - Qt, its threads, its locks - is inherited), the pipe it reports through, and the
pause/stop events. Its :class:`~hyperaudio_ui.jobs.monitor.JobMonitor` turns reports into signals.

The queue runs ``parallel`` jobs at a time (one by default: a fit already uses every core but the
one left to the GUI and playback) and starts the next when one ends, whichever way it ends.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import time

from PySide6.QtCore import QObject, QTimer, Signal

from . import worker
from .monitor import JobMonitor

KILL_AFTER_MS = 5000  # a stopped job that has not ended by then is terminated
_ids = itertools.count(1)

ACTIVE = ("running", "paused", "stopping")
ENDED = ("done", "stopped", "failed", "cancelled")
# A fit whose best SI-SNR stays at or below NOT_LEARNING_DB once NOT_LEARNING_AFTER of its chunk
# group's budget is spent is reported as not learning. 0 dB is what an output no closer to the
# sound than silence scores; the race is over long before a fifth of the budget.
NOT_LEARNING_DB = 1.0
NOT_LEARNING_AFTER = 0.2


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
        fit_config = spec.get("config", {}).get("fit", {}) if kind == "fit" else {}
        self.budget = float(fit_config.get("seconds") or 0.0)  # the fit's wall-clock budget (0 = steps only)
        # With a time budget the auto recipe has no step budget (hyperaudio.fit); a fixed preset
        # ends at whichever of the two runs out first.
        self._steps_too = fit_config.get("recipe", "auto") != "auto" or not self.budget
        self._elapsed_at: float | None = None  # active_seconds when the worker last said how long the fit ran
        self._group: int | None = None
        self._group_best = -math.inf  # best SI-SNR of the chunk group being fitted

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
        """Seconds left: what is left of a fit's time budget, or else (and when sooner: a fixed
        preset's steps that run out first) the running time so far (pauses excluded) over the
        fraction done.

        A time-budgeted fit counts down its budget from the fit's own clock: extrapolating the
        fraction would also count the worker's start and the recipe's race, which the fit takes out
        of the budget, and overestimate by that much early on."""
        if self.state not in ("running", "paused"):
            return None
        left = []
        f = self.fraction
        if f and 0 < f < 1 and self._steps_too:
            left.append(self.active_seconds * (1 - f) / f)
        if self.budget and self._elapsed_at is not None:
            spent = float(self.last["elapsed"]) + self.active_seconds - self._elapsed_at
            left.append(max(self.budget - spent, 0.0))
        return min(left) if left else None

    def not_learning(self) -> float | None:
        """The best SI-SNR (dB) of the chunk group being fitted when it is not learning, else None."""
        groups, group, f = self.last.get("groups", 1), self.last.get("group", 0), self.fraction
        if self.kind != "fit" or f is None or f * groups - group < NOT_LEARNING_AFTER:
            return None
        return self._group_best if -math.inf < self._group_best <= NOT_LEARNING_DB else None

    @property
    def recipe(self) -> dict | None:
        """What the auto recipe's race chose (``info["recipe"]``), once the fit has ended."""
        info = self.result.get("info", {}) if isinstance(self.result, dict) else {}
        return info.get("recipe")

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
        if values.get("elapsed") is not None:
            self._elapsed_at = self.active_seconds
        if values.get("group") is not None and values["group"] != self._group:
            self._group, self._group_best = values["group"], -math.inf
        sisnr = values.get("sisnr")
        if sisnr is not None and math.isfinite(sisnr):
            self._group_best = max(self._group_best, float(sisnr))
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

    def time_ahead(self) -> tuple[float, int]:
        """How long a job submitted now waits before it starts: the seconds known (what is left of
        the running jobs, the queued fits' budgets) and how many jobs ahead have no estimate."""
        ahead = [j for j in self.jobs if j.state in ACTIVE or j.state == "queued"]
        if len(ahead) < self.parallel:
            return 0.0, 0
        known, unknown = 0.0, 0
        for job in ahead:
            left = job.eta if job.state in ("running", "paused") else 0.0 if job.state == "stopping" else job.budget
            if left is None and job.budget:  # started, not yet reporting: its whole budget is left
                left = job.budget
            if left:
                known += left
            elif left is None or job.state == "queued":
                unknown += 1
        return known / self.parallel, unknown

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
