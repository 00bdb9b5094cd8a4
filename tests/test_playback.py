"""Real-time playback: ring buffer, engine (null sink), file sink, and a real PulseAudio server.

Most tests play a *tone INR*: a target network that is an analytic sum of sines, so the expected
signal, pitch and slope are known exactly. Its parameters are laid out per chunk like a fitted
INR's, so chunk crossfades and every engine path run as for a real network; real target networks
are covered by the PulseAudio, file-sink and CLI tests and by tests/test_onnx.py.
"""

from __future__ import annotations

import math
import os
import sys
import re
import threading
import time
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

from hyperaudio import config, hya, render
from hyperaudio.errors import HyperaudioError
from hyperaudio.fit import chunk_layout
from hyperaudio.hya import INR
from hyperaudio.playback import Engine, NullSink, PlaybackError, SoundDeviceSink, render_to_file
from hyperaudio.playback.backends import ParallelBackend, Pending, TorchBackend, make_backend, resolve_device
from hyperaudio.playback.ring import RingBuffer
from hyperaudio.playback.timeline import LinearSource


# -- a tone INR -----------------------------------------------------------------------------------
class Tone(nn.Module):
    """``y(t) = Σ amp_i sin(freq_i t + phase_i)``: a valid target network (``t [N, 1] -> [N, 1]``)."""

    def __init__(self, partials: int = 2):
        super().__init__()
        self.freq = nn.Parameter(torch.zeros(partials))
        self.phase = nn.Parameter(torch.zeros(partials))
        self.amp = nn.Parameter(torch.zeros(partials))

    def forward(self, t):
        return (self.amp * torch.sin(self.freq * t + self.phase)).sum(-1, keepdim=True)


def tone_inr(freqs=(440.0,), amps=(0.5,), native=22050.0, seconds=1.0, chunk=None, overlap=1024,
             channels=1, chunk_freqs=None) -> INR:
    """Partials ``freqs`` Hz (per channel: channel c is transposed by 1.5^c). ``chunk_freqs``
    overrides the frequencies per chunk (to make a seek audible)."""
    n = int(native * seconds)
    chunks = chunk_layout(n, chunk or n, overlap)
    rows = {"freq": [], "phase": [], "amp": []}
    for k, (start, length) in enumerate(chunks):
        for c in range(channels):
            fs = chunk_freqs[k] if chunk_freqs else freqs
            w = torch.tensor([2 * math.pi * f * 1.5**c / native for f in fs], dtype=torch.float64)
            rows["freq"].append((w * (length - 1) / 2).float())  # t spans (length - 1) / 2 samples per unit
            rows["phase"].append((w * (start + (length - 1) / 2)).float())
            rows["amp"].append(torch.tensor(amps, dtype=torch.float32))
    params = {k: torch.stack(v) for k, v in rows.items()}
    return INR({"target": {"name": "tone"}}, Tone(len(freqs)), params, native, n, channels, chunks)


def frequency(y: np.ndarray, sr: float) -> float:
    """Pitch of a pure tone from its zero crossings."""
    signs = np.signbit(y)
    crossings = np.count_nonzero(signs[1:] != signs[:-1])
    return crossings / 2 / (len(y) / sr)


def max_step(freq: float, amp: float, sr: float) -> float:
    """The largest sample-to-sample change of a sine: its slope times one sample."""
    return 2 * math.sin(math.pi * freq / sr) * amp


def play(engine: Engine, actions=(), settle: float = 0.25) -> np.ndarray:
    """Play, run ``actions`` = [(delay_s, callable)], stop with a fade; returns what the null sink got."""
    engine.play()
    try:
        time.sleep(settle)
        for delay, action in actions:
            action()
            time.sleep(delay)
    finally:
        engine.stop()
    return played(engine)


def played(engine: Engine) -> np.ndarray:
    """What the null sink got, from the first rendered frame on: index = the engine's frame index."""
    return engine.sink.played[engine.stats.lead_frames :]


# -- ring buffer ----------------------------------------------------------------------------------
def test_ring_buffer_wraps_and_reads_in_order():
    ring = RingBuffer(10, 2, max_read=4)
    data = np.arange(40, dtype=np.float32).reshape(20, 2)
    assert ring.write(data[:7]) == 7 and ring.writable() == 3
    out = np.zeros((4, 2), np.float32)
    assert ring.read_into(out) == 4 and np.array_equal(out, data[:4])
    assert ring.write(data[7:20]) == 7  # only 7 fit: 3 unread + 7 = capacity
    got = []
    while ring.readable():
        n = ring.read_into(out)
        got.append(out[:n].copy())
    assert np.array_equal(np.concatenate(got), data[4:14])
    assert ring.read_into(out) == 0


def test_ring_buffer_retract_keeps_the_frames_a_reader_may_touch():
    ring = RingBuffer(64, 1, max_read=8)
    ring.write(np.arange(40, dtype=np.float32)[:, None])
    out = np.zeros((8, 1), np.float32)
    ring.read_into(out)
    assert ring.retract(keep=4) == 16  # never below read + max_read
    assert ring.retract(keep=100) == 16  # nothing to take back
    assert np.array_equal(ring.peek(16, 4)[:, 0], [16, 17, 18, 19])  # retracted frames still peekable
    ring.write(np.full((3, 1), -1, np.float32))
    big = np.zeros((20, 1), np.float32)
    assert ring.read_into(big) == 11 and np.array_equal(big[8:11, 0], [-1, -1, -1])


def test_ring_buffer_retract_rechecks_a_consumer_that_moved_meanwhile():
    """The consumer advances between retract's two looks at its index (a whole callback ran in
    between): the cut must still clear the read that callback may have in flight."""

    class Racing(RingBuffer):
        looks, jump_on = 0, None

        @property
        def read(self):
            self.looks += 1
            if self.looks == self.jump_on:
                self._read += self.max_read
            return self._read

        @read.setter
        def read(self, value):
            self._read = value

    ring = Racing(64, 1, max_read=8)
    ring.write(np.zeros((60, 1), np.float32))
    ring.looks, ring.jump_on = 0, 2
    cut = ring.retract(keep=8)
    assert ring.looks >= 2 and ring._read == 8
    assert cut >= ring._read + ring.max_read and ring.written == cut


def test_ring_buffer_concurrent_retract_never_rewrites_what_was_read():
    """Smoke test of concurrent use: a producer retracting at random and a consumer reading as fast
    as they can. Every write gets fresh ids; every frame the consumer read must carry the id the
    producer wrote there *last* (a frame rewritten after it was read would differ)."""
    size = 1 << 22
    ring = RingBuffer(256, 1, max_read=16)
    last = np.full(size, -1.0, np.float32)  # producer: the last id written at each frame index
    seen = np.full(size, -2.0, np.float32)  # consumer: the id it read at each frame index
    stop = threading.Event()

    def produce():
        uid, rng = 0, np.random.default_rng(0)
        while not stop.is_set() and ring.written < size - 64:
            if rng.random() < 0.1:
                ring.retract(keep=int(rng.integers(0, 40)))
            w = ring.written
            n = min(int(rng.integers(1, 50)), ring.writable())
            ids = ((uid + np.arange(n)) % (1 << 23)).astype(np.float32)  # exact in float32
            uid += n
            last[w : w + n] = ids
            ring.write(ids[:, None])
            time.sleep(0)

    def consume():
        out = np.zeros((16, 1), np.float32)
        while not stop.is_set():
            r = ring.read
            n = ring.read_into(out)
            seen[r : r + n] = out[:n, 0]

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads between almost any two bytecodes: races show up
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    n = ring.read
    assert n > 1000
    bad = np.flatnonzero(seen[:n] != last[:n])
    assert bad.size == 0, f"{bad.size} frames rewritten after they were read, first at {bad[:5]}"


# -- backends -------------------------------------------------------------------------------------
# 1 channel: chunk parameters copied into the module; 2: vmap; 3 threads: each block split in three
@pytest.mark.parametrize("channels, threads", [(1, 1), (2, 1), (1, 3)])
def test_torch_backend_equals_render_evaluate_across_chunk_seams(channels, threads):
    inr = tone_inr(freqs=(300.0, 2500.0), amps=(0.4, 0.2), seconds=1.0, chunk=8000, overlap=700, channels=channels)
    assert len(inr.chunks) > 2
    if threads > 1:
        backend = ParallelBackend(lambda: TorchBackend(inr, "cpu"), threads, calibrate=False)
        assert backend.split
    else:
        backend = make_backend(inr, "torch", "cpu")
    for anchor, inc, k0, n in [(0.0, 0.37, 0, 9000), (7000.3, 1.0, 5, 3000), (21000.0, 0.5, 0, 3000)]:
        got = backend.submit(anchor, inc, k0, n).result()
        pos = anchor + (k0 + np.arange(n)) * inc
        want = render.evaluate(inr, torch.from_numpy(pos))[:, 0].numpy().T
        np.testing.assert_allclose(got, want, atol=1e-7)


def test_torch_backend_renders_kan_through_its_direct_path(monkeypatch):
    torch.manual_seed(0)
    module = config.build_target(config.resolve(None, "kan", []))
    chunks = chunk_layout(6000, 2500, 300)
    params = {n: p.unsqueeze(0).repeat(len(chunks), *[1] * p.dim()) + 0.01 * torch.randn(len(chunks), *p.shape)
              for n, p in module.named_parameters()}
    inr = INR({}, module, params, 22050.0, 6000, 1, chunks)
    lookups = []
    lookup = torch.nn.functional.embedding_bag
    monkeypatch.setattr(torch.nn.functional, "embedding_bag", lambda *a, **k: lookups.append(1) or lookup(*a, **k))
    got = TorchBackend(inr, "cpu").submit(-10.0, 0.37, 0, 16300).result()  # past both ends, every seam
    assert lookups  # the renderer's direct call took KAN's sparse lookup
    n_lookups = len(lookups)
    want = render.evaluate(inr, torch.from_numpy(-10.0 + np.arange(16300) * 0.37))[:, 0].numpy().T
    assert len(lookups) == n_lookups  # render.evaluate (call_batched) keeps the dense path
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_cuda_request_falls_back_to_cpu_without_a_gpu(caplog):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: nothing to fall back from")
    inr = tone_inr(seconds=0.1)
    with caplog.at_level("WARNING"):
        backend = make_backend(inr, "torch", "cuda")
    assert backend.device.type == "cpu" and "CUDA requested" in caplog.text
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(PlaybackError):
        resolve_device("tpu")
    with pytest.raises(PlaybackError):
        make_backend(inr, "tensorflow")


def test_prefetching_source_returns_the_same_frames_as_synchronous():
    """The CUDA path submits blocks ahead and collects them later; emulate that ordering on CPU."""
    inr = tone_inr(freqs=(700.0,), seconds=0.5)
    backend = TorchBackend(inr, "cpu")
    submitted = []

    class Deferred:  # computes only when result() is called, like an unfinished CUDA stream
        channels = backend.channels

        def submit(self, anchor, inc, k0, n):
            submitted.append(k0)
            holder = Pending()
            holder.result = lambda: backend.submit(anchor, inc, k0, n).result()
            return holder

    sync = LinearSource(backend, 100.25, 0.46, chunk=1000, prefetch=0)
    ahead = LinearSource(Deferred(), 100.25, 0.46, chunk=1000, prefetch=2)
    for n in (10, 999, 2500, 1, 3000):
        np.testing.assert_array_equal(ahead.take(n), sync.take(n))
    assert submitted[:3] == [0, 1000, 2000] and len(ahead.pending) == 2


# -- the engine through the null sink -------------------------------------------------------------
SR = 48000


@pytest.mark.parametrize("rate", [8000, 44100, 96000])
def test_rates_give_the_right_number_of_samples_per_second_of_source(rate):
    inr = tone_inr(freqs=(440.0,), seconds=0.5, native=22050.0)
    engine = Engine(inr, NullSink(pace=4.0), rate)
    engine.play()
    assert engine.wait(timeout=10)
    y = played(engine)[:, 0]
    assert engine.end_frame == round(inr.duration * rate)
    assert np.abs(y[engine.end_frame :]).max(initial=0) == 0
    assert abs(frequency(y[engine.fade : engine.end_frame], rate) - 440) < 6
    assert engine.stats.underruns == 0


def test_a_device_filling_its_buffer_at_start_leaves_no_gap(monkeypatch):
    # A device pulls its whole buffer (here 100 ms) in a burst when it starts. The first sound waits
    # until the ring holds that much, so the burst cannot run it dry right after the first frames.
    # A renderer at ~5x real time (8 ms a block), as a large network has: the burst outruns it.
    from hyperaudio.playback.timeline import Timeline

    fast = Timeline.render
    monkeypatch.setattr(Timeline, "render", lambda self, n: (time.sleep(0.008), fast(self, n))[1])
    inr = network_inr("siren", ["target.params.hidden=[64, 64]"])

    def start(announce: bool) -> Engine:
        engine = Engine(inr, NullSink(burst=0.1), SR)
        if not announce:
            engine.prefill = lambda seconds: None
        engine.play()
        assert engine.wait(timeout=10)
        return engine

    engine = start(announce=True)
    want = render.render(inr, SR)[0]
    y = played(engine)[: len(want), 0]
    assert engine.stats.underruns == 0
    np.testing.assert_allclose(y[engine.fade :], want[engine.fade :], atol=1e-5)
    # Unannounced, the same burst empties the ring: a gap of zeros, counted as underruns.
    assert start(announce=False).stats.underruns > 0


def test_speed_change_takes_effect_within_one_block_without_click():
    inr = tone_inr(freqs=(440.0,), amps=(0.5,), seconds=3.0)
    engine = Engine(inr, NullSink(), SR)
    y = play(engine, [(0.3, lambda: engine.set_speed(2.0)), (0.3, lambda: engine.set_speed(0.5))])[:, 0]
    (up, down) = [c for c in engine.stats.changes if c.kind == "speed"]
    for change in (up, down):
        assert 0 <= change.applied_frame - change.requested_frame <= engine.block
    a, b = up.applied_frame, down.applied_frame
    assert abs(frequency(y[a - 6000 : a], SR) - 440) < 10
    assert abs(frequency(y[a + engine.fade : b], SR) - 880) < 10
    assert abs(frequency(y[b + engine.fade : b + 9000], SR) - 220) < 10
    jumps = np.abs(np.diff(y[a - 2000 : b + 2000]))
    assert jumps.max() < 1.1 * max_step(880, 0.5, SR) + 2 * 0.5 / engine.fade
    assert engine.stats.underruns == 0


def test_seek_jumps_within_one_block_and_crossfades():
    # First half 330 Hz, second half 990 Hz (two chunks): a seek is audible as a pitch change.
    inr = tone_inr(seconds=2.0, chunk=22050 + 512, overlap=1024, chunk_freqs=[(330.0,), (990.0,)])
    engine = Engine(inr, NullSink(), SR)
    y = play(engine, [(0.3, lambda: engine.seek(1.5))])[:, 0]
    (seek,) = [c for c in engine.stats.changes if c.kind == "seek"]
    p = seek.applied_frame
    assert 0 <= p - seek.requested_frame <= engine.block
    assert abs(frequency(y[p - 6000 : p], SR) - 330) < 10
    assert abs(frequency(y[p + engine.fade : p + 6000 + engine.fade], SR) - 990) < 10
    jumps = np.abs(np.diff(y[p - 1000 : p + 1000]))
    assert jumps.max() < 1.1 * (max_step(990, 0.5, SR) + 2 * 0.5 / engine.fade)
    assert abs(engine.position - 1.5) < 0.5


def test_loop_region_repeats_seamlessly():
    inr = tone_inr(freqs=(500.0,), amps=(0.5,), seconds=1.0)
    engine = Engine(inr, NullSink(), SR, loop=(0.2, 0.3))
    y = play(engine, [(0.55, lambda: None)], settle=0.0)[:, 0]
    period = round(0.1 * SR)
    body = y[2 * period : 4 * period]
    # A 0.1 s loop of a 500 Hz tone: every cycle repeats; the wrap is crossfaded, so no click.
    np.testing.assert_allclose(body[period:], body[:period], atol=1e-3)
    assert np.abs(np.diff(y[engine.fade : 5 * period])).max() < 1.1 * max_step(500, 0.5, SR) + 2 * 0.5 / engine.fade
    assert engine.stats.underruns == 0


def test_loop_set_while_playing_and_cleared():
    inr = tone_inr(freqs=(250.0,), seconds=2.0)
    engine = Engine(inr, NullSink(), SR)
    play(engine, [(0.4, lambda: engine.set_loop((0.1, 0.2))), (0.05, lambda: None)])
    (loop,) = [c for c in engine.stats.changes if c.kind == "loop"]
    assert 0 <= loop.applied_frame - loop.requested_frame <= engine.block
    assert 0.1 <= engine.timeline.position_at(engine.ring.read) / inr.sample_rate <= 0.2 + 1e-3
    with pytest.raises(PlaybackError):
        engine.set_loop((0.5, 0.3))


def test_gain_change_within_one_callback_without_click():
    inr = tone_inr(freqs=(440.0,), amps=(0.5,), seconds=2.0)
    engine = Engine(inr, NullSink(), SR)
    y = play(engine, [(0.25, lambda: engine.set_gain(-12.0))])[:, 0]
    (gain,) = [c for c in engine.stats.changes if c.kind == "gain"]
    p = gain.requested_frame
    before, after = y[p - 4800 : p], y[p + engine.max_read + engine.fade : p + 9600]
    assert abs(np.abs(before).max() - 0.5) < 0.01
    assert abs(np.abs(after).max() - 0.5 * 10 ** (-12 / 20)) < 0.01
    assert np.abs(np.diff(y[p - 2000 : p + 4000])).max() <= max_step(440, 0.5, SR) * 1.05


def test_start_and_stop_fade_instead_of_clicking():
    inr = tone_inr(freqs=(440.0,), amps=(0.5,), seconds=2.0, native=SR)
    engine = Engine(inr, NullSink(), SR, start=0.5)  # starts mid-sound: a hard start would click
    y = play(engine, [(0.1, lambda: None)])[:, 0]
    limit = max_step(440, 0.5, SR) + 0.5 / engine.fade
    assert np.abs(np.diff(y)).max() <= limit * 1.05
    last = np.flatnonzero(np.abs(y) > 1e-6)[-1]
    assert np.abs(y[last - engine.fade // 4 : last + 1]).max() < 0.2  # faded out, not cut
    assert engine.stats.first_sound_latency < 0.1


def test_band_limited_below_native_rate():
    """Below the native rate a partial above the new Nyquist vanishes instead of aliasing."""
    inr = tone_inr(freqs=(1000.0, 6000.0), amps=(0.4, 0.4), seconds=1.0, native=22050.0)
    engine = Engine(inr, NullSink(pace=4.0), 8000)
    engine.play()
    assert engine.wait(timeout=10)
    y = played(engine)[2000:6000, 0]
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 8000)
    kept = spectrum[np.abs(freqs - 1000) < 20].max()
    alias = spectrum[np.abs(freqs - 2000) < 20].max()  # 6 kHz folds to 8 - 6 = 2 kHz
    assert 20 * np.log10(alias / kept) < -80
    # Evaluating the INR directly at 8 kHz would alias: the check above is not vacuous.
    direct = render.render(inr, 8000, bandlimit=False)[0, 2000:6000]
    spectrum = np.abs(np.fft.rfft(direct * np.hanning(len(direct))))
    assert 20 * np.log10(spectrum[np.abs(freqs - 2000) < 20].max() / kept) > -10


def test_speed_up_band_limits_too(tmp_path):
    """Speed 2 at the native rate: 6 kHz would play at 12 kHz, above Nyquist (11.025 kHz)."""
    inr = tone_inr(freqs=(1000.0, 6000.0), amps=(0.4, 0.4), seconds=1.0, native=22050.0)
    y = render_to_file(inr, tmp_path / "fast.wav", 22050, speed=2.0)[0]
    spectrum = np.abs(np.fft.rfft(y[1000:9000] * np.hanning(8000)))
    freqs = np.fft.rfftfreq(8000, 1 / 22050)
    kept = spectrum[np.abs(freqs - 2000) < 20].max()
    alias = spectrum[np.abs(freqs - (22050 - 12000)) < 20].max()
    assert 20 * np.log10(alias / kept) < -80


def test_sample_rate_change_while_playing_keeps_the_position():
    inr = tone_inr(freqs=(440.0,), seconds=3.0)
    engine = Engine(inr, NullSink(), SR)
    engine.play()
    try:
        time.sleep(0.3)
        before = engine.position
        engine.set_sample_rate(16000)
        assert engine.sr == 16000 and engine.playing
        time.sleep(0.2)
        assert before < engine.position < before + 0.5
    finally:
        engine.stop()
    y = engine.sink.played[-3000:, 0]
    assert y.shape[0] == 3000


def test_callback_allocates_no_buffers():
    inr = tone_inr(seconds=2.0)
    engine = Engine(inr, NullSink(blocksize=4096), SR, block=8192)
    engine.timeline.start(0.0, 1.0)
    engine.ring.write(engine.timeline.render(engine.ring.writable()))
    engine.set_gain(-6)  # a gain ramp and the start fade: the envelope path runs
    out = np.zeros((4096, 1), np.float32)
    engine.consume(out)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(3):
            engine.consume(out)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 4096 * 4 / 2, peak  # far less than one block of audio (16 kB)


def test_underruns_are_counted():
    inr = tone_inr(seconds=2.0)

    class Slow(TorchBackend):
        def submit(self, *args):
            time.sleep(0.05)  # 2048 frames take 50 ms: slower than real time at 48 kHz (43 ms)
            return super().submit(*args)

    engine = Engine(inr, NullSink(), SR, ahead=0.05)
    engine.backend = engine.timeline.backend = Slow(inr, "cpu")
    play(engine, [(0.5, lambda: None)], settle=0.0)
    assert engine.stats.underruns > 0


def test_renderer_errors_surface_in_wait():
    inr = tone_inr(seconds=2.0)
    engine = Engine(inr, NullSink(), SR)

    def broken(*args):
        raise RuntimeError("backend exploded")

    engine.play()
    engine.timeline.backend.submit = broken
    engine.seek(1.0)
    with pytest.raises(RuntimeError, match="exploded"):
        engine.wait(timeout=5)
    engine.stop()


def test_bad_parameters_are_playback_errors():
    inr = tone_inr(seconds=1.0)
    for kwargs in ({"speed": 0}, {"start": 5.0}, {"loop": (0.5, 0.2)}, {"gain_db": math.nan}):
        with pytest.raises(HyperaudioError):
            Engine(inr, NullSink(), SR, **kwargs)
    with pytest.raises(PlaybackError, match="rate"):
        Engine(inr, NullSink(), 10)


# -- file sink ------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate,speed", [(8000, 1.0), (22050, 0.5), (44100, 1.0), (16000, 1.7), (96000, 2.0)])
def test_file_sink_equals_offline_render(tmp_path, rate, speed):
    inr = tone_inr(freqs=(300.0, 5000.0), amps=(0.4, 0.3), seconds=0.6, chunk=6000, overlap=500, channels=2)
    path = tmp_path / "out.wav"
    y = render_to_file(inr, path, rate, speed=speed)
    want = render.render(inr, rate, speed=speed)
    assert y.shape == want.shape
    np.testing.assert_allclose(y, want, atol=1e-6)
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    assert sr == rate and np.array_equal(data.T, y)
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temporary left


def network_inr(name: str = "siren", overrides=(), native: float = 8000.0, seconds: float = 0.5, seed: int = 0) -> INR:
    """A real built-in target network with its own random initialisation, laid out like a fitted
    two-chunk INR. A SIREN's initial output is broadband and noise-like: a good test signal."""
    cfg = config.resolve(None, name, list(overrides))
    torch.manual_seed(seed)
    module = config.build_target(cfg)
    n = int(native * seconds)
    chunks = chunk_layout(n, n // 2 + 256, 512)
    params = {k: torch.stack([p.detach() * (1 + 0.1 * j) for j in range(len(chunks))])
              for k, p in module.named_parameters()}
    return INR(cfg, module, params, native, n, 1, chunks)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A SIREN INR saved as .hya and loaded back (what `hyperaudio play` gets)."""
    inr = network_inr("siren", ["target.params.hidden=[64, 64]"])
    path = hya.save(inr, tmp_path_factory.mktemp("playback") / "siren.hya")
    return hya.load(path), path


def test_file_sink_with_a_real_target_network(fitted, tmp_path):
    inr, _ = fitted
    for rate, speed in [(4000, 1.0), (48000, 0.75)]:
        y = render_to_file(inr, tmp_path / f"{rate}.wav", rate, speed=speed)
        np.testing.assert_allclose(y, render.render(inr, rate, speed=speed), atol=1e-6)


def test_file_sink_applies_postprocess_of_multi_head_networks(tmp_path):
    pytest.importorskip("noisereduce")
    cfg = config.resolve(None, "siamese-siren", ["target.params.hidden=[32]", "target.params.siamese_hidden=[16]"])
    module = config.build_target(cfg)
    params = {n: p.detach()[None].clone() for n, p in module.named_parameters()}
    inr = INR(cfg, module, params, 8000.0, 4000, 1, [(0, 4000)])
    y = render_to_file(inr, tmp_path / "s.wav", 8000)
    want = render.render(inr, 8000)  # noisereduce on the whole signal
    np.testing.assert_allclose(y, want, atol=1e-5)
    assert not np.allclose(want, render.render(inr, 8000, apply_postprocess=False), atol=1e-4)


# -- a real audio server (fixture audio_server: tests/conftest.py) -----------------------------------


def test_plays_through_pulseaudio_and_the_monitor_hears_it(audio_server, fitted):
    from audio_server import RATE, Recorder, align

    inr, _ = fitted
    recorder = Recorder()
    time.sleep(0.2)
    engine = Engine(inr, SoundDeviceSink("pulse"), RATE)
    engine.play()
    assert engine.wait(timeout=10)
    time.sleep(0.3)
    recording = recorder.stop()
    reference = render.render(inr, RATE)[0]
    lag, heard = align(recording, reference)
    assert len(heard) == len(reference), (len(recording), lag)
    body = slice(engine.fade, len(reference))  # the 5 ms fade-in at the start is intended
    corr = np.corrcoef(heard[body], reference[body])[0, 1]
    assert corr >= 0.99, corr
    assert np.abs(heard[body] - reference[body]).max() < 1e-3  # 16-bit sink: quantisation only
    assert engine.stats.underruns == 0 and engine.stats.device_xruns == 0
    assert engine.stats.first_sound_latency < 0.1


def test_live_changes_are_heard_through_pulseaudio(audio_server):
    from audio_server import RATE, Recorder

    inr = tone_inr(freqs=(440.0,), amps=(0.5,), seconds=3.0)
    recorder = Recorder()
    time.sleep(0.2)
    engine = Engine(inr, SoundDeviceSink("pulse"), RATE)
    engine.play()
    time.sleep(0.4)
    engine.set_speed(2.0)
    time.sleep(0.4)
    engine.stop()
    time.sleep(0.2)
    y = recorder.stop()
    active = np.flatnonzero(np.abs(y) > 0.05)
    y = y[active[0] : active[-1]]
    assert abs(frequency(y[2400:12000], RATE) - 440) < 10
    assert abs(frequency(y[-12000:-2400], RATE) - 880) < 10
    assert np.abs(np.diff(y)).max() < 1.1 * max_step(880, 0.5, RATE) + 0.01
    assert engine.stats.underruns == 0


# -- the command line -----------------------------------------------------------------------------
def run_cli(argv: list[str]) -> int:
    """``hyperaudio.cli.main`` as the lead wires it: our handlers, one-line errors with status 2."""
    import argparse

    from hyperaudio.playback.cli import add_commands

    parser = argparse.ArgumentParser(prog="hyperaudio")
    handlers = add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return handlers[args.command](args)
    except HyperaudioError as exc:
        print(f"hyperaudio: error: {exc}")
        return 2


@pytest.mark.parametrize("threads", ["1", "2"])
def test_play_command_through_a_null_sink(fitted, capsys, threads):
    _, path = fitted
    assert run_cli(["play", str(path), "--sr", "16000", "--speed", "2", "--null", "--threads", threads]) == 0
    err = capsys.readouterr().err
    assert "16000 Hz" in err and "0 underruns" in err


@pytest.mark.parametrize("argv,message", [
    (["--loop", "0.1"], "--loop takes"),
    (["--start", "9"], "past the end"),
    (["--sr", "100"], "unsupported output rate"),
    (["--device", "tpu"], "unknown device"),
    (["--latency", "soon"], "--latency"),
])
def test_play_command_rejects_bad_input(fitted, capsys, argv, message):
    _, path = fitted
    assert run_cli(["play", str(path), "--null", *argv]) == 2
    assert message in capsys.readouterr().out


def test_play_command_missing_file(tmp_path, capsys):
    assert run_cli(["play", str(tmp_path / "nope.hya"), "--null"]) == 2
    assert "no such file" in capsys.readouterr().out


def test_live_commands():
    from hyperaudio.playback.cli import apply_command

    inr = tone_inr(seconds=2.0)
    engine = Engine(inr, NullSink(), SR)
    for words in (["speed", "0.5"], ["seek", "1"], ["gain", "-3"], ["loop", "0.2", "0.4"], ["loop", "off"]):
        assert apply_command(engine, words)
    assert not apply_command(engine, ["q"])
    with pytest.raises(PlaybackError):
        apply_command(engine, ["warp", "9"])
    assert engine.speed == 0.5 and engine.timeline.loop is None


def test_devices_and_play_commands_with_a_real_server(audio_server, fitted, capsys):
    from audio_server import Recorder

    assert run_cli(["devices"]) == 0
    assert "pulse" in capsys.readouterr().out
    _, path = fitted
    recorder = Recorder()
    time.sleep(0.2)
    assert run_cli(["play", str(path), "--sr", "48000", "--output-device", "pulse"]) == 0
    time.sleep(0.2)
    heard = recorder.stop()
    assert np.abs(heard).max() > 0.05  # the SIREN's output peaks at ~0.2
    # The summary line; zero underruns is asserted by the recording tests above, not by this CLI
    # smoke test, which shares the CPU with whatever else the machine runs.
    assert re.search(r"done: first sound after \d+ ms, \d+ underruns", capsys.readouterr().err)
    assert run_cli(["play", str(path), "--output-device", "no-such-device"]) == 2
    assert "no output device" in capsys.readouterr().out
