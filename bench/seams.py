"""Long sounds: how the budget is shared across chunks, and whether the seams between chunks show.

Builds one long signal from real recordings (the files given, or every audio file in a folder, in
name order: mono, resampled to --sr, leading and trailing silence trimmed, each peak-normalised,
concatenated and repeated until --duration seconds), fits it as ``hyperaudio fit --inr NAME`` does
(no preset: the auto recipe, ``config.resolve({}, NAME, overrides)`` and ``fit.fit``), renders it
at the native rate and prints:

- overall SI-SNR and LSD (``hyperaudio.metrics``), and PESQ for ``--metrics ...,pesq``;
- per chunk: its span, its SI-SNR as rendered and that of its own (unfaded) output;
- how the budget was shared: the race, then seconds and steps per chunk group (from the fit
  callback's FitProgress: group, step, elapsed);
- the **seam error**: the reconstruction error in windows of +-``--window-ms`` around the centre of
  each chunk overlap, against windows of the same width tiled over the chunks' interiors (all
  windows at least 2 windows away from any overlap). Per window: the error level in dB relative to
  the whole signal's RMS, the local segmental SNR (windows of silence skipped), and the error above
  ``--hf-hz`` (a click is broadband, so it shows there) in dB relative to the signal's RMS;
- the edge profile: each chunk's own output error by distance from its ends, relative to its
  interior (INRs are often worst at t = +-1, which the crossfade has to hide);
- with ``--paired``, a content-matched control: the network is fitted twice, on the signal and on
  the signal shifted by half a chunk hop, so that every seam of one fit lies mid-chunk in the
  other. At each seam the error of the fit with the seam there is compared with the error of the
  fit without one, over the same samples (d dB; > 0: the seam is worse). The mean of d over both
  fits' seams cancels any overall difference between the two fits;
- the same seam figures for other crossfade shapes blended here from the chunks' own outputs
  (``--fades``): ``linear`` is render.py's shape before this change (checked against it),
  ``cosine`` a raised-cosine (Hann) one, ``cut`` a hard switch at the overlap's centre.

    python bench/seams.py /tmp/bd/real/speech_alsa_front_center.wav ... --inrs rff,siren --seconds 180
    python bench/seams.py FOLDER --inrs rff --seconds 120 --save out/seams --json out/seams.json
    python bench/seams.py FOLDER --load out/seams/rff.hya     # analyse a saved fit again, no fitting
    python bench/seams.py FILES... --inrs rff,siren --seconds 180 --paired   # + the shifted control fit

Run it niced on a shared machine: ``nice -n 15 python bench/seams.py ...``. The budget is wall
clock, so a loaded machine gets fewer steps: the step counts are printed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from hyperaudio import audio, config, fit, hya, metrics, render
from hyperaudio.functional import call_batched

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif"}
FADES = ("linear", "cosine", "cut")


# ---------------------------------------------------------------- the signal

def source_files(paths: list[Path]) -> list[Path]:
    files = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise SystemExit(f"no such file or folder: {p}")
    if not files:
        raise SystemExit("no audio files found")
    return files


def long_signal(files: list[Path], sr: int, duration: float) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """The files trimmed, normalised and concatenated (repeated) to ``duration`` s; and where each starts."""
    pieces = []
    for f in files:
        x, rate = audio.load(f)
        x = audio.resample(audio.to_mono(x), rate, sr)[0]
        loud = np.flatnonzero(np.abs(x) > 0.01 * np.abs(x).max())
        if loud.size == 0:
            continue
        x = x[loud[0]: loud[-1] + 1].astype(np.float64)
        fade = min(int(0.005 * sr), len(x) // 2)  # 5 ms in and out: no click where two recordings meet
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
        x[:fade] *= ramp
        x[len(x) - fade:] *= ramp[::-1]
        pieces.append((f.name, 0.9 * x / np.abs(x).max()))
    if not pieces:
        raise SystemExit("every file is silent")
    want, out, where, total = int(round(duration * sr)), [], [], 0
    while total < want:
        for name, x in pieces:
            where.append((name, total / sr))
            out.append(x)
            total += len(x)
            if total >= want:
                break
    return np.concatenate(out)[:want].astype(np.float32), where


# ---------------------------------------------------------------- analysis

def chunk_outputs(inr) -> list[np.ndarray]:
    """Each chunk's own output over its whole span (first channel, first head, no crossfade)."""
    import torch

    outs = []
    with torch.no_grad():
        for k, (start, length) in enumerate(inr.chunks):
            j = torch.arange(length, dtype=torch.float64)  # render.evaluate's grid, to the last bit
            t = (-1 + 2 * j / max(length - 1, 1)).to(torch.float32).unsqueeze(-1)
            y = call_batched(inr.module, inr.chunk_params(k), t)  # [C, L, H]
            outs.append(y[0, :, 0].double().numpy() * inr.gain)
    return outs


def fade_weight(shape: str, span: render.ChunkSpan, pos: np.ndarray) -> np.ndarray:
    """Weights of one chunk at integer positions ``pos`` for a crossfade ``shape`` (normalised later)."""
    w = np.ones_like(pos, dtype=np.float64)
    for overlap, u in ((span.prev_overlap, (pos - span.start + 1) / (span.prev_overlap + 1)),
                       (span.next_overlap, (span.end - pos + 1) / (span.next_overlap + 1))):
        if overlap <= 0:
            continue
        u = np.clip(u, 0, 1)
        if shape == "linear":
            v = u
        elif shape == "cosine":
            v = 0.5 - 0.5 * np.cos(np.pi * u)
        elif shape == "cut":
            v = (u >= 0.5).astype(np.float64) + 1e-9
        else:
            raise ValueError(shape)
        w = np.minimum(w, v)
    return w


def blend(inr, outs: list[np.ndarray], shape: str) -> np.ndarray:
    n = inr.num_samples
    acc, wsum = np.zeros(n), np.zeros(n)
    for span, y in zip(render.chunk_spans(inr.chunks), outs):
        pos = np.arange(span.start, span.start + span.length)
        w = fade_weight(shape, span, pos)
        acc[pos] += w * y
        wsum[pos] += w
    return acc / np.maximum(wsum, 1e-12)


def highpass(x: np.ndarray, sr: float, hz: float) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    return sosfiltfilt(butter(6, hz, "highpass", fs=sr, output="sos"), x)


def seam_centres(inr) -> list[tuple[int, int, float]]:
    """(first, last, centre) sample of each overlap region."""
    out = []
    for a, b in zip(inr.chunks, inr.chunks[1:]):
        first, last = b[0], a[0] + a[1] - 1
        out.append((first, last, (first + last) / 2))
    return out


def windows(inr, half: int) -> tuple[list[int], list[int]]:
    """Centres of the seam windows and of the interior windows (2 windows clear of any overlap)."""
    n, width = inr.num_samples, 2 * half
    seams = seam_centres(inr)
    seam = [int(round(c)) for _, _, c in seams]
    interior = []
    for c in range(half + width, n - half - width, width):
        if all(c + half + 2 * width < first or c - half - 2 * width > last for first, last, _ in seams):
            interior.append(c)
    return seam, interior


def window_stats(x: np.ndarray, y: np.ndarray, centres: list[int], half: int, sr: float, hf_hz: float) -> dict:
    e = y - x
    ref = float(np.mean(x ** 2)) + 1e-20
    e_hf, x_hf = highpass(e, sr, hf_hz), highpass(x, sr, hf_hz)
    rows = []
    for c in centres:
        s = slice(max(0, c - half), c + half)
        ex, ee, eh = float(np.mean(x[s] ** 2)), float(np.mean(e[s] ** 2)) + 1e-20, float(np.mean(e_hf[s] ** 2)) + 1e-20
        rows.append({
            "centre_s": c / sr,
            "err_db": 10 * math.log10(ee / ref),  # error level re the whole signal's power
            # local SNR; windows 40 dB below the signal's level are silence, left out
            "seg_snr_db": 10 * math.log10(ex / ee) if ex > 1e-4 * ref else None,
            "hf_err_db": 10 * math.log10(eh / ref),
            "hf_sig_db": 10 * math.log10(float(np.mean(x_hf[s] ** 2)) / ref + 1e-20),
            "max_jump": float(np.max(np.abs(np.diff(e[s])))) if s.stop - s.start > 1 else 0.0,
        })
    return rows


def summarise(rows: list[dict]) -> dict:
    def med(key):
        v = [r[key] for r in rows if r[key] is not None]
        return float(np.median(v)) if v else float("nan")

    def pct(key, q):
        v = [r[key] for r in rows if r[key] is not None]
        return float(np.percentile(v, q)) if v else float("nan")

    return {"windows": len(rows), "err_db": med("err_db"), "err_db_p90": pct("err_db", 90),
            "err_db_max": max((r["err_db"] for r in rows), default=float("nan")),
            "seg_snr_db": med("seg_snr_db"), "seg_snr_db_p10": pct("seg_snr_db", 10),
            "hf_err_db": med("hf_err_db"), "hf_err_db_p90": pct("hf_err_db", 90),
            "max_jump": med("max_jump")}


def edge_profile(inr, x: np.ndarray, outs: list[np.ndarray]) -> dict:
    """Each chunk's own error power by distance (samples) from its nearer end, in dB re its interior.

    Only ends that meet a neighbour count (the sound's own first and last samples are not seams)."""
    bins = [(0, 32), (32, 128), (128, 512), (512, 1024), (1024, 4096)]
    spans = render.chunk_spans(inr.chunks)
    acc = {b: [] for b in bins}
    for span, y in zip(spans, outs):
        e2 = (y - x[span.start: span.start + span.length]) ** 2
        length = span.length
        interior = e2[length // 4: 3 * length // 4].mean() + 1e-20
        for lo, hi in bins:
            parts = []
            if span.prev_overlap:
                parts.append(e2[lo:hi])
            if span.next_overlap:
                parts.append(e2[length - hi: length - lo])
            if parts:
                acc[(lo, hi)].append(10 * math.log10(np.concatenate(parts).mean() / interior + 1e-20))
    return {f"{lo}-{hi}": float(np.median(v)) if v else float("nan") for (lo, hi), v in acc.items()}


def overlap_disagreement(inr, x: np.ndarray, outs: list[np.ndarray]) -> list[dict]:
    """In each overlap: each side's own error and the two chunks' difference, dB re the signal power."""
    ref = float(np.mean(x ** 2)) + 1e-20
    rows = []
    for k, (first, last, _) in enumerate(seam_centres(inr)):
        a0, b0 = inr.chunks[k][0], inr.chunks[k + 1][0]
        ya, yb = outs[k][first - a0: last - a0 + 1], outs[k + 1][first - b0: last - b0 + 1]
        xs = x[first: last + 1]
        db = lambda v: 10 * math.log10(float(np.mean(v ** 2)) / ref + 1e-20)  # noqa: E731
        rows.append({"seam": k, "left_err_db": db(ya - xs), "right_err_db": db(yb - xs), "diff_db": db(ya - yb),
                     "signal_db": db(xs)})
    return rows


def paired(src: np.ndarray, shift: int, n: int, inr_a, inr_b, sr: int, half: int, hf_hz: float) -> dict:
    """Seam windows of fit A (``src[:n]``) against the same samples in fit B (``src[shift:shift + n]``),
    where they are mid-chunk, and the other way round. Positions are in ``src``'s samples."""
    src = src.astype(np.float64)
    ref = float(np.mean(src[:n] ** 2)) + 1e-20
    errs = {}
    for key, inr, off in (("A", inr_a, 0), ("B", inr_b, shift)):
        y = render.render(inr, sr)[0].astype(np.float64)[:n]
        e = np.zeros_like(src)
        e[off: off + n] = y - src[off: off + n]
        errs[key] = (e, highpass(e, sr, hf_hz), off)
    rows = []
    for seam_key, inr, other in (("A", inr_a, "B"), ("B", inr_b, "A")):
        off, other_off = errs[seam_key][2], errs[other][2]
        for first, last, c in seam_centres(inr):
            g = int(round(c)) + off
            if not (other_off + 3 * half <= g <= other_off + n - 3 * half):
                continue  # the other fit does not cover this window
            s = slice(g - half, g + half)
            db = lambda v: 10 * math.log10(float(np.mean(v[s] ** 2)) / ref + 1e-20)  # noqa: E731
            rows.append({"seam_in": seam_key, "centre_s": g / sr, "signal_db": db(src),
                         "seam_err_db": db(errs[seam_key][0]), "mid_err_db": db(errs[other][0]),
                         "seam_hf_db": db(errs[seam_key][1]), "mid_hf_db": db(errs[other][1])})
    for r in rows:
        r["d_db"], r["d_hf_db"] = r["seam_err_db"] - r["mid_err_db"], r["seam_hf_db"] - r["mid_hf_db"]

    def mean_of_means(key):
        means = [np.mean([r[key] for r in rows if r["seam_in"] == k]) for k in "AB"
                 if any(r["seam_in"] == k for r in rows)]
        return float(np.mean(means)) if means else float("nan")

    return {"shift_samples": shift, "rows": rows, "d_db": mean_of_means("d_db"), "d_hf_db": mean_of_means("d_hf_db"),
            "worse": sum(r["d_db"] > 0 for r in rows), "seams": len(rows)}


def print_paired(label: str, p: dict) -> None:
    print(f"\n### {label}: paired control (fit B shifted by {p['shift_samples']} samples)")
    print("| seam of | at s | signal dB | error dB, seam fit | error dB, mid-chunk fit | d dB | d HF dB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in p["rows"]:
        print(f"| {r['seam_in']} | {r['centre_s']:.2f} | {r['signal_db']:.1f} | {r['seam_err_db']:.1f} | "
              f"{r['mid_err_db']:.1f} | {r['d_db']:+.1f} | {r['d_hf_db']:+.1f} |")
    print(f"mean d over both fits' seams: {p['d_db']:+.2f} dB (HF {p['d_hf_db']:+.2f} dB); "
          f"seam worse than mid-chunk at {p['worse']}/{p['seams']} seams")


# ---------------------------------------------------------------- fitting

def fit_one(x: np.ndarray, sr: int, inr_name: str, seconds: float, overrides: list[str]):
    cfg = config.resolve({}, inr_name, [f"fit.seconds={seconds}", *overrides])
    groups: dict[int, dict] = {}

    def watch(p: fit.FitProgress):
        g = groups.setdefault(p.group, {"group": p.group, "members": list(p.members), "first_elapsed": p.elapsed})
        g.update(steps=p.step, last_elapsed=p.elapsed, sisnr=p.sisnr, groups=p.groups)

    t0 = time.perf_counter()
    inr = fit.fit(x[None], sr, cfg, progress=False, callback=watch)
    wall = time.perf_counter() - t0
    race = (inr.info.get("recipe") or {}).get("race_seconds", 0.0)
    # The callback comes every fit.eval_every steps: a group ends where the next one's first report
    # (step 1) comes, and the last group where the fit does; its steps are the rest of the total.
    order = sorted(groups)
    budget, previous_end = [], race
    for i, gi in enumerate(order):
        g = groups[gi]
        last = i == len(order) - 1
        end = inr.info["seconds"] if last else groups[order[i + 1]]["first_elapsed"]
        if last:
            g["steps"] = inr.info["steps"] - sum(groups[o]["steps"] for o in order[:-1])
        g["seconds"] = end - previous_end
        previous_end = end
        budget.append(g)
    return inr, {"wall_s": wall, "race_s": race, "groups": budget, "info": inr.info}


# ---------------------------------------------------------------- report

def analyse(inr, x: np.ndarray, sr: int, args) -> dict:
    y = render.render(inr, sr)[0].astype(np.float64)[: len(x)]
    names = [m for m in args.metrics.split(",") if m]
    overall = metrics.evaluate(x[None], y[None].astype(np.float32), sr, names)
    outs = chunk_outputs(inr)
    half = int(round(args.window_ms * 1e-3 * sr))
    seam_c, interior_c = windows(inr, half)
    xd = x.astype(np.float64)
    chunks = []
    for k, ((start, length), yk) in enumerate(zip(inr.chunks, outs)):
        s = slice(start, start + length)
        chunks.append({"chunk": k, "start_s": start / sr, "end_s": (start + length) / sr,
                       "rms_db": 10 * math.log10(float(np.mean(xd[s] ** 2)) + 1e-20),
                       "rendered_si_snr": metrics.basic.si_snr(xd[s], y[s]),
                       "own_si_snr": metrics.basic.si_snr(xd[s], yk)})
    fades = {}
    for shape in args.fades.split(","):
        yb = blend(inr, outs, shape)
        seam_rows = window_stats(xd, yb, seam_c, half, sr, args.hf_hz)
        fades[shape] = {"si_snr": metrics.basic.si_snr(xd, yb), "seams": summarise(seam_rows),
                        "interior": summarise(window_stats(xd, yb, interior_c, half, sr, args.hf_hz)),
                        "per_seam": seam_rows}
    rendered_rows = window_stats(xd, y, seam_c, half, sr, args.hf_hz)
    result = {
        "overall": overall, "chunks": chunks,
        "seams_rendered": summarise(rendered_rows),
        "interior_rendered": summarise(window_stats(xd, y, interior_c, half, sr, args.hf_hz)),
        "per_seam_rendered": rendered_rows, "fades": fades,
        "edge_profile_db": edge_profile(inr, xd, outs),
        "overlaps": overlap_disagreement(inr, xd, outs),
        "overlap_samples": [s.next_overlap + 1 for s in render.chunk_spans(inr.chunks)[:-1]],
    }
    # The blend here must reproduce render.py's crossfade for the shape render.py uses.
    result["render_matches"] = {shape: float(np.max(np.abs(blend(inr, outs, shape) - y)))
                                for shape in args.fades.split(",")}
    return result


def print_report(label: str, r: dict, budget: dict | None, window_ms: float, hf_hz: float) -> None:
    print(f"\n## {label}")
    if budget:
        info = budget["info"]
        rec = info.get("recipe") or {}
        print(f"fit: {budget['wall_s']:.1f} s wall, {info['steps']} steps; race {budget['race_s']:.1f} s "
              f"(lr {rec.get('lr')}, time scale {rec.get('time_scale')}, {rec.get('race_steps')} batched steps, "
              f"restarts {rec.get('restarts')})")
        print("| group | chunks | steps | seconds | s/step | last SI-SNR |")
        print("|---:|---|---:|---:|---:|---:|")
        for g in budget["groups"]:
            print(f"| {g['group'] + 1}/{g['groups']} | {g['members'][0]}–{g['members'][-1]} ({len(g['members'])}) "
                  f"| {g['steps']} | {g['seconds']:.1f} | {g['seconds'] / max(g['steps'], 1):.3f} | {g['sisnr']:.2f} |")
    print("overall: " + "  ".join(f"{k} {v:.3f}" for k, v in r["overall"].items())
          + f"   (render = blend: " + ", ".join(f"{k} {v:.1e}" for k, v in r["render_matches"].items()) + ")")
    print("\n| chunk | span s | RMS dB | SI-SNR rendered | SI-SNR own |")
    print("|---:|---|---:|---:|---:|")
    for c in r["chunks"]:
        print(f"| {c['chunk']} | {c['start_s']:.2f}–{c['end_s']:.2f} | {c['rms_db']:.1f} | "
              f"{c['rendered_si_snr']:.2f} | {c['own_si_snr']:.2f} |")
    print(f"\nwindows of ±{window_ms:g} ms; error dB re the signal's RMS (lower is better); "
          f"HF = error above {hf_hz:g} Hz; segSNR median (10th percentile)")
    print("| where | fade | windows | error dB (p90) | segSNR dB (p10) | HF error dB (p90) | SI-SNR whole |")
    print("|---|---|---:|---:|---:|---:|---:|")

    def row(where, fade, s, whole=""):
        print(f"| {where} | {fade} | {s['windows']} | {s['err_db']:.1f} ({s['err_db_p90']:.1f}) | "
              f"{s['seg_snr_db']:.1f} ({s['seg_snr_db_p10']:.1f}) | {s['hf_err_db']:.1f} ({s['hf_err_db_p90']:.1f}) | {whole} |")

    row("mid-chunk", "rendered", r["interior_rendered"])
    row("seams", "rendered", r["seams_rendered"])
    for shape, f in r["fades"].items():
        row("seams", shape, f["seams"], f"{f['si_snr']:.2f}")
    print("\nper seam (rendered): " + "; ".join(
        f"{s['centre_s']:.2f} s err {s['err_db']:.1f} HF {s['hf_err_db']:.1f}" for s in r["per_seam_rendered"]))
    print("overlaps (own outputs, dB re signal RMS): " + "; ".join(
        f"#{o['seam']} sig {o['signal_db']:.1f} L {o['left_err_db']:.1f} R {o['right_err_db']:.1f} "
        f"L-R {o['diff_db']:.1f}" for o in r["overlaps"]))
    print("edge profile (own output error power by distance from a seam end, dB re mid-chunk): "
          + "  ".join(f"{k}: {v:+.1f}" for k, v in r["edge_profile_db"].items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", type=Path, nargs="+", help="audio files or folders, concatenated in order")
    ap.add_argument("--inrs", default="rff,siren")
    ap.add_argument("--seconds", type=float, default=180.0, help="fit.seconds per fit")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of audio (files repeated to fill)")
    ap.add_argument("--sr", type=int, default=22050)
    ap.add_argument("--window-ms", type=float, default=25.0, help="half-width of each window")
    ap.add_argument("--hf-hz", type=float, default=4000.0, help="the click check looks above this")
    ap.add_argument("--metrics", default="si-snr,lsd")
    ap.add_argument("--fades", default=",".join(FADES))
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config overrides")
    ap.add_argument("--save", type=Path, help="write NAME.hya and NAME.wav renders (and the source) here")
    ap.add_argument("--load", type=Path, action="append", default=[], help="analyse this .hya instead of fitting")
    ap.add_argument("--paired", action="store_true",
                    help="also fit the signal shifted by half a chunk hop: a content-matched control")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import torch

    from hyperaudio.runtime import keep_freed_memory

    keep_freed_memory()
    files = source_files(args.paths)
    n = int(round(args.duration * args.sr))
    cfg0 = config.resolve({}, (args.inrs.split(",") or ["rff"])[0], args.overrides)
    layout = fit.chunk_layout(n, int(cfg0["fit"]["chunk_samples"]), int(cfg0["fit"]["overlap_samples"]))
    shift = (layout[1][0] - layout[0][0]) // 2 if len(layout) > 1 else 0
    src, where = long_signal(files, args.sr, (n + (shift if args.paired else 0)) / args.sr)
    x = src[:n]
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; signal {len(x) / args.sr:.2f} s at "
          f"{args.sr} Hz from " + ", ".join(f"{name} @{s:.2f}s" for name, s in where))
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        import soundfile as sf

        sf.write(str(args.save / "source.wav"), src, args.sr)
    results = []
    runs = [(str(p), None) for p in args.load] or [(name, name) for name in args.inrs.split(",") if name]
    half = int(round(args.window_ms * 1e-3 * args.sr))
    for label, name in runs:
        budget = None
        if name is None:
            inr = hya.load(label)
            if inr.num_samples != len(x):
                raise SystemExit(f"{label} holds {inr.num_samples} samples, the signal has {len(x)}")
        else:
            inr, budget = fit_one(x, args.sr, name, args.seconds, args.overrides)
            if args.save:
                hya.save(inr, args.save / f"{name}.hya")
        r = analyse(inr, x, args.sr, args)
        if args.save and name:
            import soundfile as sf

            sf.write(str(args.save / f"{name}.wav"), render.render(inr, args.sr)[0], args.sr)
        print_report(label, r, budget, args.window_ms, args.hf_hz)
        if args.paired and name and shift:
            xb = src[shift: shift + n]
            inr_b, budget_b = fit_one(xb, args.sr, name, args.seconds, args.overrides)
            if args.save:
                hya.save(inr_b, args.save / f"{name}-shifted.hya")
            r_b = analyse(inr_b, xb, args.sr, args)
            print_report(f"{label}, shifted by {shift} samples", r_b, budget_b, args.window_ms, args.hf_hz)
            r["shifted"] = {"budget": budget_b, **r_b}
            r["paired"] = paired(src, shift, n, inr, inr_b, args.sr, half, args.hf_hz)
            print_paired(label, r["paired"])
        sys.stdout.flush()
        results.append({"label": label, "budget": budget, **r})
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
