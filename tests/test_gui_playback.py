"""The transport: play/stop/loop, space bar, A/B, rate and speed, the playhead and the scrolling
spectrogram, through the null sink and through a real PulseAudio server."""

from __future__ import annotations

import time

import numpy as np
from gui_support import (SR, dialogs, screenshot, screenshot_dir, settings_path, small_inr,  # noqa: F401
                         tone_and_noise, window)

from PySide6.QtCore import Qt  # noqa: E402


def with_inr(window, qtbot, seconds=1.0):
    from hyperaudio_ui.library import InrItem

    sound = window.add_sound(tone_and_noise(seconds), SR, name="tone")
    entry = InrItem("nerf", small_inr(seconds), sound, "fit")
    window.add_inr(entry)
    qtbot.waitUntil(lambda: entry.reconstruction is not None, timeout=30_000)
    return sound, entry


def test_transport_through_the_null_sink(window, qtbot, screenshot):
    from hyperaudio.playback import SampledSound
    from hyperaudio_ui.transport import NULL_DEVICE

    sound, entry = with_inr(window, qtbot)
    transport, player = window.transport, window.player
    transport.set_device(NULL_DEVICE)
    transport.loop_box.setChecked(True)
    transport.play_button.click()
    assert player.playing and player.engine.inr is entry.inr and transport.play_button.text() == "■ Stop"
    qtbot.waitUntil(lambda: window.waveform.playhead.isVisible() and window.monitor.columns_written > 5,
                    timeout=10_000)
    assert window.monitor.data[-1].max() > -40  # the newest column holds the sound

    transport.a_button.click()  # A/B while playing: the original takes over where the INR was
    assert isinstance(player.engine.inr, SampledSound) and player.playing
    transport.set_rate_text("8000")
    transport.speed_box.setValue(0.5)
    assert player.engine.sr == 8000 and player.speed == 0.5
    qtbot.waitUntil(lambda: player.engine.speed == 0.5, timeout=10_000)  # the renderer applies it
    qtbot.waitUntil(lambda: window.monitor.sample_rate == 8000, timeout=10_000)
    transport.rate_box.setCurrentText("96k")
    assert player.engine.sr == 96000
    position = player.engine.position
    qtbot.waitUntil(lambda: player.engine.position != position, timeout=10_000)
    screenshot(window, "04-playing")

    qtbot.keyClick(window, Qt.Key.Key_Space)
    assert not player.playing and not window.waveform.playhead.isVisible()
    assert transport.play_button.text() == "▶ Play"
    qtbot.keyClick(window, Qt.Key.Key_Space)
    assert player.playing
    qtbot.keyClick(window, Qt.Key.Key_Space)

    # Without the loop, playback ends by itself at the end of the sound.
    transport.loop_box.setChecked(False)
    transport.b_button.click()
    transport.speed_box.setValue(4.0)
    transport.play_button.click()
    assert player.playing
    qtbot.waitUntil(lambda: not player.playing and player.engine is None, timeout=20_000)
    assert transport.play_button.text() == "▶ Play"
    assert window.dialogs == []


def test_playback_problems_are_dialogs(window, qtbot):
    bad = tone_and_noise()
    bad[0, 7] = np.inf
    window.add_sound(bad, SR, name="inf")
    window.transport.a_button.click()
    window.transport.play_button.click()
    assert not window.player.playing and "NaN or infinite" in window.dialogs[-1][1]
    window.add_sound(tone_and_noise(), SR, name="fine")
    window.player.set_device("no such output device")
    window.transport.play_button.click()
    assert not window.player.playing
    message = window.dialogs[-1][1]
    assert "no output device" in message or "PortAudio" in message or "sounddevice" in message


def test_plays_through_a_real_pulseaudio_server(audio_server, window, qtbot):
    from audio_server import RATE, Recorder, align

    from hyperaudio.audio import resample

    sound = window.add_sound(tone_and_noise(0.8), SR, name="tone")
    window.transport.refresh_devices()
    labels = [window.transport.device_box.itemText(i) for i in range(window.transport.device_box.count())]
    pulse = next(i for i, label in enumerate(labels) if label.startswith("pulse"))
    window.transport.device_box.setCurrentIndex(pulse)
    window.transport.set_rate_text(str(RATE))
    window.transport.a_button.click()
    recorder = Recorder()
    time.sleep(0.2)
    window.transport.play_button.click()
    assert window.player.playing, window.dialogs
    qtbot.waitUntil(lambda: not window.player.playing, timeout=20_000)
    qtbot.wait(300)
    heard = recorder.stop()
    reference = resample(sound.audio, SR, RATE)[0]
    lag, segment = align(heard, reference)
    assert len(segment) == len(reference)
    body = slice(1000, len(reference) - 1000)
    assert np.corrcoef(segment[body], reference[body])[0, 1] > 0.99
    assert window.dialogs == []
