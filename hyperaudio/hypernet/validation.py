"""Validation of a hypernetwork on fixed held-out crops, beside the all-zero baseline it must beat."""

from __future__ import annotations

import numpy as np
import torch

from ..functional import postprocess
from .model import HyperNetwork


def silence_baseline(clips: np.ndarray, sample_rate: int, names: list[str]) -> dict[str, float]:
    """The validation metrics of an all-zero reconstruction: what the model must beat."""
    from .. import metrics

    values = [metrics.evaluate(c, np.zeros_like(c), sample_rate, names) for c in clips]
    return {f"silence.{k}": float(np.mean([v[k] for v in values])) for k in names}


@torch.no_grad()
def evaluate_clips(model: HyperNetwork, clips: np.ndarray, sample_rate: int, names: list[str],
                   batch: int = 8, device=None, warn=None) -> dict[str, float]:
    """Mean validation metrics of ``model`` on fixed crops ``[K, num_samples]`` (postprocessed output)."""
    from .. import metrics
    from ..metrics import MetricUnavailable

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    values: dict[str, list[float]] = {n: [] for n in names}
    unavailable: set[str] = set()
    try:
        for i in range(0, len(clips), batch):
            wave = torch.from_numpy(clips[i : i + batch]).to(device)
            y = model.reconstruct(wave).float().cpu().numpy()  # [b, H, T]
            for ref, heads_out in zip(clips[i : i + batch], y):
                est = postprocess(model.target, heads_out, sample_rate)
                for name in names:
                    if name in unavailable:
                        continue
                    try:
                        values[name].append(metrics.evaluate(ref, est, sample_rate, [name])[name])
                    except MetricUnavailable as exc:
                        unavailable.add(name)
                        if warn:
                            warn(f"validation metric {name} unavailable: {exc}")
    finally:
        model.train(was_training)
    return {n: float(np.mean(v)) for n, v in values.items() if v}
