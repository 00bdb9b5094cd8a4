"""The ``play``, ``devices`` and ``export`` commands.

``add_commands(subparsers)`` adds them to the ``hyperaudio`` parser and returns ``{name: handler}``;
each handler takes the parsed arguments and returns an exit status. Bad input raises a
``HyperaudioError`` subclass, which ``hyperaudio.cli.main`` prints on one line (exit status 2).

While ``play`` runs in a terminal it reads commands from stdin, one a line, and applies them live::

    speed 0.5     sr 96000     seek 1.25     gain -6     loop 0.5 1.0     loop off     q
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from pathlib import Path

from ..errors import HyperaudioError
from .errors import PlaybackError

HELP_KEYS = "commands: speed X | sr HZ | seek SECONDS | gain DB | loop [A B|off] | q"


def _number(kind, positive=True):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or (positive and not value > 0):
            raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
        return value

    return parse


def add_commands(subparsers) -> dict:
    p = subparsers.add_parser("play", help="play a .hya file live at any rate and speed",
                              description="Play an INR through the audio device. " + HELP_KEYS)
    p.add_argument("input", help=".hya file")
    p.add_argument("--sr", type=_number(float), help="output sample rate in Hz (default: the INR's native rate)")
    p.add_argument("--speed", type=_number(float), default=1.0, help="playback speed (0.5 = half speed, an octave down)")
    p.add_argument("--start", type=_number(float, positive=False), default=0.0, help="start, in seconds of the source")
    p.add_argument("--loop", nargs="*", type=_number(float, positive=False), metavar=("A", "B"),
                   help="loop the whole sound, or the region A-B seconds")
    p.add_argument("--gain", type=_number(float, positive=False), default=0.0, metavar="DB", help="gain in dB")
    p.add_argument("--device", default="auto", help="where the INR runs: auto, cpu or cuda")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch", help="evaluation backend")
    p.add_argument("--output-device", metavar="NAME|INDEX", help="audio output device (see 'hyperaudio devices')")
    p.add_argument("--latency", default="0.05", help="device latency: low, high or seconds (default: 0.05)")
    p.add_argument("--interpolation", choices=["inr", "resample"], default="inr",
                   help="above the native rate: evaluate the INR at every output sample (inr, default) or only "
                        "at its native rate and resample (cheaper for heavy networks)")
    p.add_argument("--threads", type=_number(int), default=1,
                   help="render threads on the CPU: torch splits each block across them, onnxruntime uses them "
                        "within each operation (default: 1)")
    p.add_argument("--null", action="store_true", help="play through a null sink at real-time pace (no audio device)")
    p.add_argument("-q", "--quiet", action="store_true", help="no status line, no stdin commands")

    subparsers.add_parser("devices", help="list audio output devices")

    p = subparsers.add_parser("export", help="export a .hya file (weights baked in) or a trained hypernetwork "
                                             "(run folder or model.safetensors) to ONNX")
    p.add_argument("input", help=".hya file, hypernetwork run folder or model.safetensors")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 17)")
    return {"play": cmd_play, "devices": cmd_devices, "export": cmd_export}


# -- play -------------------------------------------------------------------------------------------
def _loop_arg(values, duration: float):
    if values is None:
        return None
    if len(values) == 0:
        return True
    if len(values) != 2:
        raise PlaybackError("--loop takes no value (the whole sound) or two: A B (seconds)")
    return tuple(values)


def cmd_play(args) -> int:
    from .. import hya
    from .engine import Engine
    from .sinks import NullSink, SoundDeviceSink

    inr = hya.load(args.input)
    latency = args.latency
    try:
        latency = float(latency)
    except ValueError:
        if latency not in ("low", "high"):
            raise PlaybackError(f"--latency must be low, high or a number of seconds, got {latency!r}") from None
    device = _play_device(args.device)
    sink = NullSink(keep=False) if args.null else SoundDeviceSink(args.output_device, latency=latency)
    if args.start >= inr.duration:
        raise PlaybackError(f"--start {args.start} is past the end of the sound ({inr.duration:.3f} s)")
    engine = Engine(inr, sink, args.sr, speed=args.speed, start=args.start, loop=_loop_arg(args.loop, inr.duration),
                    gain_db=args.gain, backend=args.backend, device=device, interpolation=args.interpolation,
                    threads=args.threads)
    interactive = not args.quiet and sys.stdin is not None and sys.stdin.isatty()
    if not args.quiet:
        looping = " looping" if args.loop is not None else ""
        print(f"playing {args.input}: {inr.duration:.2f} s at {engine.sr:g} Hz (native {inr.sample_rate:g}), "
              f"speed {engine.speed:g}{looping}, {engine.backend.name} on {engine.device}; Ctrl-C stops",
              file=sys.stderr)
        if interactive:
            print(HELP_KEYS, file=sys.stderr)
    try:
        engine.play()
        if interactive:
            threading.Thread(target=_read_commands, args=(engine,), daemon=True).start()
        while not engine.wait(timeout=0.25):
            if not engine._playing:  # stopped by the 'q' command
                break
            if not args.quiet and sys.stderr.isatty():
                print(f"\r{engine.position:7.2f} s  speed {engine.speed:g}  {engine.sr:g} Hz  "
                      f"underruns {engine.stats.underruns}   ", end="", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        engine.stop(fade=True)
        if not args.quiet:
            print("\nstopped", file=sys.stderr)
        return 0
    finally:
        engine.stop(fade=True)
    if not args.quiet:
        latency_ms = (engine.stats.first_sound_latency or 0.0) * 1e3
        print(f"\ndone: first sound after {latency_ms:.0f} ms, {engine.stats.underruns} underruns", file=sys.stderr)
    return 0


def _play_device(name: str) -> str:
    """``--device`` checked against the devices there are; CUDA asked for where there is none plays on
    the CPU with a warning (playback works there, only slower), anything else unknown is refused."""
    import re

    from ..audio import warn
    from ..fit import available_devices

    devices = available_devices()
    if name == "auto" or name in devices:
        return name
    if re.fullmatch(r"cuda(:\d+)?", name) and "cuda" not in devices:
        warn(f"--device {name}: no usable CUDA device here; playing on the CPU")
        return "cpu"
    raise PlaybackError(f"unknown device {name!r}; devices here: auto, {', '.join(devices)}")


def _read_commands(engine) -> None:
    """Apply the commands typed on stdin until it closes or 'q'."""
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            if not apply_command(engine, words):
                engine.stop(fade=True)
                return
        except (HyperaudioError, ValueError) as exc:
            print(f"\n{exc}", file=sys.stderr)


def apply_command(engine, words: list[str]) -> bool:
    """One live command (``["speed", "0.5"]``...); returns False for 'q'."""
    cmd, rest = words[0].lower(), words[1:]
    if cmd in ("q", "quit", "stop"):
        return False
    if cmd == "loop":
        if rest in ([], ["on"]):
            engine.set_loop(True)
        elif rest == ["off"]:
            engine.set_loop(None)
        else:
            engine.set_loop(tuple(float(v) for v in rest[:2]))
        return True
    if len(rest) != 1:
        raise PlaybackError(HELP_KEYS)
    value = float(rest[0])
    actions = {"speed": engine.set_speed, "sr": engine.set_sample_rate, "rate": engine.set_sample_rate,
               "seek": engine.seek, "gain": engine.set_gain}
    if cmd not in actions:
        raise PlaybackError(f"unknown command {cmd!r}; {HELP_KEYS}")
    actions[cmd](value)
    return True


# -- devices ----------------------------------------------------------------------------------------
def cmd_devices(args) -> int:
    from .sinks import import_sounddevice, output_devices

    devices = output_devices(import_sounddevice())
    if not devices:
        print("no audio output devices found: start an audio server (PulseAudio/PipeWire) or connect a "
              "sound card; 'hyperaudio play --null' plays without one", file=sys.stderr)
        return 1
    for d in devices:
        mark = "*" if d["default"] else " "
        print(f"{mark} {d['index']:3d}  {d['name']}  ({d['hostapi']}, {d['channels']} out, "
              f"{d['default_samplerate']:g} Hz default)")
    return 0


# -- export -----------------------------------------------------------------------------------------
def cmd_export(args) -> int:
    from .. import hya, onnx_export

    from ..audio import check_output

    out = Path(args.output)
    if out.suffix.lower() != ".onnx":
        raise PlaybackError(f"{out}: the output should end in .onnx")
    source = Path(args.input)
    check_output(out, source, source / "model.safetensors" if source.is_dir() else None)
    if source.is_dir() or source.suffix.lower() == ".safetensors":
        return _export_hypernetwork(source, out, args.opset or onnx_export.OPSET)
    inr = hya.load(args.input)
    started = time.perf_counter()
    data = onnx_export.export_bytes(inr, args.opset or onnx_export.OPSET)
    diff = onnx_export.verify(inr, data)  # raises ExportError (a HyperaudioError) when it disagrees
    from ..audio import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    print(f"wrote {out} ({len(data) / 1e6:.2f} MB, {time.perf_counter() - started:.1f} s): input "
          f"'{onnx_export.INPUT}' float64 [M] in native samples at {inr.sample_rate:g} Hz -> "
          f"'{onnx_export.OUTPUT_AUDIO}' float32 [{inr.channels}, M]", file=sys.stderr)
    print(f"max abs difference vs torch: {diff:.3g}")
    return 0


def _export_hypernetwork(source: Path, out: Path, opset: int) -> int:
    from ..audio import atomic_path
    from ..hypernet import onnx_export as hyper_onnx
    from ..hypernet.model import load_model

    started = time.perf_counter()
    model, config = load_model(source)
    data = hyper_onnx.export_bytes(model, config, opset)
    diff = hyper_onnx.verify(model, data)
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    hc = config["hypernet"]
    print(f"wrote {out} ({len(data) / 1e6:.2f} MB, {time.perf_counter() - started:.1f} s): input "
          f"'{hyper_onnx.INPUT}' float32 [B, {hc['num_samples']}] at {hc['sample_rate']} Hz -> "
          f"params.<name> for target network {config['target']['name']!r}", file=sys.stderr)
    print(f"max abs difference vs torch: {diff:.3g}")
    return 0
