"""Reconstruction metrics: the table :data:`METRICS` and :func:`evaluate`.

Light metrics (numpy only, :mod:`.basic`) are the default; the perceptual ones (:mod:`.perceptual`)
need the ``hyperaudio[metrics]`` extra and are loaded on first use. Every metric function has the
signature ``fn(ref, est, sr) -> float`` on 1-D arrays, reference first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from . import basic, perceptual
from .perceptual import MetricUnavailable

#: Lengths may differ by this many samples (resampling round trips); the longer one is trimmed.
LENGTH_TOLERANCE = 16


@dataclass(frozen=True)
class Metric:
    fn: Callable[[np.ndarray, np.ndarray, float], float]
    better: str  # "higher" or "lower"
    ideal: float  # the value for a perfect reconstruction
    heavy: bool  # needs the optional packages and takes seconds
    description: str


def _ignore_rate(fn):
    @functools.wraps(fn)
    def metric(ref, est, sr):
        return fn(ref, est)

    return metric


METRICS: dict[str, Metric] = {
    "mse": Metric(_ignore_rate(basic.mse), "lower", 0.0, False, "mean squared error"),
    "psnr": Metric(_ignore_rate(basic.psnr), "higher", float("inf"), False,
                   "peak SNR in dB, peak-to-peak range 2 ([-1, 1]): 10·log10(4 / MSE)"),
    "lsd": Metric(_ignore_rate(basic.lsd), "lower", 0.0, False,
                  "log-spectral distance, log10 power, STFT 2048 / hop 512"),
    "si-snr": Metric(_ignore_rate(basic.si_snr), "higher", float("inf"), False,
                     "scale-invariant SNR in dB (large but finite for identical signals)"),
    "pesq": Metric(perceptual.pesq_wb, "higher", 4.644, True, "wideband PESQ MOS-LQO at 16 kHz (speech)"),
    "stoi": Metric(perceptual.stoi, "higher", 1.0, True, "short-time objective intelligibility (speech)"),
    "visqol": Metric(perceptual.visqol, "higher", 4.732, True,
                     "ViSQOL v3 audio-mode MOS-LQO at 48 kHz (its scale tops out at 4.732)"),
    "cdpam": Metric(perceptual.cdpam, "lower", 0.0, True, "CDPAM perceptual distance at 22.05 kHz"),
    "wasserstein": Metric(_ignore_rate(basic.spectral_wasserstein), "lower", 0.0, False,
                          "spectral Wasserstein-1 distance, squared-index support, / length (KAN §4.4)"),
}

#: The light metrics: numpy only, milliseconds per second of audio.
DEFAULT_METRICS: list[str] = [name for name, m in METRICS.items() if not m.heavy]


def evaluate(ref, est, sr: float, metrics: Iterable[str] | str | None = None) -> dict[str, float]:
    """Compare a reconstruction ``est`` with its reference ``ref`` at sample rate ``sr``.

    ``ref`` and ``est`` are 1-D arrays or ``[C, N]`` (each metric is averaged over channels), with
    the same channel count and rate. Lengths may differ by up to :data:`LENGTH_TOLERANCE` samples
    (both are trimmed to the shorter); anything else raises ``ValueError``, as do unknown metric
    names. ``metrics`` defaults to :data:`DEFAULT_METRICS`. Returns ``{name: value}`` in the order
    asked.
    """
    names = _metric_names(metrics)
    if not (isinstance(sr, (int, float, np.integer, np.floating)) and np.isfinite(sr) and sr > 0):
        raise ValueError(f"sample rate must be a positive number, got {sr!r}")
    ref, est = np.asarray(ref), np.asarray(est)
    for label, x in (("reference", ref), ("reconstruction", est)):
        if x.ndim not in (1, 2):
            raise ValueError(f"{label} must be 1-D or [channels, samples], got shape {x.shape}")
        if x.shape[-1] == 0 or (x.ndim == 2 and x.shape[0] == 0):
            raise ValueError(f"{label} is empty")
        if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
            raise ValueError(f"{label} contains NaN, infinite or non-numeric samples")
    ref, est = np.atleast_2d(ref), np.atleast_2d(est)
    if ref.shape[0] != est.shape[0]:
        raise ValueError(f"channel counts differ: reference {ref.shape[0]}, reconstruction {est.shape[0]}")
    n_ref, n_est = ref.shape[1], est.shape[1]
    if abs(n_ref - n_est) > LENGTH_TOLERANCE:
        raise ValueError(
            f"lengths differ: reference {n_ref} samples ({n_ref / sr:.3f} s), reconstruction {n_est} "
            f"samples ({n_est / sr:.3f} s); both must be at the same rate ({sr:g} Hz) and length"
        )
    n = min(n_ref, n_est)
    ref, est = ref[:, :n], est[:, :n]
    return {
        name: float(np.mean([METRICS[name].fn(r, e, sr) for r, e in zip(ref, est)]))
        for name in names
    }


def _metric_names(metrics) -> list[str]:
    if metrics is None:
        return list(DEFAULT_METRICS)
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(map(repr, unknown))}; known: {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


__all__ = ["DEFAULT_METRICS", "LENGTH_TOLERANCE", "METRICS", "Metric", "MetricUnavailable", "evaluate"]
