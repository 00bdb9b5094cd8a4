"""The Fit tab's time budget and quality target, the ETA they give, the auto recipe's choice per
network, and the job row of a fit that is not learning (issue #14, the app)."""

from __future__ import annotations

import datetime
import math

import numpy as np
from gui_support import SR, WAIT_MS, dialogs, screenshot, screenshot_dir, settings_path, window  # noqa: F401

from PySide6.QtCore import Qt  # noqa: E402


def test_the_budget_and_quality_target_are_the_forms_fit_seconds_and_target_sisnr(window, qtbot):
    fit = window.new_job.fit
    assert fit.preset_box.currentText() == "(auto recipe)"
    assert fit.budget_box.text() == "2:00" and fit.resolved()["fit"]["seconds"] == 120.0
    assert fit.quality_box.value() == 0 and fit.resolved()["fit"]["target_sisnr"] == 0.0
    before = fit.eta_label.text()
    assert before.startswith("Ends by about ") and "2:00 for the whole sound" in before

    # Typed as minutes:seconds, as a user would.
    fit.budget_box.lineEdit().selectAll()
    qtbot.keyClicks(fit.budget_box, "0:45")
    qtbot.keyClick(fit.budget_box, Qt.Key.Key_Return)
    assert fit.budget_box.value() == 45 and fit.resolved()["fit"]["seconds"] == 45.0
    assert fit.form.fields["fit.seconds"].widget.text() == "45.0"
    assert "0:45 for the whole sound" in fit.eta_label.text() and fit.eta_label.text() != before
    assert "The first 0:07 at most choose the learning rate" in fit.eta_label.text()

    fit.quality_box.setValue(20.0)
    assert fit.resolved()["fit"]["target_sisnr"] == 20.0
    assert "once every chunk reaches 20 dB" in fit.eta_label.text()
    fit.quality_box.setValue(0.0)
    assert fit.quality_box.text() == "off: use the whole budget" and fit.resolved()["fit"]["target_sisnr"] == 0.0

    # One source of truth: editing the detailed form moves the boxes, a bad value is said.
    fit.form.fields["fit.seconds"].widget.setText("300")
    fit.form.fields["fit.target_sisnr"].widget.setText("25")
    assert fit.budget_box.text() == "5:00" and fit.quality_box.value() == 25.0
    fit.form.fields["fit.seconds"].widget.setText("soon")
    assert "fit.seconds: not a number" in fit.eta_label.text()

    # The user's budget, not a network's setting: another network keeps it.
    fit.form.fields["fit.seconds"].widget.setText("300")
    fit.select("siren")
    assert fit.budget_box.text() == "5:00" and fit.resolved()["fit"]["seconds"] == 300.0
    assert fit.resolved()["fit"]["target_sisnr"] == 25.0

    # A paper preset keeps its steps; a budget set on it caps them, and the ETA says which applies.
    fit.select("kan", "kan-inr")
    assert fit.budget_box.text() == "none: 10,000 steps" and fit.resolved()["fit"]["seconds"] == 0.0
    assert fit.eta_label.text().startswith("No time limit: 10,000 steps")
    assert fit.recipe_label.text().startswith("Fixed preset")
    fit.budget_box.setValue(90)
    cfg = fit.resolved()
    assert cfg["fit"]["seconds"] == 90.0 and cfg["fit"]["steps"] == 10000 and cfg["fit"]["recipe"] == "fixed"
    assert "1:30 for the whole sound" in fit.eta_label.text() and "Sooner if 10,000 steps" in fit.eta_label.text()


def test_the_eta_text_counts_the_budget_and_the_queue_ahead():
    from hyperaudio_ui.job_setup import eta_text, parse_clock

    now = datetime.datetime(2026, 1, 1, 14, 0, 0)
    assert eta_text(120, 2000, True, 0.0, now=now).startswith("Ends by about 14:02: 2:00 for the whole sound")
    ahead = eta_text(120, 2000, True, 0.0, ahead=(600.0, 0), now=now)
    assert ahead.startswith("Ends by about 14:12") and "after 10:00 of jobs ahead" in ahead
    assert "Starts after 2 jobs ahead of unknown length" in eta_text(120, 2000, True, 0.0, ahead=(0.0, 2), now=now)
    assert [parse_clock(t) for t in ("2:00", "90", "2m", "1:02:03", "1.5 min", "soon")] == [120, 90, 120, 3723, 90, None]


def _fit_job(seconds: float):
    from hyperaudio import config
    from hyperaudio_ui.jobs.queue import Job

    cfg = config.resolve({}, "nerf", [f"fit.seconds={seconds}"])
    return Job("fit", "fit noise (nerf)", {"config": cfg})


def test_a_budgeted_fit_counts_its_budget_down_and_a_fit_that_learns_nothing_says_so(qtbot):
    """Reports fed through the path the worker's messages take (the monitor's progress signal)."""
    from hyperaudio_ui.jobs.panel import JobPanel, state_text
    from hyperaudio_ui.jobs.queue import JobQueue

    queue = JobQueue()
    panel = JobPanel(queue)
    qtbot.addWidget(panel)
    job = _fit_job(120.0)
    queue.added.emit(job)  # shown in the panel, never started: the reports below drive it
    job._clock(True)
    job._set("running")
    job._on_progress({"fraction": 0.0, "elapsed": 0.0, "phase": "race"})
    assert state_text(job).startswith("choosing lr and time scale") and 119 < job.eta <= 120
    # Ten seconds of race and startup in: extrapolating the fraction would say 9 minutes are left.
    job._on_progress({"fraction": 0.1, "elapsed": 30.0, "sisnr": 0.3, "loss": 0.1, "step": 10, "group": 0,
                      "groups": 1, "phase": "fit"})
    assert 89 < job.eta <= 90 and state_text(job) == "running %p%"  # too early to judge
    job._on_progress({"fraction": 0.25, "elapsed": 45.0, "sisnr": 0.6, "loss": 0.1, "step": 30})
    assert state_text(job) == "running: not learning (SI-SNR 0.6 dB) %p%"
    panel._refresh()
    assert panel.state_text(job) == "running: not learning (SI-SNR 0.6 dB) %p%"
    job._on_progress({"fraction": 0.3, "elapsed": 50.0, "sisnr": 4.0, "loss": 0.1, "step": 40})
    assert state_text(job) == "running %p%"  # learning after all
    job._on_done({"path": "x.hya", "info": {"sisnr": 4.0, "interrupted": False, "recipe": {
        "lr": 0.003, "time_scale": 16.0, "race_steps": 180, "race_seconds": 11.2, "restarts": 1}}})
    assert panel.state_text(job) == "done, restarted ×1: nothing learnt at first %p%"
    assert "recipe: lr 3e-3, time scale ×16 (raced 11.2 s, 180 steps)" in panel._items[job.id].toolTip(0)

    # A second chunk group starts from scratch: judged on its own reports.
    job = _fit_job(0.0)
    job._clock(True)
    job._set("running")
    job._on_progress({"fraction": 0.45, "sisnr": 15.0, "loss": 0.1, "step": 9, "group": 0, "groups": 2})
    job._on_progress({"fraction": 0.55, "sisnr": -3.0, "loss": 0.1, "step": 1, "group": 1, "groups": 2})
    assert job.not_learning() is None and job.budget == 0
    job._on_progress({"fraction": 0.65, "sisnr": -2.5, "loss": 0.1, "step": 20, "group": 1, "groups": 2})
    assert job.not_learning() == -2.5


def test_a_real_short_fit_shows_the_recipes_choice_per_network_and_that_noise_is_not_learnt(window, qtbot,
                                                                                          screenshot):
    from hyperaudio_ui.jobs.panel import state_text

    noise = (0.3 * np.random.default_rng(0).standard_normal(int(0.3 * SR))).astype(np.float32)[None]
    window.add_sound(noise, SR, name="noise")  # white noise: nothing a small network learns in seconds
    fit = window.new_job.fit
    fit.select("nerf")
    fit.form.set_value("target.params.hidden", [16, 16])
    fit.form.set_value("target.params.encoding_length", 4)
    fit.form.set_value("fit.eval_every", 2)
    fit.budget_box.setValue(3)
    assert "for nerf on the sound itself" in fit.recipe_label.text()
    seen: list[tuple[str, float | None]] = []
    window.jobs.added.connect(lambda job: job.progressed.connect(lambda j, _v: seen.append((state_text(j), j.eta))))
    fit.start_button.click()
    (job,) = window.jobs.jobs
    assert job.budget == 3.0
    # A fit started now would wait for this one (no report has been handled yet: its whole budget).
    assert window.jobs.time_ahead() == (3.0, 0)
    fit.update_eta()
    assert "after 0:03 of jobs ahead" in fit.eta_label.text()
    qtbot.waitUntil(lambda: job.state == "done", timeout=WAIT_MS)
    assert window.dialogs == []

    assert any("not learning (SI-SNR" in s for s, _ in seen)
    etas = [eta for _, eta in seen if eta is not None]
    assert etas and max(etas) <= 3.0  # the budget counted down, not startup and race extrapolated
    assert window.job_panel.state_text(job).startswith("done: nothing learnt (SI-SNR")
    recipe = job.result["info"]["recipe"]
    assert fit.choices["nerf"]["recipe"] == recipe
    label = fit.recipe_label.text()
    lr = f"{recipe['lr']:.0e}".replace("e-0", "e-")
    assert label.startswith(f"Last choice for nerf (job #{job.id}, noise, 0:03): lr {lr}, "
                            f"time scale ×{recipe['time_scale']:g}")
    assert math.isfinite(fit.choices["nerf"]["sisnr"])
    # Remembered per network for the session.
    fit.select("siren")
    assert "for siren on the sound itself" in fit.recipe_label.text()
    fit.select("nerf")
    assert fit.recipe_label.text() == label
    screenshot(window, "09-fit-budget-and-recipe")
