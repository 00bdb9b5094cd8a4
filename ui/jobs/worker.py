"""What runs inside a job's worker process (multiprocessing, spawn context). No Qt here.

The parent starts :func:`run` with a job kind, a picklable spec, the write end of a pipe and two
events. The child sends tuples through the pipe (synchronously: a message is complete once
``send`` returns, and the parent's monitor thread is always reading):

``("progress", dict)``   fraction, step, loss, sisnr, ... (a few per second at most)
``("preview", dict)``    a fit's current reconstruction of the chunks being fitted:
                         ``{"segments": [(channel, start, float32 samples), ...]}``
``("log", str)``         a line for the job's log
``("done", dict)``       the result (e.g. ``{"path": ".hya written"}``)
``("error", message, traceback)``

Pause is an Event the job's callback waits on (set = running); stop is an Event the job polls
(``should_stop``). A job that is stopped still returns what it has (a fit saves its INR so far).
Payloads stay small: previews cover only the chunks being fitted, at most every
``PREVIEW_SECONDS`` and never more than ~10 % of the fit's time.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
import traceback
from pathlib import Path

PREVIEW_SECONDS = 0.3
PROGRESS_SECONDS = 0.1
PREVIEW_SHARE = 0.1  # at most this share of the worker's time goes into rendering previews

#: job kind -> "module:function"; the function gets (spec, reporter) and returns a picklable result.
JOBS = {
    "fit": "hyperaudio_ui.jobs.worker:fit_job",
    "encode": "hyperaudio_ui.jobs.hypernet_jobs:encode_job",
    "train": "hyperaudio_ui.jobs.hypernet_jobs:train_job",
}


class PausableClock:
    """The ``time`` module as a job's library code sees it, minus the time spent paused.

    Fits and trainings have wall-clock budgets (``fit.seconds``, ``train.seconds``) measured with
    ``time.perf_counter``; a pause must not use them up. :meth:`Reporter.using_clock` puts this in
    place of a module's ``time`` for the duration of the job (this process runs nothing else).
    """

    def __init__(self):
        self.paused = 0.0

    def perf_counter(self) -> float:
        return time.perf_counter() - self.paused

    def __getattr__(self, name):
        return getattr(time, name)


class Reporter:
    """The job's side of the pipe and events."""

    def __init__(self, conn, resume, stop):
        self.conn, self.resume, self.stop = conn, resume, stop
        self._last_progress = 0.0
        self.clock = PausableClock()

    def should_stop(self) -> bool:
        return self.stop.is_set()

    def wait_if_paused(self) -> None:
        """Block while paused (the GUI cleared ``resume``); a stop ends the pause."""
        if self.resume.is_set():
            return
        t0 = time.perf_counter()
        while not self.resume.is_set() and not self.stop.is_set():
            self.resume.wait(0.1)
        self.clock.paused += time.perf_counter() - t0

    @contextlib.contextmanager
    def using_clock(self, *modules):
        """Let ``modules`` (that ``import time``) measure time without the pauses."""
        saved = [(m, m.time) for m in modules if getattr(m, "time", None) is time]
        for m, _ in saved:
            m.time = self.clock
        try:
            yield
        finally:
            for m, original in saved:
                m.time = original

    def progress(self, force: bool = False, **values) -> None:
        now = time.perf_counter()
        if force or now - self._last_progress >= PROGRESS_SECONDS:
            self._last_progress = now
            self.conn.send(("progress", values))

    def preview(self, segments) -> None:
        self.conn.send(("preview", {"segments": segments}))

    def log(self, text: str) -> None:
        self.conn.send(("log", str(text)))


def run(kind: str, spec: dict, conn, resume, stop) -> None:
    """The worker process's entry point."""
    _be_nice()
    try:
        module, name = JOBS[kind].split(":") if kind in JOBS else kind.split(":")
        job = getattr(importlib.import_module(module), name)
        result = job(spec, Reporter(conn, resume, stop))
    except BaseException as exc:  # everything reaches the GUI as a message, nothing as a dead process
        from hyperaudio.errors import HyperaudioError

        message = str(exc) if isinstance(exc, HyperaudioError) else f"{type(exc).__name__}: {exc}"
        conn.send(("error", message, traceback.format_exc()))
        conn.close()
        return
    conn.send(("done", result))
    conn.close()


def _be_nice() -> None:
    # The GUI and live playback share the machine with this process: let them go first, and leave
    # them a core for themselves.
    try:
        os.nice(5)
    except (OSError, AttributeError):
        pass
    import torch

    from hyperaudio.runtime import keep_freed_memory

    keep_freed_memory()  # the worker owns its process: fit steps reuse freed memory, as in the CLI
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))


# -- fit ----------------------------------------------------------------------------------------------
def fit_job(spec: dict, rep: Reporter) -> dict:
    """``spec``: audio ``[C, N]``, sample_rate, config (resolved), out (the .hya to write)."""
    import numpy as np
    import torch

    from hyperaudio import config as config_mod, fit, hya
    from hyperaudio.functional import call_batched

    audio = np.atleast_2d(np.asarray(spec["audio"], dtype=np.float32))
    sr, cfg = float(spec["sample_rate"]), spec["config"]
    config_mod.validate(cfg)
    channels, n = audio.shape
    chunks = fit.chunk_layout(n, int(cfg["fit"]["chunk_samples"]), int(cfg["fit"]["overlap_samples"]))
    module = config_mod.build_target(cfg)
    grids: dict[int, torch.Tensor] = {}
    state = {"last": 0.0, "spent": 0.0, "start": time.perf_counter()}
    rep.log(f"fitting {channels} channel(s), {n / sr:.2f} s at {sr:g} Hz, {len(chunks)} chunk(s) "
            f"with {cfg['target']['name']}")

    def preview(progress) -> None:
        # Only the chunks of the group being fitted change: render those, first head, no crossfade.
        t0 = time.perf_counter()
        length = chunks[0][1]
        t = grids.setdefault(length, fit.time_grid(length))
        with torch.no_grad():
            y = call_batched(progress.module or module, progress.params, t)[..., 0].numpy()  # [B, L]: the first head, as playback
        segments = []
        for row, member in enumerate(progress.members):
            chunk, channel = divmod(member, channels)
            start, size = chunks[chunk]
            segments.append((channel, int(start), np.ascontiguousarray(y[row, :size], dtype=np.float32)))
        rep.preview(segments)
        state["spent"] += time.perf_counter() - t0

    def callback(progress) -> None:
        rep.wait_if_paused()
        rep.progress(fraction=progress.fraction, step=progress.step, loss=progress.loss, sisnr=progress.sisnr,
                     group=progress.group, groups=progress.groups, lr=progress.lr, elapsed=progress.elapsed,
                     phase="fit")
        now = time.perf_counter()
        budget_ok = state["spent"] <= PREVIEW_SHARE * (now - state["start"])
        if now - state["last"] >= PREVIEW_SECONDS and budget_ok and progress.params:
            state["last"] = now
            preview(progress)

    # The fit's clock starts now: the GUI counts a time budget down from here. The auto recipe's
    # race sends no progress of its own, so say that it is on.
    rep.progress(force=True, fraction=0.0, elapsed=0.0,
                 phase="race" if cfg["fit"]["recipe"] == "auto" else "fit")
    with rep.using_clock(fit):
        inr = fit.fit(audio, sr, cfg, progress=False, callback=callback, should_stop=rep.should_stop)
    out = Path(spec["out"])
    hya.save(inr, out)
    rep.progress(force=True, fraction=1.0 if not inr.info.get("interrupted") else None,
                 loss=inr.info.get("loss"), sisnr=inr.info.get("sisnr"), step=inr.info.get("steps"))
    return {"path": str(out), "info": inr.info}
