"""Fitting one sound: gradient descent on target-network parameters (no hypernetwork).

Long audio is cut into equal, overlapping chunks (``fit.chunk_samples``, ``fit.overlap_samples``),
each represented by its own parameter set and joined by crossfade when rendering. Channels are
fitted as separate members too, so any target network handles stereo. Up to ``fit.chunk_batch``
members are fitted together in one batched functional call, sharing one optimiser.

Budgets: ``fit.steps`` per group of members, ``fit.seconds`` for the whole fit, and
``fit.target_sisnr``: a group stops once all its members reach that SI-SNR. The learning rate
follows a cosine decay over whichever budget runs out first.

``fit.recipe = "auto"`` (the default) first races learning rates and time scales on the loudest
chunk, then fits L1 on random samples and, for the second half, L1 plus a light mel-STFT term
(:mod:`hyperaudio.recipe`); ``fit.lr``, ``fit.batch_samples`` and ``loss.lambda_*`` are then not
used. ``"fixed"`` (the papers' presets) follows the settings as written.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import recipe
from .config import build_target
from .errors import AudioError, HyperaudioError
from .functional import call_batched, fresh_parameters, heads
from .hya import INR
from .limits import check_fit_memory
from .loss import ReconstructionLoss

MAX_BAD_STEPS = 3


@dataclass
class FitProgress:
    """A snapshot sent to ``callback`` every ``fit.eval_every`` steps (and at the end)."""

    fraction: float  # overall progress, 0..1
    group: int
    groups: int
    step: int
    loss: float
    sisnr: float  # mean SI-SNR (dB) of the current group, first head
    elapsed: float
    lr: float
    params: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)  # current group, detached
    members: list[int] = field(default_factory=list)
    # The network ``params`` belong to: the auto recipe's time scale and encoding are in it, not in
    # the config the fit was called with.
    module: torch.nn.Module | None = field(repr=False, default=None)


class DeviceError(HyperaudioError):
    """A ``--device`` that does not exist on this machine."""


def _cuda_count() -> int:
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken driver can raise instead of answering
        return 0


def available_devices() -> list[str]:
    """The device names this machine accepts: ``cpu``, and ``cuda``, ``cuda:0``... when CUDA works."""
    count = _cuda_count()
    return ["cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(count)] if count else [])


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> the first CUDA device when usable, else the CPU; any other name must be one of
    :func:`available_devices`, or DeviceError (one line naming the devices there are)."""
    if device in (None, "auto"):
        return torch.device("cuda" if _cuda_count() else "cpu")
    name = str(device)
    if name not in available_devices():
        cuda = "" if _cuda_count() else " (no usable CUDA device here)"
        raise DeviceError(f"no device {name!r}{cuda}; devices here: auto, {', '.join(available_devices())}")
    return torch.device(name)


def chunk_layout(num_samples: int, chunk: int, overlap: int) -> list[tuple[int, int]]:
    """Equal-length chunks spread evenly over the signal, consecutive ones overlapping >= ``overlap``."""
    if num_samples <= chunk:
        return [(0, num_samples)]
    count = math.ceil((num_samples - overlap) / (chunk - overlap))
    starts = np.round(np.linspace(0, num_samples - chunk, count)).astype(int)
    return [(int(s), chunk) for s in starts]


def time_grid(length: int, device=None) -> torch.Tensor:
    """Coordinates of ``length`` samples spread over [-1, 1]: ``[length, 1]``."""
    return torch.linspace(-1.0, 1.0, length, device=device).unsqueeze(-1)


def si_snr(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-row SI-SNR in dB of ``[B, T]`` tensors (zero-mean, scale-invariant)."""
    pred = pred - pred.mean(-1, keepdim=True)
    target = target - target.mean(-1, keepdim=True)
    scale = (pred * target).sum(-1, keepdim=True) / (target.pow(2).sum(-1, keepdim=True) + eps)
    projection = scale * target
    noise = pred - projection
    return 10 * torch.log10((projection.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def _with_time_scale(config: dict, scale: float) -> dict:
    return {**config, "target": {**config["target"], "time_scale": float(scale)}}


def _cosine_lr(base: float, floor_ratio: float, fraction: float) -> float:
    fraction = min(max(fraction, 0.0), 1.0)
    return base * (floor_ratio + (1 - floor_ratio) * 0.5 * (1 + math.cos(math.pi * fraction)))


def fit(
    audio: np.ndarray,
    sample_rate: float,
    config: dict,
    *,
    device: str | torch.device | None = "auto",
    progress: bool = True,
    callback: Callable[[FitProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    initial: dict[str, torch.Tensor] | None = None,
    module: torch.nn.Module | None = None,
) -> INR:
    """Fit ``audio`` (``[C, N]`` float, or ``[N]``) and return the INR.

    Ctrl-C (KeyboardInterrupt) or ``should_stop()`` ends the fit early and returns what has been
    learnt so far, with ``info["interrupted"] = True``, so no progress is lost. ``info["sisnr"]``
    is the mean over all chunks of each one's last evaluated SI-SNR (first head).

    ``initial`` (test-time refinement of a hypernetwork's output): ``{name: [K, *shape]}`` for every
    parameter, one set per member in the ``.hya`` order (chunk-major, then channel); members start
    from it instead of a fresh initialisation. ``module``: the target network to use (its buffers,
    e.g. an RFF matrix, must be the ones ``initial`` was made for); default ``build_target(config)``.
    """
    audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    if audio.shape[-1] == 0:
        raise AudioError("cannot fit an empty signal")
    if not np.all(np.isfinite(audio)):
        raise AudioError("cannot fit a signal with NaN or infinite samples")
    device = pick_device(device)
    fc, lc = config["fit"], config["loss"]
    channels, num_samples = audio.shape
    torch.manual_seed(int(fc["seed"]))
    module = (build_target(config) if module is None else copy.deepcopy(module)).to(device)
    check_fit_memory(module, config, channels, num_samples, device)  # refuse up front what cannot fit
    n_heads = heads(module)
    chunks = chunk_layout(num_samples, int(fc["chunk_samples"]), int(fc["overlap_samples"]))
    length = chunks[0][1]
    # Members are (chunk, channel) pairs in chunk-major order, matching the .hya layout.
    targets = torch.from_numpy(np.stack([audio[c, s : s + n] for s, n in chunks for c in range(channels)])).to(device)
    members = targets.shape[0]
    if initial is not None:
        own = dict(module.named_parameters())
        bad = sorted(set(own) ^ set(initial))
        if bad:
            raise ValueError(f"initial parameters do not match the target network: {bad[:3]}")
        for n, p in initial.items():
            if tuple(p.shape) != (members, *own[n].shape):
                raise ValueError(f"initial parameter {n!r} has shape {list(p.shape)}, expected "
                                 f"{[members, *own[n].shape]} ({members} chunk x channel members)")
        initial = {n: p.detach().to(device=device, dtype=torch.float32) for n, p in initial.items()}
    t = time_grid(length, device)
    batch = int(fc["chunk_batch"])
    groups = [list(range(i, min(i + batch, members))) for i in range(0, members, batch)]
    steps, seconds = int(fc["steps"]), float(fc["seconds"])
    target_sisnr = float(fc["target_sisnr"])
    draws = torch.Generator(device=device).manual_seed(int(fc["seed"]))
    auto = fc["recipe"] == "auto" and initial is None
    start = time.perf_counter()
    raced = None
    if auto:
        plain = _with_time_scale(config, 1.0)
        if progress:
            print("choosing the learning rate and time scale...", file=sys.stderr, flush=True)
        raced = recipe.race(
            build_target(plain).to(device), lambda: build_target(plain), t,
            targets[int(targets.pow(2).mean(-1).argmax())],  # the loudest chunk
            max_seconds=seconds * recipe.RACE_FRACTION, generator=draws, should_stop=should_stop,
            max_steps=max(1, int(steps * recipe.RACE_FRACTION)) if seconds <= 0 else 1 << 30)
        config = _with_time_scale(config, raced.time_scale)
        module = recipe.set_buffers(build_target(config).to(device), raced.buffers)
        seconds = max(seconds - raced.seconds, 1e-12) if seconds > 0 else 0.0  # spent: no step
    if auto and seconds > 0:
        steps = 1 << 62  # the auto recipe's budget is fit.seconds when set, else fit.steps
    base_lr = raced.lr if auto else float(fc["lr"])
    subset = recipe.BATCH_SAMPLES if auto else int(fc["batch_samples"])
    subset = subset if 0 < subset < length else 0
    lambda_t = 1.0 if auto else lc["lambda_t"]
    lambda_f = recipe.STFT_WEIGHT if auto else lc["lambda_f"]
    loss_fn = ReconstructionLoss(sample_rate, lambda_t=lambda_t, lambda_f=lambda_f, p=lc["p"],
                                 ramp_steps=int(lc["ramp_steps"])).to(device)
    waveform_loss = ReconstructionLoss(sample_rate, lambda_t=lambda_t, lambda_f=0.0).to(device)

    def factory():
        return build_target(config)

    # Members never reached (after an interrupt) keep all-zero parameters: silence, not noise
    # (or their initial parameters, when refining).
    if initial is not None:
        result = {n: p.clone() for n, p in initial.items()}
    else:
        result = {n: torch.zeros(members, *p.shape, device=device) for n, p in module.named_parameters()}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}", leave=True)
    interrupted = False
    total_steps = 0
    last_loss, last_sisnr = float("nan"), float("nan")
    chunk_sisnr: dict[int, float] = {}  # each chunk's latest score: info["sisnr"] covers every group
    try:
        for gi, group in enumerate(groups):
            start_params = ({n: p[group].clone() for n, p in initial.items()} if initial is not None
                            else fresh_parameters(factory, len(group)))
            params = {n: p.to(device).requires_grad_(True) for n, p in start_params.items()}
            optimizer = (torch.optim.AdamW if fc["optimizer"] == "adamw" else torch.optim.Adam)(
                list(params.values()), lr=base_lr, weight_decay=fc["weight_decay"]
            )
            target = targets[group].repeat_interleave(n_heads, dim=0) if n_heads > 1 else targets[group]
            group_start = time.perf_counter()
            group_seconds = seconds * len(group) / members if seconds > 0 else 0.0
            good = {n: p.detach().clone() for n, p in params.items()}
            bad_steps, lr_scale, step = 0, 1.0, 0
            # The auto recipe's guard, from the first step: SI-SNR may fall at most SISNR_TOLERANCE dB
            # below its best (`anchor`); past that the fit goes back there with half the mel-STFT weight.
            anchor, anchor_sisnr, anchor_scores = good, -math.inf, None
            loss_fn.lambda_f = lambda_f
            while True:
                elapsed = time.perf_counter() - group_start
                fraction = step / steps
                if group_seconds > 0:
                    fraction = max(fraction, elapsed / group_seconds)
                if fraction >= 1 or (should_stop is not None and should_stop()):
                    break
                lr = _cosine_lr(base_lr, fc["min_lr_ratio"], fraction) * lr_scale
                for g in optimizer.param_groups:
                    g["lr"] = lr
                sampled = subset and not (auto and fraction >= recipe.STFT_FROM and loss_fn.lambda_f)
                if sampled:
                    # A pointwise loss on random coordinates is an unbiased estimate of the whole
                    # chunk's: several cheaper steps for the price of one full one.
                    idx = torch.randint(0, length, (subset,), generator=draws, device=device)
                    pred, goal = call_batched(module, params, t[idx]), target[:, idx]
                else:
                    pred, goal = call_batched(module, params, t), target  # pred: [B, L, H]
                pred = pred.permute(0, 2, 1).reshape(goal.shape)  # [B*H, L], head-major per member
                loss, _ = (waveform_loss if sampled else loss_fn)(pred, goal, step=step)
                if lc["lambda_mse"]:
                    loss = loss + lc["lambda_mse"] * torch.mean((pred - goal) ** 2)
                if not torch.isfinite(loss):
                    # Roll back to the last good parameters and retry at half the learning rate.
                    bad_steps += 1
                    if bad_steps > MAX_BAD_STEPS:
                        break
                    with torch.no_grad():
                        for n, p in params.items():
                            p.copy_(good[n])
                    optimizer.state.clear()
                    lr_scale *= 0.5
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                total_steps += 1
                if step % int(fc["eval_every"]) == 0 or step == 1:
                    with torch.no_grad():
                        if sampled:
                            pred = call_batched(module, params, t).permute(0, 2, 1)
                        first = pred.detach().reshape(len(group), n_heads, length)[:, 0]
                        scores = si_snr(first, targets[group])
                    last_loss, last_sisnr = float(loss.detach()), float(scores.mean())
                    if auto and last_sisnr < anchor_sisnr - recipe.SISNR_TOLERANCE:
                        with torch.no_grad():
                            for n, p in params.items():
                                p.copy_(anchor[n])
                        optimizer.state.clear()
                        loss_fn.lambda_f = recipe.weaker(loss_fn.lambda_f)
                        continue
                    chunk_sisnr.update(zip(group, scores.tolist()))
                    good = {n: p.detach().clone() for n, p in params.items()}
                    if last_sisnr > anchor_sisnr:
                        anchor, anchor_sisnr, anchor_scores = good, last_sisnr, scores
                    overall = (gi + min(fraction, 1.0)) / len(groups)
                    if bar is not None:
                        bar.n = round(100 * overall, 1)
                        bar.set_postfix_str(
                            f"chunk group {gi + 1}/{len(groups)} step {step} loss {last_loss:.4f} SI-SNR {last_sisnr:.2f} dB"
                        )
                    if callback is not None:
                        callback(
                            FitProgress(overall, gi, len(groups), step, last_loss, last_sisnr,
                                        time.perf_counter() - start, lr, dict(good), list(group), module)
                        )
                    if target_sisnr and float(scores.min()) >= target_sisnr:
                        break
            with torch.no_grad():
                if auto and step:  # steps since the last evaluation may have undone the waveform
                    final = call_batched(module, params, t).permute(0, 2, 1).reshape(len(group), n_heads, length)
                    scores = si_snr(final[:, 0], targets[group])
                    if float(scores.mean()) < anchor_sisnr - recipe.SISNR_TOLERANCE:
                        params, scores = anchor, anchor_scores
                    chunk_sisnr.update(zip(group, scores.tolist()))
                for n, p in params.items():
                    result[n][group] = p.detach() if bad_steps <= MAX_BAD_STEPS else good[n]
            if should_stop is not None and should_stop():
                interrupted = True
                break
    except KeyboardInterrupt:
        interrupted = True
        if "good" in locals():
            with torch.no_grad():
                for n in result:
                    result[n][group] = good[n]
    finally:
        if bar is not None:
            bar.n = 100 if not interrupted else bar.n
            bar.close()
    info = {
        "steps": total_steps,
        "seconds": round(time.perf_counter() - start, 3),
        "loss": last_loss,
        "sisnr": float(np.mean(list(chunk_sisnr.values()))) if chunk_sisnr else last_sisnr,
        "interrupted": interrupted,
        "device": str(device),
    }
    if raced is not None:
        info["recipe"] = {"lr": raced.lr, "time_scale": raced.time_scale, "race_steps": raced.steps,
                          "race_seconds": round(raced.seconds, 3), "restarts": raced.restarts,
                          "spectral_encoding": bool(raced.buffers)}
    module = module.cpu()
    return INR(config, module, {n: p.cpu() for n, p in result.items()}, float(sample_rate), num_samples, channels,
               chunks, info)
