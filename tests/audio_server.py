"""A real PulseAudio server with a null sink, for playback tests without a sound card.

``AudioServer.start()`` uses a running PulseAudio server or starts one (``pulseaudio -n
--daemonize``) with the null sink ``virt`` (48 kHz mono) as default sink and its monitor as default
source, then keeps a silent low-latency stream playing into it: an idle null sink runs at ~2 s
latency, so its monitor would deliver late, in bursts, and lose the first ~100 ms
(docs: /work/shared/environment.md). After ~2.2 s the monitor is live. ``stop()`` ends only what
``start()`` started (by process id; a module it loaded into someone else's server is unloaded).

PortAudio scans devices once, at initialisation: ``sounddevice`` is re-initialised after the
server is up, and then lists the ``pulse`` device.

``Recorder`` records the monitor with ``parec`` (float32, 48 kHz mono) in a background thread.
Debian packages: libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins
(``scripts/system-deps.sh`` installs them in CI).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

SINK = "virt"
RATE = 48000
SETTLE_SECONDS = 2.2
TOOLS = ("pulseaudio", "pactl", "pacat", "parec")


class AudioServerUnavailable(RuntimeError):
    """No PulseAudio server could be used or started here (the reason is the message)."""


def _run(*cmd: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _server_pid() -> int | None:
    """The running server's pid, from its runtime directory (as ``pactl info`` reports it)."""
    info = _run("pactl", "info")
    for line in info.stdout.splitlines():
        if line.startswith("Server String:"):
            pid_file = Path(line.split(":", 1)[1].strip()).parent / "pid"
            try:
                return int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return None
    return None


class AudioServer:
    def __init__(self):
        self.started_pid: int | None = None  # the server we started
        self.module_index: str | None = None  # the null sink we loaded into a server we did not start
        self.keepalive: subprocess.Popen | None = None

    def start(self) -> "AudioServer":
        missing = [t for t in TOOLS if shutil.which(t) is None]
        if missing:
            raise AudioServerUnavailable(f"missing {', '.join(missing)} (apt-get install pulseaudio pulseaudio-utils)")
        try:
            import sounddevice as sd
        except OSError as exc:
            raise AudioServerUnavailable(f"PortAudio not available: {exc} (apt-get install libportaudio2)") from None
        if _run("pactl", "info").returncode != 0:
            result = _run("pulseaudio", "-n", "--daemonize=yes", "--exit-idle-time=-1", "--disallow-exit",
                          "--load=module-native-protocol-unix",
                          f"--load=module-null-sink sink_name={SINK} rate={RATE} channels=1")
            if result.returncode != 0:
                raise AudioServerUnavailable(f"pulseaudio did not start: {result.stderr.strip()[-300:]}")
            deadline = time.monotonic() + 5
            while _run("pactl", "info").returncode != 0:
                if time.monotonic() > deadline:
                    raise AudioServerUnavailable("pulseaudio started but does not answer")
                time.sleep(0.05)
            self.started_pid = _server_pid()
        sinks = _run("pactl", "list", "short", "sinks").stdout
        if not any(line.split("\t")[1:2] == [SINK] for line in sinks.splitlines()):
            loaded = _run("pactl", "load-module", "module-null-sink", f"sink_name={SINK}", f"rate={RATE}", "channels=1")
            if loaded.returncode != 0:
                self.stop()
                raise AudioServerUnavailable(f"cannot create the null sink: {loaded.stderr.strip()}")
            self.module_index = loaded.stdout.strip()
        _run("pactl", "set-default-sink", SINK)
        _run("pactl", "set-default-source", f"{SINK}.monitor")
        self.keepalive = subprocess.Popen(
            ["pacat", "--playback", "--latency-msec=10", "--raw", "--format=s16le", f"--rate={RATE}",
             "--channels=1", "-d", SINK, "/dev/zero"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(SETTLE_SECONDS)
        if self.keepalive.poll() is not None:
            self.stop()
            raise AudioServerUnavailable("pacat could not play into the null sink")
        sd._terminate()  # PortAudio lists devices once, at initialisation
        sd._initialize()
        names = [d["name"] for d in sd.query_devices()]
        if "pulse" not in names:
            self.stop()
            raise AudioServerUnavailable(f"PortAudio does not list the 'pulse' device (has {names}); "
                                         "apt-get install libasound2-plugins")
        return self

    def stop(self) -> None:
        if self.keepalive is not None:
            self.keepalive.terminate()
            try:
                self.keepalive.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.keepalive.kill()
            self.keepalive = None
        if self.module_index:
            _run("pactl", "unload-module", self.module_index)
            self.module_index = None
        if self.started_pid is not None:
            try:
                os.kill(self.started_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.started_pid = None


class Recorder:
    """Records the null sink's monitor (float32 mono at 48 kHz) until ``stop()``."""

    def __init__(self, source: str = f"{SINK}.monitor"):
        self.proc = subprocess.Popen(
            ["parec", "-d", source, "--raw", "--format=float32le", f"--rate={RATE}", "--channels=1",
             "--latency-msec=10"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            data = self.proc.stdout.read1(65536) if hasattr(self.proc.stdout, "read1") else self.proc.stdout.read(4096)
            if not data:
                return
            self._chunks.append(data)

    def stop(self) -> np.ndarray:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._thread.join(timeout=5)
        data = b"".join(self._chunks)
        return np.frombuffer(data[: len(data) // 4 * 4], dtype=np.float32).copy()


def align(recording: np.ndarray, reference: np.ndarray) -> tuple[int, np.ndarray]:
    """The lag where ``reference`` best matches ``recording`` (FFT cross-correlation) and that segment."""
    n = len(recording) + len(reference)
    spectrum = np.fft.rfft(recording, n) * np.conj(np.fft.rfft(reference, n))
    lag = int(np.argmax(np.fft.irfft(spectrum, n)[: max(1, len(recording) - len(reference) + 1)]))
    return lag, recording[lag : lag + len(reference)]
