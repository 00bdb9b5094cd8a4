"""Jobs in worker processes, driven from the app: a fit streaming progress, previews and curves;
pause, resume and stop; the queue; jobs that fail or whose process dies."""

from __future__ import annotations

import os
import signal

import numpy as np
from gui_support import SR, WAIT_MS, dialogs, screenshot, screenshot_dir, settings_path, tone_and_noise, window  # noqa: F401


def small_nerf(window, steps: int) -> None:
    """Choose a small NeRF in the New job panel, as a user would."""
    fit = window.new_job.fit
    fit.select("nerf", "nerf-inr")
    fit.form.set_value("target.params.hidden", [24, 24])
    fit.form.set_value("target.params.encoding_length", 6)
    fit.form.set_value("fit.steps", steps)
    fit.form.set_value("fit.eval_every", 2)


def test_fit_streams_live_views_and_curves_pauses_resumes_stops_and_the_queue_continues(
        window, qtbot, write_audio, screenshot):
    path = write_audio("voice.wav", tone_and_noise(0.3), SR)
    (sound,) = window.open_paths([path])
    small_nerf(window, steps=1_000_000)  # runs until stopped
    window.new_job.fit.start_button.click()
    small_nerf(window, steps=20)  # queued behind it; runs to the end
    window.new_job.fit.start_button.click()
    first, second = window.jobs.jobs
    assert second.state == "queued"
    panel = window.job_panel

    # Live: progress, the loss and SI-SNR curves, the reconstruction in both views.
    qtbot.waitUntil(lambda: len(first.history["loss"]) >= 3, timeout=WAIT_MS)
    assert window.shown == (sound, first)
    qtbot.waitUntil(lambda: np.abs(first.context["preview"]).max() > 0, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.spectrogram.data["reconstruction"] is not None
                    and window.spectrogram.data["reconstruction"].max() > -50, timeout=10_000)
    flushes, redraws = window.spectrogram.flushes, window.waveform.redraws
    qtbot.waitUntil(lambda: window.spectrogram.flushes > flushes and window.waveform.redraws > redraws, timeout=WAIT_MS)
    panel.tree.setCurrentItem(panel._items[first.id])
    qtbot.waitUntil(lambda: len(panel.loss_curve.getData()[0] if panel.loss_curve.getData()[0] is not None else []) >= 3,
                    timeout=10_000)
    assert np.isfinite(panel.sisnr_curve.getData()[1]).all()
    assert second.state == "queued" and first.state == "running"
    qtbot.waitUntil(lambda: panel._items[first.id].text(3) != "", timeout=5000)
    assert panel.state_text(first).startswith("running")
    screenshot(window, "02-fitting")

    # Pause: the worker blocks in its progress callback; nothing more arrives until resumed.
    panel.pause_button.click()
    assert first.state == "paused" and panel.pause_button.text() == "Resume"
    qtbot.wait(1500)  # reports already on their way when we paused
    count = len(first.history["loss"])
    qtbot.wait(1000)
    assert len(first.history["loss"]) == count
    panel.pause_button.click()
    assert first.state == "running"
    qtbot.waitUntil(lambda: len(first.history["loss"]) > count, timeout=WAIT_MS)

    # Stop: the fit keeps what it learnt, and the queue moves on to the next job.
    panel.stop_button.click()
    qtbot.waitUntil(lambda: first.state == "stopped", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: len(sound.inrs) == 1 and bool(sound.inrs[0].metrics), timeout=WAIT_MS)
    assert "(stopped)" in sound.inrs[0].name and sound.inrs[0].inr.info["interrupted"]
    qtbot.waitUntil(lambda: second.state == "done", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: len(sound.inrs) == 2 and bool(sound.inrs[1].metrics), timeout=WAIT_MS)
    assert sound.inrs[1].inr.info["steps"] == 20 and not sound.inrs[1].inr.info["interrupted"]
    assert panel._bars[second.id].value() == 1000
    assert window.dialogs == []
    window.library.select(sound.inrs[0])
    qtbot.waitUntil(lambda: window.spectrogram.data["difference"] is not None, timeout=5000)
    screenshot(window, "03-fitted")


def test_a_failing_job_and_a_dying_worker_show_errors_and_the_app_survives(window, qtbot):
    bad = tone_and_noise()
    bad[0, 100] = np.nan  # the loader refuses such files; here it reaches a worker anyway
    window.add_sound(bad, SR, name="nan")
    small_nerf(window, steps=1_000_000)
    failing = window.start_fit()
    good = window.add_sound(tone_and_noise(seed=3), SR, name="good")
    dying = window.start_fit()
    qtbot.waitUntil(lambda: failing.state == "failed", timeout=WAIT_MS)
    title, text, _ = window.dialogs[0]
    assert title == "Job failed" and "NaN" in text

    qtbot.waitUntil(lambda: dying.state == "running" and len(dying.history["loss"]) >= 1, timeout=WAIT_MS)
    os.kill(dying.process.pid, signal.SIGKILL)  # as the out-of-memory killer would
    qtbot.waitUntil(lambda: dying.state == "failed", timeout=WAIT_MS)
    title, text, details = window.dialogs[1]
    assert title == "Job failed" and "ended unexpectedly" in text and "exit code -9" in text
    assert window.job_panel.state_text(dying) == "failed"
    assert good.inrs == [] and window.jobs.running() == []

    # Still working: a new sound opens and shows.
    window.add_sound(tone_and_noise(seed=4), SR, name="after")
    assert window.library.current()[0].name == "after" and window.isVisible()


def test_a_worker_dying_in_the_middle_of_a_message_is_reported_not_waited_for(qtbot):
    """The monitor must not wait forever for the rest of a message a killed worker never finished."""
    import multiprocessing
    import struct

    from hyperaudio_ui.jobs.monitor import JobMonitor

    class Dead:  # what a killed worker process looks like
        exitcode = -9

        def join(self, timeout=None):
            pass

        def is_alive(self):
            return False

    reader, writer = multiprocessing.Pipe(duplex=False)
    writer.send(("progress", {"fraction": 0.5}))
    os.write(writer.fileno(), struct.pack("!i", 100_000) + b"only the start of it")
    writer.close()
    monitor = JobMonitor(Dead(), reader)
    seen, failures = [], []
    monitor.progress.connect(seen.append)
    monitor.failed.connect(lambda message, details: failures.append(message))
    monitor.start()
    qtbot.waitUntil(lambda: bool(failures), timeout=10_000)
    assert seen == [{"fraction": 0.5}] and "exit code -9" in failures[0]
    monitor.close()


def test_a_pause_does_not_use_up_a_wall_clock_budget():
    """fit.seconds / train.seconds are measured with time.perf_counter: the worker hides pauses from it."""
    import threading
    import time as real_time
    import types

    from hyperaudio_ui.jobs.worker import Reporter

    library = types.SimpleNamespace(time=real_time)  # stands for hyperaudio.fit, which does `import time`
    resume, stop = threading.Event(), threading.Event()
    rep = Reporter(None, resume, stop)
    with rep.using_clock(library):
        threading.Timer(0.3, resume.set).start()
        rep.wait_if_paused()  # paused until the timer resumes
        assert rep.clock.paused >= 0.29
        hidden = real_time.perf_counter() - library.time.perf_counter()
        assert abs(hidden - rep.clock.paused) < 0.05 and library.time.sleep is real_time.sleep
    assert library.time is real_time
