"""The ``hyperaudio`` command line.

Bad input (missing or corrupt files, invalid settings) prints one line ``hyperaudio: error: ...``
and exits with status 2; outputs are written atomically, so nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
from pathlib import Path

from .errors import HyperaudioError

LIST_KINDS = {"inrs": "target_networks", "encoders": "encoders", "strategies": "strategies", "presets": "presets"}


class UsageError(HyperaudioError):
    pass


INT_MAX = 2**63 - 1  # the largest count torch and numpy hold in an int64


def _number(kind, low=None, strict=False):
    """An argparse type: a finite ``kind`` number, above ``low`` (``strict``) or at least ``low``;
    integers at most INT_MAX."""
    def parse(text):
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        if kind is int and abs(value) > INT_MAX:
            raise argparse.ArgumentTypeError(f"too large: {text[:20]!r}{'...' if len(text) > 20 else ''}")
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number: {text!r}")
        if low is not None and not (value > low if strict else value >= low):
            raise argparse.ArgumentTypeError(f"must be {'positive' if strict and low == 0 else f'>= {low}'}: {text!r}")
        return value

    return parse


def _positive(kind):
    return _number(kind, 0, strict=True)


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line, ``hyperaudio: error: ...`` with status 2, like every other error."""

    def error(self, message):
        command = self.prog.removeprefix("hyperaudio").strip()
        where, help_for = (f"{command}: ", f"{command} ") if command else ("", "")
        self.exit(2, f"hyperaudio: error: {where}{message} (see 'hyperaudio {help_for}--help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hyperaudio", description="Implicit neural representations of sound.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("fit", help="fit one sound with a target network and save it as .hya")
    p.add_argument("input", help="audio file (any format soundfile reads)")
    p.add_argument("--inr", help="target network, e.g. kan, siren, nerf (see 'hyperaudio list inrs')")
    p.add_argument("--preset", help="preset name or .toml path (default: none, the auto recipe, which measures "
                                    "the learning rate and time scale on the sound; the papers' settings are "
                                    "the NAME-inr presets)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set fit.lr=0.002 (repeatable)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=_positive(int), help="optimisation steps per chunk group")
    budget.add_argument("--seconds", type=_positive(float),
                        help="wall-clock budget for the whole fit (auto recipe default: 120)")
    p.add_argument("--target-sisnr", type=_number(float), metavar="DB", help="stop once SI-SNR reaches DB")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("-o", "--output", required=True, help="output .hya file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("render", help="render a .hya file to audio at any rate")
    p.add_argument("input", help=".hya file")
    p.add_argument("--sr", type=_positive(float), required=True, help="output sample rate in Hz")
    p.add_argument("--start", type=_number(float, 0), default=0.0, help="start, in seconds of the source")
    p.add_argument("--duration", type=_positive(float), help="length, in seconds of the source")
    p.add_argument("--speed", type=_positive(float), default=1.0, help="playback speed (0.5 = half speed)")
    p.add_argument("--no-bandlimit", action="store_true", help="evaluate directly even below the native rate")
    p.add_argument("-o", "--output", required=True, help="output audio file (.wav, .flac, .ogg)")

    p = sub.add_parser("eval", help="compare a reconstruction with its reference")
    p.add_argument("reference")
    p.add_argument("reconstruction", help="audio file or .hya (rendered at the reference's rate)")
    p.add_argument("--metrics", help="comma-separated metric names (default: the fast ones; 'all' for every one)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", metavar="PNG", help="write waveforms and spectrograms to this PNG")

    p = sub.add_parser("train", help="train a hypernetwork on a folder of audio (docs/hypernetworks.md)")
    p.add_argument("--preset", help="preset name or .toml path, e.g. hypersound-nerf (optional with --resume)")
    p.add_argument("--data", help="training audio: a folder (recursive), a list file or a glob pattern")
    p.add_argument("--val", help="held-out audio: a folder, a list file, or a glob pattern selecting files of --data")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set train.lr=0.001 (repeatable)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=_positive(int), help="training steps (train.steps)")
    budget.add_argument("--seconds", type=_positive(float), help="wall-clock budget (train.seconds)")
    p.add_argument("--resume", action="store_true", help="continue the run in -o exactly where it stopped")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR", help="run folder (model, checkpoint, metrics)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("encode", help="encode a sound into a .hya with a trained hypernetwork")
    p.add_argument("model", help="run folder or model.safetensors")
    p.add_argument("input", help="audio file (any format soundfile reads)")
    p.add_argument("-o", "--output", required=True, help="output .hya file")
    p.add_argument("--refine", type=_number(int, 0), default=0, metavar="STEPS",
                   help="test-time refinement: gradient steps from the generated weights (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("list", help="list registered components")
    p.add_argument("kind", nargs="?", choices=list(LIST_KINDS), help="which kind (default: all)")

    p = sub.add_parser("info", help="describe a .hya file")
    p.add_argument("input")

    p = sub.add_parser("compress", help="compress a sound to a bitrate: size, fit, quantise, write a .hya")
    p.add_argument("input", help="audio file (any format soundfile reads)")
    p.add_argument("--kbps", type=_positive(float), required=True,
                   help="the whole file's budget in kb/s of the sound's duration, metadata included")
    p.add_argument("--seconds", type=_positive(float), help="time budget for fitting and fine-tuning (default: 90)")
    p.add_argument("--inr", default="siamese-siren", help="network family (default siamese-siren: denoised by "
                                                          "its two heads on decode)")
    p.add_argument("--bits", type=int, choices=range(2, 9), metavar="2..8",
                   help="bit depth (default: chosen for the budget)")
    p.add_argument("--sr", type=_positive(float), help="fit at this rate (the input is resampled first; render "
                                                         "still decodes at any rate; default: the input's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("-o", "--output", required=True, help="output .hya file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("quantize", help="quantise an existing .hya (post-training, per-row symmetric, zstd)")
    p.add_argument("input", help=".hya file with float weights")
    p.add_argument("--bits", type=int, choices=(8, 6, 4), required=True, help="bit depth")
    p.add_argument("-o", "--output", required=True, help="output .hya file")

    from .plugin_cli import add_commands

    COMMANDS.update(add_commands(sub))  # plugin install/uninstall/list/freeze/check, presets list/show/dir

    p = sub.add_parser("gui", help="open the desktop app (needs the gui extra: PySide6, pyqtgraph)")
    p.add_argument("files", nargs="*", help="sounds or .hya files to open")
    p.add_argument("--demo", action="store_true", help="open the bundled demo sound")
    p.add_argument("--smoke-test", action="store_true",
                   help="start, print 'hyperaudio-gui: ready' once the window is up, and quit")
    p.add_argument("--screenshot", metavar="PNG", help="with --smoke-test: save the window to this PNG")

    p = sub.add_parser("demo", help="the main job on the bundled demo sound: fit, render, report")
    p.add_argument("-o", "--output", default="out/demo", help="output folder")
    p.add_argument("--inr", default="kan")
    p.add_argument("--seconds", type=_positive(float), default=240.0, help="fit time budget")
    p.add_argument("--input", help="use this sound instead of the bundled one")
    from .playback.cli import add_commands as add_playback_commands

    COMMANDS.update(add_playback_commands(sub))  # play, devices, export
    return parser


# -- commands -------------------------------------------------------------------------------------
def cmd_fit(args) -> int:
    from . import audio, config, fit, hya, recipe

    out = audio.check_output(args.output, args.input)
    fit.pick_device(args.device)  # an unknown device is refused before the sound is read
    overrides = list(args.overrides)
    if args.steps:
        overrides += [f"fit.steps={args.steps}", "fit.seconds=0"]
    if args.seconds:
        overrides += [f"fit.seconds={args.seconds}", "fit.steps=100000000"]
    if args.target_sisnr is not None:
        overrides.append(f"fit.target_sisnr={args.target_sisnr}")
    if not args.inr and not args.preset:
        raise UsageError("choose a target network with --inr NAME or a --preset")
    cfg = config.resolve(args.preset or {}, args.inr, overrides)  # {}: no preset, the auto recipe
    if cfg["fit"]["recipe"] == "auto" and not cfg["fit"]["seconds"] and not args.steps \
            and not any(o.startswith("fit.steps") for o in overrides):
        cfg["fit"]["seconds"] = recipe.DEFAULT_SECONDS
    x, sr = audio.load(args.input)
    budget = f"{cfg['fit']['seconds']:g} s" if cfg["fit"]["seconds"] else f"{cfg['fit']['steps']} steps"
    print(f"fitting {args.input} ({x.shape[0]} ch, {x.shape[1] / sr:.2f} s at {sr} Hz) with "
          f"{cfg['target']['name']} [{cfg['preset'].get('name') or 'defaults'}, {cfg['fit']['recipe']} recipe, "
          f"{budget}]", file=sys.stderr)
    with _sigterm_interrupts():
        inr = fit.fit(x, sr, cfg, device=args.device, progress=not args.quiet)
    info = inr.info
    if info["steps"] == 0:
        return _nothing_learnt(out, info["interrupted"])
    _save_or_rescue(hya.save, inr, out, "the fit")
    note = " (interrupted: saved the progress so far)" if info["interrupted"] else ""
    print(f"saved {out}: {info['steps']} steps in {info['seconds']:.1f} s, "
          f"SI-SNR {info['sisnr']:.2f} dB{note}", file=sys.stderr)
    return 130 if info["interrupted"] else 0


def cmd_render(args) -> int:
    from . import audio, hya, render

    out = audio.check_output(args.output, args.input)
    audio.output_format(out)
    audio.check_rate(args.sr)
    inr = hya.load(args.input)
    if args.start >= inr.duration:
        raise UsageError(f"--start {args.start} is past the end of the sound ({inr.duration:.3f} s)")
    if render.output_frames(inr, args.sr, args.start, args.duration, args.speed) == 0:  # within the bounds, or refused
        raise UsageError(f"the render would be shorter than one sample at {args.sr:g} Hz: nothing to write")
    past = args.start + (args.duration or 0.0) - inr.duration
    if past > 1 / inr.sample_rate:
        audio.warn(f"--duration {args.duration:g} s runs {past:.3f} s past the end of the sound "
                   f"({inr.duration:.3f} s): that part is silent")
    frames = render.render_to_file(inr, out, args.sr, start=args.start, duration=args.duration, speed=args.speed,
                                   bandlimit=not args.no_bandlimit)
    print(f"wrote {out}: {frames / args.sr:.3f} s at {args.sr:g} Hz", file=sys.stderr)
    return 0


def _load_for_eval(path: str, sr: float | None = None):
    from . import audio, hya, render

    if path.endswith(".hya"):
        inr = hya.load(path)
        rate = sr or inr.sample_rate
        return render.render(inr, rate), rate
    return audio.load(path)


def cmd_eval(args) -> int:
    import numpy as np

    from . import audio, metrics, report

    if args.plot:
        audio.check_output(args.plot, args.reference, args.reconstruction, flag="--plot")
    ref, sr = audio.load(args.reference)
    est, est_sr = _load_for_eval(args.reconstruction, sr)
    if est_sr != sr:
        est = audio.resample(est, est_sr, sr)
    if ref.shape[0] != est.shape[0]:
        ref, est = audio.to_mono(ref), audio.to_mono(est)
    if abs(ref.shape[1] - est.shape[1]) > max(16, 0.01 * ref.shape[1]):
        raise UsageError(f"lengths differ: reference {ref.shape[1] / sr:.3f} s, "
                         f"reconstruction {est.shape[1] / sr:.3f} s")
    n = min(ref.shape[1], est.shape[1])
    ref, est = ref[:, :n], est[:, :n]
    names = None
    if args.metrics:
        names = list(metrics.METRICS) if args.metrics == "all" else [m.strip() for m in args.metrics.split(",")]
    try:
        values = metrics.evaluate(ref, est, sr, names)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.plot:
        report.plot_comparison(ref.mean(0), est.mean(0), sr, args.plot,
                               title=f"{Path(args.reference).name} vs {Path(args.reconstruction).name}")
    if args.json:
        print(json.dumps({k: (None if not np.isfinite(v) else v) for k, v in values.items()}, indent=2))
    else:
        width = max(map(len, values))
        for name, value in values.items():
            m = metrics.METRICS[name]
            print(f"{name:<{width}}  {value:10.4f}   ({m.better} is better)")
    return 0


def cmd_train(args) -> int:
    import os

    from . import config
    from .hypernet.train import check_hypernet_preset, read_checkpoint, train

    overrides = list(args.overrides)
    if args.steps:
        overrides += [f"train.steps={args.steps}", "train.seconds=0"]
    if args.seconds:
        overrides += [f"train.seconds={args.seconds}"]
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is not a folder")
    if args.preset:
        check_hypernet_preset(args.preset)
    if args.resume:
        state, _ = read_checkpoint(out)  # a clear error when there is nothing to resume
        if args.preset:
            cfg = config.resolve(args.preset, None, overrides)
        else:
            cfg = config.apply_overrides(state["config"], overrides)
            config.validate(cfg)
        sources = state.get("sources", {})
        data = args.data or sources.get("data")
        val = args.val if args.data else sources.get("val")
        if not data:
            raise UsageError("--resume: pass --data (the run does not record its data)")
    else:
        if not args.preset:
            raise UsageError("choose a model with --preset NAME (e.g. hypersound-nerf; see 'hyperaudio presets list')")
        if not args.data:
            raise UsageError("--data is required: a folder, list file or glob pattern of training audio")
        cfg = config.resolve(args.preset, None, overrides)
        data, val = args.data, args.val
    main_process = int(os.environ.get("RANK", "0")) == 0
    result = train(cfg, data, val, out_dir=out, resume=args.resume, device=args.device, progress=not args.quiet)
    if main_process:
        val_text = ""
        if result.val:
            v = result.val
            val_text = "; validation " + ", ".join(
                f"{k} {v[k]:.4g} (silence {v.get('silence.' + k, float('nan')):.4g})"
                for k in cfg["train"]["val_metrics"] if k in v)
        note = " (interrupted: checkpoint saved, continue with --resume)" if result.interrupted else ""
        print(f"saved {result.model_path}: {result.steps} steps in {result.seconds:.1f} s{val_text}{note}",
              file=sys.stderr)
    return 130 if result.interrupted else 0


def cmd_encode(args) -> int:
    import time

    import numpy as np

    from . import audio, hya, metrics, render
    from .hypernet.encode import encode

    from .fit import pick_device

    if args.refine < 0:
        raise UsageError("--refine must be >= 0")
    model = Path(args.model)
    out = audio.check_output(args.output, args.input, model / "model.safetensors" if model.is_dir() else model)
    pick_device(args.device)
    x, sr = audio.load(args.input)
    start = time.perf_counter()
    with _sigterm_interrupts():
        inr = encode(args.model, x, sr, refine_steps=args.refine, device=args.device,
                     progress=not args.quiet and args.refine > 0)
    seconds = time.perf_counter() - start
    _save_or_rescue(hya.save, inr, out, "the encoding")
    y = render.render(inr, sr)
    n = min(x.shape[1], y.shape[1])
    score = float(np.mean([metrics.evaluate(x[c, :n], y[c, :n], sr, ["si-snr"])["si-snr"]
                           for c in range(x.shape[0])]))
    refined = f", refined {inr.info.get('refine_steps', 0)} steps per chunk" if args.refine else ""
    interrupted = bool(inr.info.get("refine_interrupted"))
    note = " (refinement interrupted: saved the progress so far)" if interrupted else ""
    print(f"saved {out}: {x.shape[0]} ch, {x.shape[1] / sr:.2f} s, {inr.info['chunks']} chunk(s){refined}; "
          f"SI-SNR {score:.2f} dB vs the input; {seconds:.2f} s{note}", file=sys.stderr)
    return 130 if interrupted else 0


def cmd_list(args) -> int:
    from .plugins import KIND_LABELS, get_registry

    registry = get_registry()
    kinds = [LIST_KINDS[args.kind]] if args.kind else list(LIST_KINDS.values())
    for kind in kinds:
        title = next(k for k, v in LIST_KINDS.items() if v == kind)
        print(f"{title}:")
        names = registry.names(kind)
        if not names:
            print(f"  (no {KIND_LABELS[kind]} registered)")
        for name in names:
            entry = registry.get(kind, name)
            if kind == "presets":
                desc = entry.obj.get("preset", {}).get("description", "")
                desc = f"{entry.obj['target']['name']:<14} {desc}"
            else:
                desc = entry.description
            source = "" if entry.dist == "hyperaudio" else f"  [{entry.dist}]"
            print(f"  {name:<22} {desc}{source}")
    for info in registry.broken():
        print(f"warning: plugin {info.name} is broken: {info.error}", file=sys.stderr)
    return 0


def cmd_info(args) -> int:
    from . import hya

    # What the file claims, from its header alone: describing a file never builds its network.
    head = hya.read_header(args.input)
    target, preset = head.config.get("target", {}), head.config.get("preset", {})
    print(f"file:        {args.input}")
    per_chunk = head.parameters_per_member()
    print(f"target:      {target.get('name') or '-'} ({per_chunk:,} parameters per chunk and channel)")
    print(f"preset:      {preset.get('name') or '-'}")
    print(f"native rate: {head.sample_rate:g} Hz, {head.duration:.3f} s, {head.channels} channel(s)")
    print(f"chunks:      {len(head.chunks)} x {head.chunks[0][1]} samples")
    stored = sorted({dtype for name, (dtype, _) in head.tensors.items() if name.startswith("params.")})
    if head.quantization is not None:
        q = head.quantization
        print(f"weights:     {q['bits']}-bit integers with per-row float16 scales, {q['codec']}-coded "
              "(dequantised to float32 when loaded)")
    elif stored != [hya.NATIVE_DTYPE]:
        print(f"weights:     {', '.join(stored)} (converted to float32 when loaded)")
    print(f"bitrate:     {head.kbps:.2f} kb/s ({head.file_bytes:,} bytes over {head.duration:.3f} s)")
    if head.gain != 1.0:
        print(f"gain:        {head.gain:.6g} (output scale: the encoded input was peak-normalised)")
    for key, value in head.info.items():
        print(f"{key + ':':<12} {value}")
    return 0


def cmd_compress(args) -> int:
    from . import audio, compress, config, fit, hya

    out = audio.check_output(args.output, args.input)
    fit.pick_device(args.device)
    config.resolve({}, args.inr)  # an unknown network is refused before the sound is read
    compress.family(args.inr, compress.WIDTHS[0])
    x, sr = audio.load(args.input)
    if args.sr and args.sr != sr:
        x, sr = audio.resample(x, sr, audio.check_rate(args.sr)), args.sr
    p = compress.plan(args.kbps, x.shape[1], sr, x.shape[0], args.inr, args.bits)  # BudgetError before the fit
    seconds = args.seconds or compress.DEFAULT_SECONDS
    print(f"compressing {args.input} ({x.shape[0]} ch, {x.shape[1] / sr:.2f} s at {sr} Hz) to {args.kbps:g} kb/s "
          f"= {p.budget:,} bytes: {args.inr} {p.params} ({p.parameters:,} parameters x {p.members}) at {p.bits} bits, "
          f"{seconds:g} s", file=sys.stderr)
    with _sigterm_interrupts():
        result = compress.compress(x, sr, args.kbps, seconds=seconds, inr=args.inr, bits=args.bits,
                                   device=args.device, progress=not args.quiet)
    _save_or_rescue(lambda r, path: hya.save(r.inr, path, r.packed), result, out, "the compressed sound")
    print(f"saved {out}: {len(result.data):,} bytes = {result.kbps:.2f} kb/s (budget {args.kbps:g}), "
          f"{result.bits}-bit weights; SI-SNR {result.info['sisnr']:.2f} dB before denoising "
          f"(float {result.info['sisnr_float']:.2f} dB)", file=sys.stderr)
    return 0


def cmd_quantize(args) -> int:
    from . import audio, compress, hya

    out = audio.check_output(args.output, args.input)
    if hya.read_header(args.input).quantization is not None:
        raise UsageError(f"{args.input} is already quantised: quantise the float .hya it came from")
    inr = hya.load(args.input)
    packed, data = compress.requantize(inr, args.bits)
    _save_or_rescue(lambda _r, path: hya.save(inr, path, packed), None, out, "the quantised file")
    print(f"saved {out}: {len(data):,} bytes = {8 * len(data) / inr.duration / 1000:.2f} kb/s, {args.bits}-bit "
          f"weights (was {Path(args.input).stat().st_size:,} bytes)", file=sys.stderr)
    return 0


def cmd_gui(args) -> int:
    import importlib.util

    # The core never imports Qt: the app is a separate package, loaded only here.
    missing = [m for m in ("PySide6", "pyqtgraph", "hyperaudio_ui") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"hyperaudio: error: the desktop app needs {', '.join(missing)}: pip install 'hyperaudio[gui]'",
              file=sys.stderr)
        return 2
    from hyperaudio_ui.app import run

    return run(args)


def cmd_demo(args) -> int:
    from . import audio
    from .demo import RENDER_RATES, run_demo

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is not a folder")
    names = ["demo.hya", *(f"demo_{rate}.wav" for rate in RENDER_RATES), "report.png", "metrics.json", "report.md"]
    for name in names:  # every file the demo writes into the folder
        audio.check_output(out / name, args.input, flag="-o")
    run_demo(out, inr=args.inr, seconds=args.seconds, source=args.input)
    return 0


# -- signals and saving ---------------------------------------------------------------------------
@contextlib.contextmanager
def _handling(signals, handler):
    """Run the block with ``handler`` for ``signals``, then restore the old handlers. Only the main
    thread may set handlers; elsewhere (an embedding app's worker) the block runs as it is."""
    saved = {}
    for sig in signals:
        with contextlib.suppress(ValueError):
            saved[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)  # None: a handler set outside Python


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _sigterm_interrupts():
    """SIGTERM ends the block as Ctrl-C does (KeyboardInterrupt): a fit then returns, and its caller
    saves, what it has learnt instead of dying with it (``hyperaudio train`` treats both alike)."""
    return _handling((signal.SIGTERM,), _raise_interrupt)


@contextlib.contextmanager
def _signals_held():
    """Hold Ctrl-C and SIGTERM back while the block (a save) runs; either one, if it came, raises
    KeyboardInterrupt once the block is done, so an interrupt never cuts a result's save short."""
    received = []
    with _handling((signal.SIGINT, signal.SIGTERM), lambda signum, frame: received.append(signum)):
        yield
    if received:
        raise KeyboardInterrupt


def _save_or_rescue(save, result, out: Path, what: str) -> None:
    """``save(result, out)``; where that fails, save under a temporary name (beside ``out``, else in the
    current folder, else in the system's temporary folder) and raise UsageError saying where."""
    with _signals_held():
        try:
            save(result, out)
            return
        except OSError as exc:
            reason = exc.strerror or str(exc)
        for folder in (out.parent, Path.cwd(), Path(tempfile.gettempdir())):
            with contextlib.suppress(OSError):
                fd, name = tempfile.mkstemp(prefix=f"{out.stem}.", suffix=f".rescued{out.suffix}", dir=folder)
                os.close(fd)
                try:
                    save(result, Path(name))
                except OSError:
                    os.unlink(name)
                    continue
                raise UsageError(f"cannot write {out} ({reason}); {what} is saved as {name}")
    raise UsageError(f"cannot write {out} ({reason}), nor a copy in {out.parent}, {Path.cwd()} or "
                     f"{tempfile.gettempdir()}: {what} is lost")


def _nothing_learnt(out: Path, interrupted: bool) -> int:
    """A fit that made no step has nothing to save: never replace ``out`` (maybe a good file) with it."""
    kept = f"{out} is left as it was" if out.exists() else f"{out} is not written"
    if not interrupted:
        raise UsageError(f"no optimisation step was made (the time budget ran out first, or the loss was never "
                         f"finite): nothing learnt, {kept}")
    print(f"hyperaudio: interrupted before the first step: nothing learnt, {kept}", file=sys.stderr)
    return 130


COMMANDS = {"fit": cmd_fit, "render": cmd_render, "eval": cmd_eval, "list": cmd_list, "info": cmd_info,
            "demo": cmd_demo, "train": cmd_train, "encode": cmd_encode, "gui": cmd_gui,
            "compress": cmd_compress, "quantize": cmd_quantize}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .runtime import keep_freed_memory

    keep_freed_memory()
    try:
        return COMMANDS[args.command](args)
    except HyperaudioError as exc:
        print(f"hyperaudio: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # invalid numeric arguments reaching the library
        print(f"hyperaudio: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hyperaudio: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
