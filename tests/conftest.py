"""Shared fixtures. Tests generate their own signals; installed third-party plugins are kept out
unless a test opts in (HYPERAUDIO_LOAD_PLUGINS is the allowlist; empty = none)."""

import os
import tempfile

os.environ.setdefault("HYPERAUDIO_LOAD_PLUGINS", "")
# Keep the developer's own presets (~/.config/hyperaudio/presets) out of the tests, too.
os.environ.setdefault("HYPERAUDIO_CONFIG_DIR", tempfile.mkdtemp(prefix="hyperaudio-test-config-"))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def speechlike(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced, formant-shaped, amplitude-modulated harmonic signal: a stand-in for speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = np.zeros_like(t)
    for h in range(1, 25):
        freq = h * f0
        gain = sum(np.exp(-((freq - f) / bw) ** 2) for f, bw in ((500, 150), (1500, 250), (2500, 300)))
        x += (gain + 0.02) / h * np.sin(h * phase)
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t - np.pi / 2)) ** 1.5
    x = x * envelope + 0.003 * rng.standard_normal(len(t))
    return (0.8 * x / np.abs(x).max()).astype(np.float32)


def chirp(sr: int, seconds: float, f0: float = 100.0, f1: float = 2000.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    k = (f1 - f0) / seconds
    return (0.5 * np.sin(2 * np.pi * (f0 * t + 0.5 * k * t**2))).astype(np.float32)


@pytest.fixture
def write_audio(tmp_path):
    import soundfile as sf

    def write(name, x, sr, **kwargs):
        path = tmp_path / name
        sf.write(str(path), np.asarray(x).T, sr, **kwargs)
        return path

    return write


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Each test sees a registry loaded under its own environment."""
    from hyperaudio.plugins import reset_registry

    reset_registry()
    yield
    reset_registry()


@pytest.fixture(scope="module")
def one_thread():
    """For modules of small tensors (``pytestmark = pytest.mark.usefixtures("one_thread")``): a
    second intra-op thread only adds OpenMP barrier waits, badly so on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def audio_server():
    """A PulseAudio server with a null sink (tests/audio_server.py); skips where none can start,
    fails instead when CI=true."""
    from audio_server import AudioServer, AudioServerUnavailable

    server = AudioServer()
    try:
        server.start()
    except AudioServerUnavailable as exc:
        reason = f"no audio server: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true: audio tests must run)")
        pytest.skip(reason)
    yield server
    server.stop()
