"""Pictures and tables that compare a reconstruction with its reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .audio import atomic_path
from .errors import HyperaudioError


def _spectrogram_db(x: np.ndarray, n_fft: int = 1024) -> np.ndarray:
    hop = n_fft // 4
    if x.shape[-1] < n_fft:
        x = np.pad(x, (0, n_fft - x.shape[-1]))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    return 10 * np.log10(power.T + 1e-10)


def plot_comparison(ref: np.ndarray, est: np.ndarray, sr: float, path: str | Path, title: str = "") -> Path:
    """PNG with both waveforms overlaid and the spectrograms of reference, reconstruction and error.

    ``ref`` and ``est`` are mono 1-D arrays at the same rate ``sr``.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise HyperaudioError("--plot needs matplotlib: pip install 'hyperaudio[plot]'") from None
    n = min(len(ref), len(est))
    ref, est = ref[:n], est[:n]
    time = np.arange(n) / sr
    specs = [_spectrogram_db(ref), _spectrogram_db(est), _spectrogram_db(ref - est)]
    vmax = max(s.max() for s in specs[:2])
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), constrained_layout=True)
    axes[0].plot(time, ref, lw=0.6, label="reference", color="#1f77b4")
    axes[0].plot(time, est, lw=0.6, label="reconstruction", color="#ff7f0e", alpha=0.8)
    axes[0].set(xlim=(0, n / sr), xlabel="time (s)", ylabel="amplitude", title=title or "waveforms")
    axes[0].legend(loc="upper right")
    for ax, spec, name in zip(axes[1:], specs, ["reference", "reconstruction", "difference (reference - reconstruction)"]):
        img = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=vmax - 90, vmax=vmax,
                        extent=(0, n / sr, 0, sr / 2000))
        ax.set(ylabel="kHz", xlabel="time (s)", title=f"spectrogram: {name}")
        fig.colorbar(img, ax=ax, label="dB")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return Path(path)


def metrics_table(rows: dict[str, dict[str, float]], metric_names: list[str]) -> str:
    """A Markdown table: one row per item, one column per metric."""
    head = "| | " + " | ".join(metric_names) + " |"
    sep = "|---" * (len(metric_names) + 1) + "|"
    lines = [head, sep]
    for name, values in rows.items():
        cells = [_fmt(values.get(m)) for m in metric_names]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and (np.isinf(v) or np.isnan(v)):
        return str(v)
    return f"{v:.4g}"
