"""Playback benchmark: real-time factors, time to first sound, underruns under load.

1. **Real-time factor** at 48 kHz of every target network (preset size, a 1.5 s chunk at
   22.05 kHz as in the papers, weights perturbed from the initialisation: cost does not depend on
   the values), rendered by the engine's own renderer path (``Timeline.render`` in 2048-frame
   blocks, one thread) with the torch backend, the onnxruntime backend, and CUDA when present.
   RTF = seconds of audio / seconds of rendering; >= 1 plays in real time.
2. **Time to first sound**: ``Engine.play()`` until the audio callback hands the first rendered
   frames to the device, plus the device's reported output latency. Through PulseAudio when a
   server is running or can be started (``tests/audio_server.py``), else a null sink.
3. **Underruns under load**: ``--seconds`` (60) of looped playback while a real fit of a clip runs in
   another process (``hyperaudio fit``), counting ring-buffer underruns and device underflows.

    python bench/playback.py                         # everything
    python bench/playback.py --inrs nerf,siren --skip-load --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # audio_server.py

from hyperaudio import config  # noqa: E402
from hyperaudio.functional import count_parameters, stacked_parameters  # noqa: E402
from hyperaudio.hya import INR  # noqa: E402
from hyperaudio.playback import Engine, NullSink, SoundDeviceSink  # noqa: E402
from hyperaudio.playback.backends import make_backend  # noqa: E402
from hyperaudio.playback.timeline import Timeline  # noqa: E402

ALL_INRS = ["kan", "nerf", "siren", "rff", "finer", "wire", "siamese-siren", "film-siren"]
NATIVE, CHUNK, OUT_RATE, BLOCK = 22050.0, 32768, 48000, 2048


def preset_inr(name: str) -> INR:
    cfg = config.resolve(None, name, [])
    torch.manual_seed(0)
    module = config.build_target(cfg)
    params = {n: p + 0.05 * p.abs().mean().clamp_min(1e-3) * torch.randn_like(p)
              for n, p in stacked_parameters(module, 1).items()}
    return INR(cfg, module, params, NATIVE, CHUNK, 1, [(0, CHUNK)])


def cpu_load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def realtime_factor(inr: INR, backend: str, device: str, seconds: float, threads: int,
                    interpolation: str = "inr") -> float:
    """Render ``seconds`` of output at 48 kHz the way the renderer thread does; returns the RTF."""
    result = {}

    def run():
        if device == "cpu":
            torch.set_num_threads(1)  # per thread, as the engine's renderer does; more threads split blocks
        b = make_backend(inr, backend, device, threads=threads)
        tl = Timeline(b, NATIVE, CHUNK, OUT_RATE, fade=240, chunk=BLOCK * (4 if device == "cuda" else 1),
                      prefetch=1 if device == "cuda" else 0, interpolation=interpolation)
        tl.loop = (0.0, float(CHUNK))
        tl.start(0.0, 1.0)
        tl.render(BLOCK)  # warm-up
        frames = int(seconds * OUT_RATE)
        start = time.perf_counter()
        done = 0
        while done < frames:
            done += len(tl.render(BLOCK))
        result["rtf"] = done / OUT_RATE / (time.perf_counter() - start)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return result["rtf"]


def audio_sink_factory(args):
    """A PulseAudio-backed SoundDeviceSink when possible (starting a server if needed), else None."""
    if args.null:
        return None, None
    try:
        from audio_server import AudioServer, AudioServerUnavailable
    except ImportError:
        return None, None
    try:
        import sounddevice as sd

        if any(d["name"] == "pulse" for d in sd.query_devices()):
            return (lambda: SoundDeviceSink("pulse", latency=args.latency)), None
    except OSError:
        return None, None
    server = AudioServer()
    try:
        server.start()
    except AudioServerUnavailable as exc:
        print(f"# no audio server ({exc}): using a null sink", file=sys.stderr)
        return None, None
    return (lambda: SoundDeviceSink("pulse", latency=args.latency)), server


def first_sound(inr: INR, make_sink, backend: str, repeats: int, threads: int) -> dict:
    latencies, devices, setups = [], [], []
    for _ in range(repeats):
        sink = make_sink() if make_sink else NullSink()
        t0 = time.perf_counter()
        engine = Engine(inr, sink, OUT_RATE, backend=backend, loop=True, threads=threads)
        setups.append(time.perf_counter() - t0)
        engine.play()
        deadline = time.perf_counter() + 2
        while engine.stats.first_audio_time is None and time.perf_counter() < deadline:
            time.sleep(0.001)
        latencies.append(engine.stats.first_sound_latency)
        devices.append(getattr(sink, "latency", 0.0))
        time.sleep(0.1)
        engine.stop()
    return {"play_to_first_audio_ms": [round(1e3 * v, 1) for v in latencies],
            "device_latency_ms": round(1e3 * statistics.median(devices), 1),
            "engine_setup_ms": round(1e3 * statistics.median(setups), 1)}


def playback_under_load(inr: INR, make_sink, seconds: float, clip: Path, backend: str, threads: int) -> dict:
    """Loop ``inr`` for ``seconds`` while ``hyperaudio fit`` fits ``clip`` in another process."""
    out = Path(tempfile.mkdtemp(prefix="hyperaudio-bench-")) / "fit.hya"
    fit = subprocess.Popen(
        [sys.executable, "-m", "hyperaudio.cli", "fit", str(clip), "--inr", "kan", "--seconds", str(seconds + 30),
         "-q", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3.0)  # let the fit get going (imports, first steps)
        if fit.poll() is not None:
            raise RuntimeError(f"the background fit ended early: {fit.stderr.read()[-500:]}")
        sink = make_sink() if make_sink else NullSink(keep=False)
        engine = Engine(inr, sink, OUT_RATE, backend=backend, loop=True, threads=threads)
        load_before = os.getloadavg()[0]
        engine.play()
        time.sleep(seconds)
        engine.stop()
        stats = engine.stats
        return {"seconds": seconds, "underruns": stats.underruns, "underrun_frames": stats.underrun_frames,
                "device_xruns": stats.device_xruns, "load_1min": round(max(load_before, os.getloadavg()[0]), 2),
                "renderer_rtf": round(stats.realtime_factor(OUT_RATE) or 0, 1),
                "fit_running": fit.poll() is None}
    finally:
        fit.terminate()
        try:
            fit.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fit.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inrs", default=",".join(ALL_INRS))
    ap.add_argument("--rtf-seconds", type=float, default=3.0, help="seconds of audio per RTF measurement")
    ap.add_argument("--threads", type=int, default=1, help="render threads (the engine's default is 1)")
    ap.add_argument("--seconds", type=float, default=60.0, help="playback under load")
    ap.add_argument("--load-inrs", default="nerf,kan", help="networks played under load")
    ap.add_argument("--clip", type=Path, default=ROOT / "bench/data/speech/speech_00_en-us.wav")
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--null", action="store_true", help="null sink instead of PulseAudio")
    ap.add_argument("--latency", default="0.05", help="device latency: low, high or seconds")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    try:
        args.latency = float(args.latency)
    except ValueError:
        pass

    from hyperaudio.runtime import keep_freed_memory

    keep_freed_memory()  # as `hyperaudio play` does
    cuda = torch.cuda.is_available()
    print(f"# torch {torch.__version__}, device {'cuda: ' + torch.cuda.get_device_name() if cuda else 'cpu'}, "
          f"{os.cpu_count()} CPUs, {cpu_load()}")
    results: dict = {"rtf": {}, "load_at_start": os.getloadavg()[0]}
    names = [n.strip() for n in args.inrs.split(",") if n.strip()]
    print(f"\n## Real-time factor at {OUT_RATE} Hz ({args.threads} thread(s); native {NATIVE:g} Hz, one {CHUNK}-sample chunk)")
    cols = ["torch", "onnx", "torch/resample"] + (["cuda"] if cuda else [])
    print(f"{'network':<14} {'params':>8}  " + "  ".join(f"{c:>14}" for c in cols))
    for name in names:
        inr = preset_inr(name)
        row = {"params": count_parameters(inr.module)}
        runs = {"torch": ("torch", "cpu", "inr"), "onnx": ("onnx", "cpu", "inr"),
                "torch/resample": ("torch", "cpu", "resample"), "cuda": ("torch", "cuda", "inr")}
        for key in cols:
            backend, device, interpolation = runs[key]
            try:
                row[key] = round(realtime_factor(inr, backend, device, args.rtf_seconds, args.threads,
                                                 interpolation), 1)
            except Exception as exc:  # report and go on
                row[key] = f"error: {exc}"
        results["rtf"][name] = row
        print(f"{name:<14} {row['params']:>8,}  " + "  ".join(f"{row[k]:>14}" for k in cols), flush=True)
    print(f"# {cpu_load()}")

    make_sink, server = audio_sink_factory(args)
    try:
        where = "PulseAudio (null sink)" if make_sink else "null sink"
        print(f"\n## Time to first sound ({where})")
        for backend in ("torch", "onnx"):
            fs = first_sound(preset_inr("nerf"), make_sink, backend, repeats=5, threads=args.threads)
            results[f"first_sound_{backend}"] = fs
            print(f"nerf/{backend}: play() -> first audio to the device {fs['play_to_first_audio_ms']} ms "
                  f"(+ device output latency {fs['device_latency_ms']} ms); engine set-up {fs['engine_setup_ms']} ms")
        if not args.skip_load:
            print(f"\n## {args.seconds:g} s of playback while `hyperaudio fit` runs in another process ({where})")
            for name in [n.strip() for n in args.load_inrs.split(",") if n.strip()]:
                res = playback_under_load(preset_inr(name), make_sink, args.seconds, args.clip, "torch", args.threads)
                results[f"under_load_{name}"] = res
                print(f"{name}: {res}", flush=True)
    finally:
        if server is not None:
            server.stop()
    print(f"# {cpu_load()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
