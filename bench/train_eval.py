"""Train a hypernetwork for a time budget, then score it on held-out clips.

Trains ``--preset`` on the training folder for ``--seconds`` (``train.seconds``: the OneCycle
schedule follows the clock), then encodes every held-out clip (whole files: long ones chunk by
chunk) and reports, against the original at its own rate, the medians of SI-SNR, LSD and MSE for

* silence (all zeros): the floor a model must beat;
* the model: one forward pass per chunk;
* the model + ``--refine`` steps of test-time refinement (``hyperaudio encode --refine``);

with the median time each takes per clip. Scores are taken twice: at the file's own rate (the INR
rendered there, so its interpolation between the model's samples counts) and at the model's rate
(``hypernet.sample_rate``; the reference resampled to it), which is what the model can reconstruct
at best when it runs slower than the files.

    python bench/prepare_data.py bench/data                      # speech300/ and speech300-val/
    python bench/train_eval.py bench/data/speech300 bench/data/speech300-val \\
        --preset hypersound-nerf --seconds 3600 --refine 200 -o bench/results/hypersound-nerf
    python bench/train_eval.py TRAIN VAL --preset debug-standard --seconds 60 --refine 20   # smoke run

``--resume`` continues a run folder; ``--skip-train`` only evaluates it. Results are printed and
written to ``RUN/eval.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

METRICS = ["si-snr", "lsd", "mse"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train", help="training audio: folder, list file or glob")
    ap.add_argument("val", help="held-out audio: folder, list file or glob (never trained on)")
    ap.add_argument("--preset", default="hypersound-nerf")
    ap.add_argument("--seconds", type=float, default=600.0, help="training time budget")
    ap.add_argument("--refine", type=int, default=200, help="test-time refinement steps (0 = skip)")
    ap.add_argument("--clips", type=int, default=20, help="held-out clips scored (0 = all)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override, e.g. train.lr=0.001")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("-o", "--output", type=Path, help="run folder (default bench/results/<preset>-<time>)")
    ap.add_argument("--resume", action="store_true", help="continue the run in -o (--seconds: its total budget)")
    ap.add_argument("--skip-train", action="store_true", help="only evaluate the model in -o")
    args = ap.parse_args()
    import torch

    from hyperaudio import audio, config, metrics, render
    from hyperaudio.hypernet.data import find_audio
    from hyperaudio.hypernet.encode import encode
    from hyperaudio.hypernet.model import load_model
    from hyperaudio.hypernet.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    run = args.output or Path("bench/results") / f"{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    train_seconds = None
    if not args.skip_train:
        overrides = [*args.overrides, f"train.seconds={args.seconds}"]
        if not any(o.startswith("train.steps=") for o in overrides):
            overrides.append("train.steps=100000000")  # the clock is the budget
        if args.resume:  # the run's own config; only the time budget changes
            from hyperaudio.hypernet.train import read_checkpoint

            cfg = config.apply_overrides(read_checkpoint(run)[0]["config"], [f"train.seconds={args.seconds}"])
        else:
            cfg = config.resolve(args.preset, None, overrides)
        start = time.perf_counter()
        result = train(cfg, args.train, args.val, out_dir=run, resume=args.resume, device=args.device, progress=True)
        train_seconds = time.perf_counter() - start
        print(f"trained {result.steps} steps in {result.seconds:.0f} s -> {result.model_path}", file=sys.stderr)
    model, cfg = load_model(run, "cpu")
    files = find_audio(args.val)
    files = files[: args.clips] if args.clips else files
    model_sr = float(cfg["hypernet"]["sample_rate"])
    keys = ("silence", "model", "refined")
    rows = {rate: {k: [] for k in keys} for rate in ("file", "model")}
    times = {"model": [], "refined": []}

    for i, path in enumerate(files):
        x, sr = audio.load(path)
        x = audio.to_mono(x)
        references = {"file": (x, sr), "model": (audio.resample(x, sr, model_sr), model_sr)}

        def score(key: str, inr=None) -> None:
            for rate, (r, rsr) in references.items():
                est = np.zeros_like(r) if inr is None else _fit_length(render.render(inr, rsr), r)
                rows[rate][key].append(metrics.evaluate(r, est, rsr, METRICS))

        score("silence")
        t = time.perf_counter()
        inr = encode(model, x, sr, device=args.device, config=cfg)
        times["model"].append(time.perf_counter() - t)
        score("model", inr)
        if args.refine:
            t = time.perf_counter()
            inr = encode(model, x, sr, refine_steps=args.refine, device=args.device, config=cfg)
            times["refined"].append(time.perf_counter() - t)
            score("refined", inr)
        last = {k: rows["file"][k][-1]["si-snr"] for k in keys if rows["file"][k]}
        print(f"[{i + 1}/{len(files)}] {path.name}: SI-SNR model {last['model']:.2f} dB"
              + (f", refined {last['refined']:.2f} dB" if args.refine else ""), file=sys.stderr)
    summary = {"preset": cfg["preset"].get("name"), "run": str(run), "train_seconds": train_seconds,
               "clips": len(files), "refine_steps": args.refine, "model_rate": model_sr, "results": {}}
    for rate, title in (("file", "at the files' own rate"), ("model", f"at the model's rate ({model_sr:g} Hz)")):
        print(f"\n{len(files)} held-out clips from {args.val}, {title}; medians")
        print(f"{'':<22} {'SI-SNR dB':>10} {'LSD':>8} {'MSE':>10} {'s / clip':>9}")
        for label, key in zip(("silence", "model", f"model + refine {args.refine}"), keys):
            if not rows[rate][key]:
                continue
            med = {m: statistics.median(r[m] for r in rows[rate][key]) for m in METRICS}
            sec = statistics.median(times[key]) if times.get(key) else 0.0
            summary["results"].setdefault(rate, {})[key] = {**med, "seconds_per_clip": sec}
            print(f"{label:<22} {med['si-snr']:>10.2f} {med['lsd']:>8.3f} {med['mse']:>10.5f} {sec:>9.2f}")
    (run / "eval.json").write_text(json.dumps(summary, indent=2))
    print(f"(written to {run / 'eval.json'})")
    return 0


def _fit_length(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    n = x.shape[-1]
    return y[..., :n] if y.shape[-1] >= n else np.pad(y, ((0, 0), (0, n - y.shape[-1])))


if __name__ == "__main__":
    sys.exit(main())
