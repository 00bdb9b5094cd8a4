"""Hypernetwork jobs from the app: train a (tiny) hypernetwork on a folder, then encode a sound with
the model it wrote, with a few refinement steps; both run in worker processes."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from gui_support import WAIT_MS, dialogs, screenshot, screenshot_dir, settings_path, tone_and_noise, window  # noqa: F401

from PySide6.QtWidgets import QFileDialog  # noqa: E402

pytest.importorskip("hyperaudio.hypernet.train")


def test_train_a_hypernetwork_then_encode_with_it(window, qtbot, tmp_path, monkeypatch, write_audio, screenshot):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        sf.write(str(data / f"clip{i}.wav"), tone_and_noise(0.5, 8000, seed=i)[0], 8000)
    train = window.new_job.train
    # Without CUDA (CI) the app starts from the preset that learns on a CPU.
    cuda = torch.cuda.is_available()
    assert train.preset_box.currentText() == ("hypersound-nerf" if cuda else "hypersound-small")
    assert train.form.fields["hypernet.sample_rate"].widget.value() == (22050 if cuda else 8000)
    train.preset_box.setCurrentText("debug-standard")
    assert train.form.fields["hypernet.encoder"].widget.currentText() == "soundstream"
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(data)))
    train.data_button.click()
    assert train.data_edit.text() == str(data)
    train.out_edit.setText(str(tmp_path / "run"))
    for key, value in {"train.steps": 4, "train.log_every": 1, "train.val_every": 100,
                       "train.checkpoint_every": 100}.items():
        train.form.set_value(key, value)
    window.new_job.setCurrentWidget(train)
    train.start_button.click()
    (job,) = window.jobs.jobs
    screenshot(window, "06-training")
    qtbot.waitUntil(lambda: job.state in ("done", "failed"), timeout=WAIT_MS * 2)
    assert job.state == "done", window.dialogs
    assert job.result["steps"] == 4 and len(job.history["loss"]) >= 2  # reports are throttled to 10 per second
    assert (tmp_path / "run" / "model.safetensors").exists()

    encode = window.new_job.encode
    assert encode.model_edit.text() == str(tmp_path / "run" / "model.safetensors")
    assert "soundstream → standard → nerf" in encode.model_info.text()
    sound = window.add_sound(tone_and_noise(0.6, 16000, seed=9), 16000, name="new.wav")  # not the model's rate
    encode.refine_box.setValue(3)
    encode.start_button.click()
    job = window.jobs.jobs[-1]
    qtbot.waitUntil(lambda: job.state in ("done", "failed"), timeout=WAIT_MS)
    assert job.state == "done", window.dialogs
    qtbot.waitUntil(lambda: len(sound.inrs) == 1 and bool(sound.inrs[0].metrics), timeout=WAIT_MS)
    entry = sound.inrs[0]
    assert entry.origin == "encode" and entry.inr.info["refine_steps"] == 3
    assert entry.reconstruction.shape == sound.audio.shape and np.isfinite(entry.reconstruction).all()
    assert window.dialogs == []
    window.new_job.setCurrentWidget(encode)
    screenshot(window, "07-encoded")


def test_hypernetwork_job_problems_are_dialogs(window, tmp_path):
    window.new_job.train.start_button.click()
    assert "training audio" in window.dialogs[-1][1]
    window.add_sound(tone_and_noise(), 16000, name="x")
    window.new_job.encode.start_button.click()
    assert "choose a trained hypernetwork" in window.dialogs[-1][1]
    window.new_job.encode.set_model(str(tmp_path / "nothing-here"))
    assert "not a usable model" in window.new_job.encode.model_info.text()
    assert window.jobs.jobs == []
