"""Exports: WAV at any rate, .hya, ONNX, PNG of the views, a metrics report.

Everything but the PNG runs in a background thread (``tasks``): these functions import no Qt and
write atomically (``hyperaudio.audio.atomic_path``), so a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hyperaudio import audio, hya, metrics, render, report
from hyperaudio.audio import atomic_path
from hyperaudio.errors import HyperaudioError


def export_wav(inr, path: str | Path, rate: float) -> Path:
    """Render ``inr`` at ``rate`` (band-limited below its native rate) and write it."""
    y = render.render(inr, float(rate))
    return audio.save(path, y, float(rate))


def export_original(x: np.ndarray, sample_rate: float, path: str | Path, rate: float) -> Path:
    return audio.save(path, audio.resample(x, sample_rate, float(rate)), float(rate))


def export_hya(inr, path: str | Path) -> Path:
    return hya.save(inr, path)


def export_onnx(inr, path: str | Path) -> float:
    """Write the ONNX model after checking it against PyTorch; returns the max difference."""
    from hyperaudio import onnx_export

    data = onnx_export.export_bytes(inr)
    diff = onnx_export.verify(inr, data)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return diff


def export_report(path: str | Path, name: str, original: np.ndarray | None, reconstruction: np.ndarray,
                  sample_rate: float, inr, values: dict | None = None) -> Path:
    """``path`` (Markdown) with the metrics table, plus ``<stem>.json`` and ``<stem>.png`` beside it."""
    path = Path(path)
    if original is None:
        raise HyperaudioError("a metrics report needs the original sound (this INR was opened without it)")
    if values is None or not values:
        n = min(original.shape[1], reconstruction.shape[1])
        values = metrics.evaluate(original[:, :n], reconstruction[:, :n], sample_rate)
    target = inr.config.get("target", {}).get("name", "?")
    png = path.with_suffix(".png")
    picture = None
    try:
        report.plot_comparison(original.mean(0), reconstruction.mean(0), sample_rate, png,
                               title=f"{name}: {target}, SI-SNR {values.get('si-snr', float('nan')):.2f} dB")
        picture = png.name
    except HyperaudioError:  # matplotlib missing: the table alone
        pass
    result = {"name": name, "target_network": target, "preset": inr.config.get("preset", {}).get("name"),
              "sample_rate": sample_rate, "fit": inr.info, "metrics": values}
    with atomic_path(path.with_suffix(".json")) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2, default=_json_default))
    lines = [f"# {name}", "", f"Target network `{target}` (preset `{result['preset'] or '-'}`), "
             f"{inr.duration:.2f} s at {inr.sample_rate:g} Hz.", "",
             report.metrics_table({"reconstruction": values}, list(values)), ""]
    if picture:
        lines += [f"![waveforms and spectrograms]({picture})", ""]
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines))
    return path


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)
