"""Hypernetwork benchmark: training throughput, encode latency and the three head kinds.

For each preset (HyperSound's settings: batch 16, 1.5 s clips at 22.05 kHz) and each device (CPU,
and CUDA when available) it prints

* training throughput: clips per second, the median over the timed steps (after warm-up steps),
  measured through :func:`hyperaudio.hypernet.train.train` itself (data, augmentation, loss,
  optimiser: everything a real step does);
* encode latency: milliseconds per 1.5 s clip (one model-length chunk), median over repeats;

and compares the output layer of the head (``hypernet.head_kind``): dense / lowrank / chunked,
with their output-layer parameter counts, throughput, and the training loss after a fixed short
budget (same seed and data for all three).

    python bench/hypernet.py bench/data/speech300
    python bench/hypernet.py DATA --presets hypersound-nerf,fewsound-kan --steps 8 --budget 120
    python bench/hypernet.py DATA --presets debug-standard --steps 5 --budget 20   # a smoke run

Untrained models are timed (weights do not change the cost). On a shared machine, pass
``--threads 1`` for stable CPU numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_PRESETS = "hypersound-nerf,hypersound-shared1,fewsound-kan,pcinr-film"


def devices(choice: str) -> list[str]:
    import torch

    if choice != "auto":
        return choice.split(",")
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def train_run(cfg: dict, data, device: str, steps: int, seconds: float = 0.0) -> list[dict]:
    """Train ``steps`` steps (or ``seconds``) into a temporary folder; the per-step metric records."""
    from hyperaudio.hypernet.train import train

    cfg = {**cfg, "train": {**cfg["train"], "steps": steps, "seconds": seconds, "log_every": 1,
                            "val_every": 10**9, "checkpoint_every": 10**9}}
    with tempfile.TemporaryDirectory() as out:
        result = train(cfg, data, None, out_dir=Path(out) / "run", device=device, progress=False)
    return [r for r in result.history if r["kind"] == "train"]


def throughput(records: list[dict], warmup: int) -> float:
    rates = [r["clips_per_s"] for r in records[warmup:]] or [r["clips_per_s"] for r in records]
    return statistics.median(rates) if rates else float("nan")


def encode_latency(cfg: dict, device: str, repeats: int) -> float:
    """Median milliseconds to encode one model-length clip (untrained weights)."""
    import torch

    from hyperaudio.hypernet.encode import encode
    from hyperaudio.hypernet.model import build

    model = build(cfg).to(device).eval()
    hc = cfg["hypernet"]
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(int(hc["num_samples"]))).astype(np.float32)
    times = []
    for i in range(repeats + 2):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        encode(model, x, hc["sample_rate"], device=device, config=cfg)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 2:  # warm-up
            times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="folder (or list file / glob) of training audio")
    ap.add_argument("--presets", default=DEFAULT_PRESETS, help=f"comma-separated (default {DEFAULT_PRESETS})")
    ap.add_argument("--devices", default="auto", help="auto (cpu, and cuda when available), or e.g. cpu")
    ap.add_argument("--steps", type=int, default=6, help="timed training steps per preset and device")
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the median")
    ap.add_argument("--repeats", type=int, default=5, help="timed encodes")
    ap.add_argument("--heads", default="dense,lowrank,chunked", help="head kinds to compare ('' = skip)")
    ap.add_argument("--head-preset", default="hypersound-nerf", help="preset the head kinds are compared on")
    ap.add_argument("--budget", type=float, default=120.0, help="seconds of training per head kind")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override for every run")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    import torch

    from hyperaudio import config
    from hyperaudio.hypernet.data import load_datasets
    from hyperaudio.hypernet.model import build

    if args.threads:
        torch.set_num_threads(args.threads)
    results = {"throughput": [], "heads": []}
    clip_cache: dict = {}

    def clips_for(cfg):  # decode once per (rate, length)
        key = (cfg["hypernet"]["sample_rate"], cfg["hypernet"]["num_samples"])
        if key not in clip_cache:
            clip_cache[key] = load_datasets(args.data, None, cfg)[0]
        return clip_cache[key]

    print(f"{'preset':<26} {'device':<6} {'params':>11} {'train clips/s':>14} {'encode ms/clip':>15}")
    for name in [p for p in args.presets.split(",") if p]:
        cfg = config.resolve(name, None, args.overrides)
        data = clips_for(cfg)
        n_params = sum(p.numel() for p in build(cfg).parameters() if p.requires_grad)
        for device in devices(args.devices):
            records = train_run(cfg, data, device, args.steps + args.warmup)
            rate = throughput(records, args.warmup)
            latency = encode_latency(cfg, device, args.repeats)
            seconds = cfg["hypernet"]["num_samples"] / cfg["hypernet"]["sample_rate"]
            print(f"{name:<26} {device:<6} {n_params:>11,} {rate:>14.2f} {latency:>15.1f}   "
                  f"(batch {cfg['train']['batch_size']}, {seconds:.2f} s clips)", flush=True)
            results["throughput"].append({"preset": name, "device": device, "trainable_parameters": n_params,
                                          "clips_per_s": rate, "encode_ms": latency, "clip_seconds": seconds})

    kinds = [k for k in args.heads.split(",") if k]
    if kinds:
        print(f"\nhead kinds on {args.head_preset}, {args.budget:g} s of training each "
              f"(same seed and data; loss = L1 + mel-STFT, mean of the last 5 logged steps)")
        print(f"{'head':<9} {'device':<6} {'output layer':>13} {'all params':>11} {'clips/s':>9} {'steps':>6} "
              f"{'loss':>8} {'SI-SNR':>8}")
        for device in devices(args.devices):
            for kind in kinds:
                cfg = config.resolve(args.head_preset, None, [*args.overrides, f"hypernet.head_kind={kind}"])
                model = build(cfg)
                out_params = model.head.output_layer_parameters()
                total = sum(p.numel() for p in model.parameters() if p.requires_grad)
                del model
                # A step budget far beyond the time budget: the schedule follows the clock.
                records = train_run(cfg, clips_for(cfg), device, steps=10**6, seconds=args.budget)
                rate = throughput(records, args.warmup)
                tail = records[-5:]
                loss = float(np.mean([r["loss"] for r in tail])) if tail else float("nan")
                sisnr = float(np.mean([r["sisnr"] for r in tail])) if tail else float("nan")
                print(f"{kind:<9} {device:<6} {out_params:>13,} {total:>11,} {rate:>9.2f} {len(records):>6} "
                      f"{loss:>8.4f} {sisnr:>8.2f}", flush=True)
                results["heads"].append({"head_kind": kind, "device": device, "output_layer_parameters": out_params,
                                         "trainable_parameters": total, "clips_per_s": rate, "steps": len(records),
                                         "loss": loss, "sisnr": sisnr, "budget_s": args.budget})
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
