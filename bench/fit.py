"""Fitting benchmark: every target network on a folder of clips.

For each target network (its default preset) or each named preset, and each clip, prints the
parameter count, seconds per step, the steps and seconds needed to reach SI-SNR 20 dB, and the final
metrics, for each time budget of ``--seconds``; ``--markdown`` writes them as one table per budget
(network x clip), as in docs/results.md. ``--render-rates`` also renders every fitted INR at those
rates and prints the render times.
Clips are resampled to --sr (22.05 kHz, the papers' rate), mixed to mono and cropped to --samples
(32768, the papers' 1.5 s).

    python bench/fit.py bench/data/speech --inrs kan,siren --seconds 300
    python bench/fit.py bench/data/real --clips 4 --seconds 60,120,300 --metrics si-snr,pesq,lsd,visqol \
        --markdown results.md
    python bench/fit.py bench/data/speech --presets kan-fast --render-rates 8000,44100,96000
    python bench/fit.py FOLDER --steps 2000 --json results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench_clips import clips
from hyperaudio import config, fit, metrics, render
from hyperaudio.functional import count_parameters

ALL_INRS = ["kan", "nerf", "siren", "rff", "finer", "wire", "siamese-siren", "film-siren"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--inrs", default=",".join(ALL_INRS),
                    help="target networks, fitted as 'hyperaudio fit --inr NAME' does: no preset, the auto recipe")
    ap.add_argument("--presets", help="preset names to run instead of --inrs (e.g. the papers' NAME-inr)")
    ap.add_argument("--sr", type=int, default=22050)
    ap.add_argument("--samples", type=int, default=32768)
    ap.add_argument("--clips", type=int, default=3, help="at most this many clips from the folder")
    ap.add_argument("--steps", type=int, help="step budget (default: the preset's)")
    ap.add_argument("--seconds", default="300", help="time budget per fit, or several: 60,120,300")
    ap.add_argument("--threshold", type=float, default=20.0, help="SI-SNR (dB) to time")
    ap.add_argument("--metrics", default="mse,psnr,lsd,si-snr")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--render-rates", default="", help="render each fitted INR at these rates (Hz), timed")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--markdown", type=Path, help="also write one table per budget here")
    args = ap.parse_args()
    if not args.folder.is_dir():
        print(f"no such folder: {args.folder}", file=sys.stderr)
        return 2
    import torch

    from hyperaudio.runtime import keep_freed_memory

    keep_freed_memory()  # as the hyperaudio CLI does
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    data = [(path.name, x) for path, x in clips(args.folder, args.sr, args.samples, args.clips)]
    names = args.metrics.split(",")
    rates = [float(r) for r in args.render_rates.split(",") if r]
    runs = ([(p, p, None) for p in args.presets.split(",")] if args.presets
            else [(inr, {}, inr) for inr in args.inrs.split(",")])
    results = []
    budgets = [float(b) for b in args.seconds.split(",")]
    for budget, (label, preset, inr) in ((b, r) for b in budgets for r in runs):
        overrides = ["fit.eval_every=10", "fit.target_sisnr=0"] + list(args.overrides)  # the user's --set wins
        # As the CLI's --seconds: the time budget alone, unless --steps is given too.
        overrides += [f"fit.steps={args.steps or 100_000_000}", f"fit.seconds={budget}"]
        cfg = config.resolve(preset, inr, overrides)
        params = count_parameters(config.build_target(cfg))
        for clip_name, x in data:
            reached = {}

            def watch(p, reached=reached):
                if "step" not in reached and p.sisnr >= args.threshold:
                    reached.update(step=p.step, seconds=p.elapsed)

            t0 = time.perf_counter()
            model = fit.fit(x[None], args.sr, cfg, progress=False, callback=watch)
            wall = time.perf_counter() - t0
            values = metrics.evaluate(x[None], render.render(model, args.sr), args.sr, names)
            renders = {}
            for rate in rates:
                r0 = time.perf_counter()
                y = render.render(model, rate)
                seconds = time.perf_counter() - r0
                if y.shape[-1] != round(len(x) * rate / args.sr) or not np.all(np.isfinite(y)):
                    raise SystemExit(f"{label}: bad render at {rate:g} Hz: {y.shape}, finite={np.isfinite(y).all()}")
                renders[f"{rate:g}"] = seconds
            row = {
                "inr": label, "clip": clip_name, "budget": budget, "params": params, "steps": model.info["steps"],
                "sec_per_step": wall / max(model.info["steps"], 1), "steps_to_threshold": reached.get("step"),
                "seconds_to_threshold": reached.get("seconds"), "seconds": wall, **values,
                "render_seconds": renders, "recipe": model.info.get("recipe"),
            }
            results.append(row)
            to = (f"{reached['step']} steps / {reached['seconds']:.0f} s" if reached else "not reached")
            rendered = "".join(f"  render {r} Hz {sec * 1000:.0f} ms" for r, sec in renders.items())
            print(f"{budget:>4g} s {label:<14} {clip_name:<28} {params:>7,} params  {row['sec_per_step'] * 1000:7.1f} ms/step  "
                  f"{args.threshold:g} dB: {to:<22} " + "  ".join(f"{k} {v:.4g}" for k, v in values.items())
                  + rendered + (f"  recipe {row['recipe']}" if row["recipe"] else ""), flush=True)
    print("\n# medians per target network")
    for budget, (label, _, _) in ((b, r) for b in budgets for r in runs):
        rows = [r for r in results if r["inr"] == label and r["budget"] == budget]
        hit = [r["seconds_to_threshold"] for r in rows if r["seconds_to_threshold"] is not None]
        print(f"{budget:>4g} s {label:<14} {statistics.median(r['sec_per_step'] for r in rows) * 1000:7.1f} ms/step  "
              f"SI-SNR {statistics.median(r['si-snr'] for r in rows):6.2f} dB  "
              f"reached {args.threshold:g} dB in {len(hit)}/{len(rows)}"
              + (f" (median {statistics.median(hit):.0f} s)" if hit else ""))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(results, names, args.threshold))
    return 0


def markdown(results: list[dict], names: list[str], threshold: float) -> str:
    """One table per budget: a row per network, a cell per clip with the metrics in ``names``' order
    and the seconds to ``threshold`` dB SI-SNR."""
    clip_names = list(dict.fromkeys(r["clip"] for r in results))
    out = []
    for budget in dict.fromkeys(r["budget"] for r in results):
        out += [f"### {budget:g} s per fit", "",
                f"Each cell: {' / '.join(names)}; in brackets the seconds to {threshold:g} dB SI-SNR "
                "(- not reached).", "",
                "| network | " + " | ".join(Path(c).stem for c in clip_names) + " |",
                "|---|" + "---|" * len(clip_names)]
        for label in dict.fromkeys(r["inr"] for r in results):
            cells = []
            for clip in clip_names:
                row = next((r for r in results if (r["inr"], r["clip"], r["budget"]) == (label, clip, budget)), None)
                if row is None:
                    cells.append("")
                    continue
                to = row["seconds_to_threshold"]
                cells.append(" / ".join(f"{row[n]:.3g}" if abs(row[n]) < 100 else f"{row[n]:.0f}" for n in names)
                             + f" ({'-' if to is None else f'{to:.0f}'})")
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
