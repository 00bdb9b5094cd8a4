"""Rate-distortion of hyperaudio's compression against Opus, MP3 and FLAC (issue #17).

    python bench/rate_distortion.py FOLDER [--rates 6,12,24,48,96] [--seconds 90] [--jobs 2] [-o out/rd]

Every audio file under FOLDER is mixed to mono, resampled to --sr (22.05 kHz) and cropped to
--samples (1.5 s) after its leading silence, as bench/fit.py does. For each clip and each rate:

* ``hyperaudio``: ``hyperaudio.compress`` (network size and bit depth for the budget, fit, QAT,
  zstd), decoded as ``render`` does: a Siamese SIREN's heads denoise it;
* ``hyperaudio-head0``: the same file decoded without the denoiser (head 0), and
  ``hyperaudio-denoise``: with the paper's denoiser (noise_alpha 1) whatever the encoder chose, to
  measure what the denoiser does after quantisation;
* ``opus`` and ``mp3`` through soundfile/libsndfile: the strongest setting whose file stays
  within the budget (searched over ``compression_level``; where even the lowest is over, its
  real rate is reported). Opus runs at 24 kHz (it has no 22.05 kHz mode), MP3 at 22.05 kHz;
* ``flac``: lossless, once per clip.

Every file's rate is its real size over the clip's duration. Lossy outputs are aligned to the
reference by cross-correlation (codec delay) before scoring. Metrics: PESQ-WB (clips whose name
contains --speech), ViSQOL v3 audio mode, LSD, SI-SNR, plus encode and decode seconds; for
hyperaudio also the seconds to decode at 48 kHz (a rate the file was never fitted at).

Writes ``results.csv``, ``rate_distortion.png`` (quality against kb/s, one line per codec, the
mean over clips) and the compressed files under ``files/``.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from bench_clips import clips

FIELDS = ["clip", "kind", "codec", "target_kbps", "kbps", "bytes", "within_budget", "pesq", "visqol", "lsd",
          "si_snr", "encode_s", "decode_s", "decode48_s", "bits", "parameters", "float_si_snr", "quant_si_snr",
          "noise_alpha"]
CODECS = ("hyperaudio", "opus", "mp3", "flac")


def align(ref: np.ndarray, est: np.ndarray, max_lag: int = 4096) -> np.ndarray:
    """``est`` shifted by the lag that best matches ``ref`` (a codec's delay), cut to its length."""
    n = len(ref)
    est = np.pad(est, (0, max(0, n + max_lag - len(est))))
    spectrum = np.fft.rfft(est, 2 * len(est)) * np.conj(np.fft.rfft(ref, 2 * len(est)))
    corr = np.fft.irfft(spectrum)
    lags = np.r_[corr[: max_lag + 1], corr[-max_lag:]]
    lag = int(np.argmax(lags))
    lag = lag if lag <= max_lag else lag - len(lags)
    return np.roll(est, -lag)[:n] if lag < 0 else est[lag : lag + n]


def score(ref: np.ndarray, est: np.ndarray, sr: int, speech: bool) -> dict:
    from hyperaudio import metrics

    names = ["visqol", "lsd", "si-snr"] + (["pesq"] if speech else [])
    values = metrics.evaluate(ref, est[: len(ref)], sr, names)
    return {"pesq": values.get("pesq", float("nan")), "visqol": values["visqol"], "lsd": values["lsd"],
            "si_snr": values["si-snr"]}


# -- the codecs -----------------------------------------------------------------------------------
def _sf_encode(x: np.ndarray, sr: int, fmt: str, subtype: str, level: float | None) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    kwargs = {} if level is None else {"compression_level": level}
    sf.write(buf, x, sr, format=fmt, subtype=subtype, **kwargs)
    return buf.getvalue()


def _sf_decode(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    y, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return y.mean(1), rate


MP3_RATES = (22050, 16000, 11025, 8000)  # MPEG-2 and 2.5: lower rates reach lower bitrates
MAX_LEVEL = {"opus": 1.0, "mp3": 0.99}  # libsndfile refuses an MP3 compression_level of 1


def libsndfile_codec(x: np.ndarray, sr: int, codec: str, budget: int | None) -> tuple[bytes, float, int]:
    """``(file, encode seconds, rate it was coded at)``: the lowest compression_level (the best
    quality) whose file is within ``budget`` bytes, by bisection (size falls as the level rises).
    MP3 steps its sample rate down (22.05 to 8 kHz) where even its strongest level is over."""
    from hyperaudio import audio

    start = time.perf_counter()
    if codec == "flac":
        return _sf_encode(x, sr, "FLAC", "PCM_16", None), time.perf_counter() - start, sr
    fmt, subtype = {"opus": ("OGG", "OPUS"), "mp3": ("MP3", "MPEG_LAYER_III")}[codec]
    for rate in ((24000,) if codec == "opus" else MP3_RATES):  # Opus has no 22.05 kHz mode
        y = audio.resample(x[None], sr, rate)[0] if rate != sr else x
        low, high = 0.0, MAX_LEVEL[codec]
        best = _sf_encode(y, rate, fmt, subtype, high)
        if len(best) <= budget:
            break
    if len(best) <= budget:
        for _ in range(12):
            mid = (low + high) / 2
            data = _sf_encode(y, rate, fmt, subtype, mid)
            if len(data) <= budget:
                best, high = data, mid
            else:
                low = mid
    return best, time.perf_counter() - start, rate


def run_libsndfile(name: str, x: np.ndarray, sr: int, codec: str, kbps: float | None, speech: bool) -> dict:
    from hyperaudio import audio, compress

    duration = len(x) / sr
    budget = compress.budget_bytes(kbps, duration) if kbps else None
    data, encode_s, rate = libsndfile_codec(x, sr, codec, budget)
    start = time.perf_counter()
    y, got = _sf_decode(data)
    y = audio.resample(y[None], got, sr)[0] if got != sr else y
    decode_s = time.perf_counter() - start
    y = align(x, y)
    return {"clip": name, "kind": "speech" if speech else "music", "codec": codec, "target_kbps": kbps or "",
            "kbps": 8 * len(data) / duration / 1000, "bytes": len(data),
            "within_budget": budget is None or len(data) <= budget, **score(x, y, sr, speech),
            "encode_s": encode_s, "decode_s": decode_s, "decode48_s": "", "bits": "", "parameters": ""}


def run_hyperaudio(task) -> list[dict]:
    """Compress one clip at one rate; rows for the denoised and the raw decode."""
    name, x, sr, kbps, seconds, speech, folder = task
    import torch

    torch.set_num_threads(1)  # one worker per core: two threads each thrash a shared 2-core machine
    from hyperaudio import compress, hya, render

    duration = len(x) / sr
    start = time.perf_counter()
    try:
        result = compress.compress(x[None], sr, kbps, seconds=seconds)
    except compress.BudgetError as exc:
        print(f"  {name} {kbps} kb/s: {exc}", file=sys.stderr)
        return []
    encode_s = time.perf_counter() - start
    path = Path(folder) / f"{name}_{kbps:g}kbps.hya"
    hya.save(result.inr, path, result.packed)
    start = time.perf_counter()
    inr = hya.load(path)
    y = render.render(inr, sr)[0]
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    render.render(inr, 48000)
    decode48_s = time.perf_counter() - start
    start = time.perf_counter()
    raw = render.evaluate(inr, torch.arange(inr.num_samples, dtype=torch.float64))[0, 0].numpy()
    raw_s = time.perf_counter() - start
    denoised = None
    if hasattr(inr.module, "noise_alpha"):
        inr.module.noise_alpha = 1.0
        denoised = render.render(inr, sr)[0]
    size = path.stat().st_size
    common = {"clip": name, "kind": "speech" if speech else "music", "target_kbps": kbps,
              "kbps": 8 * size / duration / 1000, "bytes": size,
              "within_budget": size <= compress.budget_bytes(kbps, duration), "encode_s": encode_s,
              "bits": result.bits, "parameters": result.plan.parameters,
              "float_si_snr": result.info["sisnr_float"], "quant_si_snr": result.info["sisnr"],
              "noise_alpha": result.info.get("denoise", "")}
    rows = [{**common, "codec": "hyperaudio", **score(x, y, sr, speech), "decode_s": decode_s,
             "decode48_s": decode48_s}]
    if denoised is not None:
        rows.append({**common, "codec": "hyperaudio-head0", **score(x, raw, sr, speech), "decode_s": raw_s,
                     "decode48_s": ""})
        rows.append({**common, "codec": "hyperaudio-denoise", **score(x, denoised, sr, speech), "decode_s": "",
                     "decode48_s": ""})
    print(f"  {name} {kbps:g} kb/s: {size:,} bytes, {result.bits} bits, SI-SNR {rows[0]['si_snr']:.2f} dB, "
          f"PESQ {rows[0]['pesq']:.2f}", file=sys.stderr, flush=True)
    return rows


# -- the plot -------------------------------------------------------------------------------------
def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("pesq", "PESQ-WB (speech clips)", "higher"), ("visqol", "ViSQOL (audio mode)", "higher"),
              ("lsd", "log-spectral distance", "lower"), ("si_snr", "SI-SNR (dB)", "higher")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    codecs = [c for c in ("hyperaudio", "hyperaudio-head0", "hyperaudio-denoise", "opus", "mp3", "flac")
              if any(r["codec"] == c for r in rows)]
    for ax, (key, title, better) in zip(axes.flat, panels):
        for codec in codecs:
            mine = [r for r in rows if r["codec"] == codec and np.isfinite(float(r[key]))]
            if not mine:
                continue
            targets = sorted({r["target_kbps"] for r in mine}, key=lambda v: float(v or 1e9))
            xs = [np.mean([float(r["kbps"]) for r in mine if r["target_kbps"] == t]) for t in targets]
            ys = [np.mean([float(r[key]) for r in mine if r["target_kbps"] == t]) for t in targets]
            style = dict(marker="*", markersize=12, linestyle="none") if codec == "flac" else dict(marker="o")
            if codec.startswith("hyperaudio-"):
                style.update(linestyle="--", alpha=0.6, marker=".")
            ax.plot(xs, ys, label=codec, **style)
        ax.set_xscale("log")
        ax.set_xlabel("kb/s (real file size / duration)")
        ax.set_title(f"{title}, {better} is better")
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend()
    fig.suptitle("hyperaudio compress vs Opus, MP3, FLAC (mean over clips)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("-o", "--output", type=Path, default=Path("out/rate_distortion"))
    ap.add_argument("--rates", default="6,12,24,48,96", help="kb/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=90.0, help="hyperaudio's fit budget per clip and rate")
    ap.add_argument("--codecs", default=",".join(CODECS))
    ap.add_argument("--sr", type=int, default=22050)
    ap.add_argument("--samples", type=int, default=32768)
    ap.add_argument("--limit", type=int, default=100, help="at most this many clips")
    ap.add_argument("--speech", default="speech", help="clips whose name contains this get PESQ")
    ap.add_argument("--jobs", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                    help="hyperaudio compressions run in parallel (one torch thread each)")
    args = ap.parse_args()
    if not args.folder.is_dir():
        ap.error(f"{args.folder}: not a folder")
    rates = [float(r) for r in args.rates.split(",")]
    codecs = [c.strip() for c in args.codecs.split(",")]
    files = args.output / "files"
    files.mkdir(parents=True, exist_ok=True)
    data = [(path.stem, x) for path, x in clips(args.folder, args.sr, args.samples, args.limit)]
    if not data:
        ap.error(f"{args.folder}: no audio files")
    rows: list[dict] = []
    for name, x in data:
        speech = args.speech in name
        for codec in ("opus", "mp3"):
            if codec in codecs:
                rows += [run_libsndfile(name, x, args.sr, codec, k, speech) for k in rates]
        if "flac" in codecs:
            rows.append(run_libsndfile(name, x, args.sr, "flac", None, speech))
    if "hyperaudio" in codecs:
        tasks = [(name, x, args.sr, k, args.seconds, args.speech in name, str(files)) for name, x in data for k in rates]
        print(f"hyperaudio: {len(tasks)} compressions of {args.seconds:g} s, {args.jobs} at a time", file=sys.stderr)
        import multiprocessing

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for result in pool.map(run_hyperaudio, tasks):
                rows += result
    out_csv = args.output / "results.csv"
    with open(out_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()})
    plot(rows, args.output / "rate_distortion.png")
    print(f"wrote {out_csv} and {args.output / 'rate_distortion.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
