"""Encoding: a sound -> INR weights in one forward pass of a trained hypernetwork (+ optional refinement).

:func:`encode` resamples the input to the model's rate, peak-normalises it as in training (the
level is kept in the INR's ``gain``, so rendering restores it), encodes every channel separately and
cuts long inputs into chunks of the model's clip length with :func:`hyperaudio.fit.chunk_layout`
(crossfaded when rendering, as fitted INRs). An input shorter than the model's clip is zero-padded
and stored as one chunk of the model's length; the INR's ``num_samples`` is the real length, so
rendering stops there. All chunks go through the model in batches; the INR stores
``model.full_parameters`` (every target parameter, generated or shared).

``refine_steps > 0`` continues with gradient steps from the generated weights (test-time
refinement): :func:`hyperaudio.fit.fit` with ``initial=`` those weights, the ``[fit]`` learning rate
and optimiser and the ``[loss]`` of the model's config.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..audio import check_rate, resample
from ..errors import AudioError
from ..fit import FitProgress, chunk_layout, fit, pick_device
from ..hya import INR
from .model import HyperNetwork, load_model


def default_overlap(config: dict, num_samples: int) -> int:
    """Crossfade length between chunks: ``fit.overlap_samples``, at most a quarter of a chunk."""
    return int(min(int(config.get("fit", {}).get("overlap_samples", 1024)), num_samples // 4))


def encode(
    model_or_path: HyperNetwork | str | os.PathLike,
    audio: np.ndarray,
    sample_rate: float,
    refine_steps: int = 0,
    device: str | torch.device | None = "auto",
    progress: bool = False,
    callback: Callable[[FitProgress], None] | None = None,
    *,
    config: dict | None = None,
    batch_size: int = 16,
    overlap: int | None = None,
) -> INR:
    """Encode ``audio`` (``[C, N]`` or ``[N]`` at ``sample_rate``) into an INR.

    ``model_or_path``: a :class:`HyperNetwork` (then pass its ``config``, or it is taken from
    ``model.config`` when set) or a run folder / ``model.safetensors``. ``callback`` receives the
    refinement's :class:`~hyperaudio.fit.FitProgress`. ``info`` of the result holds the encoding
    time, the chunk count and, when refined, the refinement's steps and SI-SNR.
    """
    start = time.perf_counter()
    device = pick_device(device)
    if isinstance(model_or_path, (str, os.PathLike)):
        model, config = load_model(model_or_path, device)
        source = str(model_or_path)
    else:
        model = model_or_path
        config = config if config is not None else getattr(model, "config", None)
        if config is None:
            raise ValueError("encode(model, ...) needs the model's config (config=...)")
        source = ""
    hc = config["hypernet"]
    rate, length = int(hc["sample_rate"]), int(hc["num_samples"])

    x = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    if x.ndim != 2 or x.shape[-1] == 0:
        raise AudioError("cannot encode an empty signal")
    if not np.all(np.isfinite(x)):
        raise AudioError("cannot encode a signal with NaN or infinite samples")
    check_rate(float(sample_rate))
    if float(sample_rate) != rate:
        x = resample(x, float(sample_rate), rate)
    channels, n = x.shape
    peak = float(np.abs(x).max())
    gain = peak if peak > 0 else 1.0
    x = x / gain
    padded = np.pad(x, ((0, 0), (0, max(0, length - n))))
    ov = default_overlap(config, length) if overlap is None else int(overlap)
    chunks = chunk_layout(padded.shape[1], length, ov)
    # Members in the .hya order: chunk-major, then channel.
    waves = np.stack([padded[c, s : s + length] for s, _ in chunks for c in range(channels)])

    was_training = model.training
    model = model.to(device).eval()
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for i in range(0, len(waves), batch_size):
            batch = torch.from_numpy(waves[i : i + batch_size]).to(device)
            full = model.full_parameters(model(batch))
            for name, value in full.items():
                parts.setdefault(name, []).append(value.detach().float().cpu())
    model.train(was_training)
    params = {name: torch.cat(values) for name, values in parts.items()}
    target = copy.deepcopy(model.target).cpu().requires_grad_(True)
    info = {"encoder": hc["encoder"], "strategy": hc["strategy"], "model": source, "chunks": len(chunks),
            "encode_seconds": round(time.perf_counter() - start, 4), "refine_steps": 0, "peak": peak}
    inr = INR(config, target, params, float(rate), int(n), int(channels), [(int(s), int(length)) for s, _ in chunks],
              info, gain=float(gain))
    if refine_steps > 0:
        inr = refine(inr, padded, refine_steps, device=device, progress=progress, callback=callback, overlap=ov)
    inr.info["seconds"] = round(time.perf_counter() - start, 4)
    return inr


def refine(inr: INR, normalised: np.ndarray, steps: int, device=None, progress: bool = False, callback=None,
           overlap: int | None = None) -> INR:
    """Gradient steps from ``inr``'s parameters on ``normalised`` (the padded, peak-normalised input
    at the model rate): :func:`hyperaudio.fit.fit` with ``initial=``."""
    length = inr.chunks[0][1]
    cfg = copy.deepcopy(inr.config)
    fc = cfg["fit"]
    fc.update({"steps": int(steps), "seconds": 0.0, "target_sisnr": 0.0, "chunk_samples": length,
               "overlap_samples": int(overlap if overlap is not None else default_overlap(cfg, length)),
               "eval_every": max(1, min(int(fc.get("eval_every", 25)), int(steps)))})
    refined = fit(normalised, inr.sample_rate, cfg, device=device, progress=progress, callback=callback,
                  initial=inr.params, module=inr.module)
    if [tuple(c) for c in refined.chunks] != [tuple(c) for c in inr.chunks]:
        raise RuntimeError(f"refinement used another chunk layout: {refined.chunks} vs {inr.chunks}")
    # Steps per chunk, as asked: fit's own count adds up every chunk group's steps.
    info = {**inr.info, "refine_steps": int(steps), "refine_seconds": refined.info["seconds"],
            "refine_sisnr": refined.info["sisnr"], "refine_lr": fc["lr"]}
    if refined.info["interrupted"]:
        info["refine_interrupted"] = True
    return INR(inr.config, refined.module, refined.params, inr.sample_rate, inr.num_samples, inr.channels,
               inr.chunks, info, gain=inr.gain)


def encode_file(model_or_path, path: str | os.PathLike, **kwargs) -> INR:
    from ..audio import load

    x, sr = load(Path(path))
    return encode(model_or_path, x, sr, **kwargs)
