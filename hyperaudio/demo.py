"""The main job (``make run``): fit the bundled demo sound, render it at three rates, report.

The bundled ``demo.flac`` is 1.5 s (32768 samples) of synthetic English speech made with
espeak-ng at 22.05 kHz: the clip length and rate of the HyperSound/FewSound experiments.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import resources
from pathlib import Path

from . import audio, config, fit, hya, metrics, render, report
from .audio import atomic_path

RENDER_RATES = (8000, 22050, 48000)


def demo_sound() -> Path:
    return Path(str(resources.files("hyperaudio") / "data" / "demo.flac"))


def run_demo(out: Path, inr: str = "kan", seconds: float = 240.0, source: str | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    source_path = Path(source) if source else demo_sound()
    x, sr = audio.load(source_path)
    overrides = [f"fit.seconds={seconds}", "fit.steps=100000000", "fit.target_sisnr=30"]
    cfg = config.resolve(config.quick_preset_for(inr), inr, overrides)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    log(f"[1/4] fitting {source_path.name} ({x.shape[1] / sr:.2f} s at {sr} Hz) with {inr}, budget {seconds:g} s")
    t0 = time.perf_counter()
    model = fit.fit(x, sr, cfg)
    fit_seconds = time.perf_counter() - t0
    hya_path = hya.save(model, out / "demo.hya")
    log(f"[2/4] saved {hya_path} ({hya_path.stat().st_size / 1024:.0f} KiB)")
    rendered = {}
    for rate in RENDER_RATES:
        t0 = time.perf_counter()
        y = render.render(model, rate)
        path = audio.save(out / f"demo_{rate}.wav", y, rate)
        rendered[rate] = {"file": path.name, "seconds": round(time.perf_counter() - t0, 3), "samples": y.shape[1]}
        log(f"[3/4] rendered {path} at {rate} Hz in {rendered[rate]['seconds']:.2f} s")
    native = render.render(model, sr)
    values = metrics.evaluate(x, native, sr)
    png = report.plot_comparison(x[0], native[0], sr, out / "report.png",
                                 title=f"{inr}: SI-SNR {values['si-snr']:.2f} dB after {model.info['steps']} steps")
    result = {
        "source": str(source_path),
        "target_network": inr,
        "preset": cfg["preset"].get("name"),
        "fit": {**model.info, "wall_seconds": round(fit_seconds, 2)},
        "metrics": values,
        "renders": rendered,
    }
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    names = list(values)
    lines = [
        "# hyperaudio demo report",
        "",
        f"Source: `{source_path.name}` ({x.shape[1] / sr:.2f} s at {sr} Hz). Target network: `{inr}` "
        f"(preset `{cfg['preset'].get('name')}`), fitted for {model.info['steps']} steps in {fit_seconds:.1f} s.",
        "",
        report.metrics_table({"reconstruction at native rate": values}, names),
        "",
        "Renders: " + ", ".join(f"`{r['file']}` ({rate} Hz)" for rate, r in rendered.items()),
        "",
        "![waveforms and spectrograms](report.png)",
        "",
    ]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))
    log(f"[4/4] report: {out / 'report.md'}, {png}, {out / 'metrics.json'}")
    log(report.metrics_table({"reconstruction": values}, names))
    return result
