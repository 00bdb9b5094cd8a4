"""Compression to a bitrate: size a network for the budget, fit, quantise, write (issue #17).

``kb/s x duration`` is the whole file, metadata included. :func:`plan` picks the widest network of
the family whose quantised file is estimated to fit at the chosen bit depth, :func:`compress` fits
it on ``1 - QAT_FRACTION`` of the time budget (the auto recipe), fine-tunes below 8 bits with
quantisation in the loop (straight-through estimator; siamese-siren.txt §3 quantises after
training, the fine-tune is what keeps 6 and 4 bits usable), packs the integers with zstd and, if
the real file is still over the budget, steps the bit depth down until it fits. On decode a Siamese
SIREN's two heads denoise the output (siamese-siren.txt §2, eq. 4: noisereduce with the heads'
difference as the noise estimate), which :mod:`hyperaudio.render` applies to any such network.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import quantize
from .errors import HyperaudioError

DEFAULT_INR = "siamese-siren"
DEFAULT_SECONDS = 90.0
QAT_FRACTION = 0.2  # of the budget, for the quantisation-aware fine-tune below 8 bits
QAT_SAMPLES = 8192
DENOISE_ALPHAS = (0.0, 0.5, 1.0)  # Siamese SIREN's noise_alpha tried on decode; 0 = off
QAT_LR_RATIO = 0.2  # of the fit's learning rate: the fine-tune only nudges weights across rounding steps
# zstd-coded bits per weight at each depth, measured on fitted 8-10k-parameter SIRENs and Siamese
# SIRENs on speech (6 bits: 5.54, 7: 6.56, 5: 4.70) and rounded up; the real size is checked after.
BITS_PER_WEIGHT = {8: 7.6, 7: 6.6, 6: 5.6, 5: 4.75, 4: 3.8, 3: 2.9, 2: 1.9}
# The tensors kept in float32 (hyperaudio.quantize.sensitive) were 1.2-3.5 % of the weights.
FLOAT_SHARE = 0.03
WIDTHS = tuple(range(8, 513, 4))


class BudgetError(HyperaudioError):
    """A bitrate too low for the smallest network of the family."""


def family(inr: str, width: int) -> dict:
    """``target.params`` of the network of width ``width`` in the family named ``inr``."""
    if inr == "siamese-siren":  # trunk 2 x w, heads 1 x w/2: the paper's 256 / 128 proportions
        return {"hidden": [width, width], "siamese_hidden": [max(width // 2, 4)]}
    if inr in ("siren", "finer", "nerf", "rff", "wire"):
        params = {"hidden": [width] * 3}
        if inr == "rff":
            params["num_features"] = max(width // 2, 4)
        return params
    raise HyperaudioError(f"compress sizes siamese-siren, siren, finer, nerf, rff and wire networks, not {inr!r}")


def budget_bytes(kbps: float, seconds: float) -> int:
    """The whole file's size at ``kbps`` (1000 bits per second) over ``seconds`` of sound."""
    return int(math.floor(kbps * 1000 * seconds / 8))


@dataclass(frozen=True)
class Plan:
    inr: str
    width: int
    params: dict
    bits: int
    parameters: int  # per member
    members: int
    estimate: int  # bytes
    budget: int  # bytes


def choose_bits(parameters_at: dict[int, int]) -> int:
    """The bit depth, given how many parameters fit at each: 8 where the network is already roomy
    (int8 is within a fraction of a dB of float), 6 for a mid-size budget (a third more weights
    for a fine-tuned rounding), 4 where even 6 bits leave a tiny network."""
    if parameters_at[8] >= 20_000:
        return 8
    if parameters_at[6] >= 3_000:
        return 6
    return 4


def _overhead(inr_name: str, params: dict, members: int, channels: int, num_samples: int, sr: float,
              chunks: list) -> tuple[int, int, object]:
    """``(bytes of a file with all-zero weights, parameters per member, config)``: header, metadata
    and scales, everything but the coded integers."""
    from . import config, hya

    cfg = config.resolve({}, inr_name, [f"target.params.{k}={v}" for k, v in params.items()])
    module = config.build_target(cfg)
    zeros = {n: torch.zeros(members, *p.shape) for n, p in module.named_parameters()}
    inr = hya.INR(cfg, module, zeros, sr, num_samples, channels, chunks, _info(8, 0.0, 0.0, 0.0, 0))
    packed = quantize.pack(zeros, list(zeros), 8)
    size = len(hya.to_bytes(inr, packed)) - packed[0]["quant.values"].numel()
    return size, sum(p.numel() for p in module.parameters()), cfg


def plan(kbps: float, num_samples: int, sr: float, channels: int = 1, inr: str = DEFAULT_INR,
         bits: int | None = None, chunk_samples: int = 32768, overlap: int = 1024) -> Plan:
    """The widest network of the family whose estimated file fits ``kbps`` (BudgetError if none)."""
    from .fit import chunk_layout

    chunks = chunk_layout(num_samples, chunk_samples, overlap)
    members = len(chunks) * channels
    budget = budget_bytes(kbps, num_samples / sr)
    fits: dict[int, tuple] = {}
    depths = [bits] if bits else [8, 6, 4]
    for b in depths:
        best = None
        for width in WIDTHS:  # sizes grow with width: stop at the first one over
            params = family(inr, width)
            overhead, count, _ = _overhead(inr, params, members, channels, num_samples, sr, chunks)
            coded = members * count * ((1 - FLOAT_SHARE) * BITS_PER_WEIGHT[b] / 8 + FLOAT_SHARE * 4)
            estimate = overhead + math.ceil(coded) + 16  # + the zstd frame's header
            if estimate > budget:
                break
            best = (width, params, count, estimate)
        fits[b] = best
    if all(v is None for v in fits.values()):
        smallest = family(inr, WIDTHS[0])
        overhead, count, _ = _overhead(inr, smallest, members, channels, num_samples, sr, chunks)
        need = overhead + math.ceil(members * count * BITS_PER_WEIGHT[min(depths)] / 8)
        raise BudgetError(f"{kbps:g} kb/s is {budget:,} bytes for {num_samples / sr:.2f} s; the smallest "
                          f"{inr} ({count:,} parameters at {min(depths)} bits) needs about {need:,}: raise --kbps")
    if bits is None:  # fewer bits always fit a larger network, so the rule never picks a depth that fits nothing
        bits = choose_bits({b: (v[2] if v else 0) for b, v in fits.items()})
    width, params, count, estimate = fits[bits]
    return Plan(inr, width, params, bits, count, members, estimate, budget)


def _info(bits: int, kbps: float, sisnr_float: float, sisnr: float, steps: int = 0) -> dict:
    """What a compressed file records: short, since it counts against the budget."""
    return {"compressed": f"{bits}-bit zstd, budget {kbps:g} kb/s", "sisnr_float": round(sisnr_float, 2),
            "sisnr": round(sisnr, 2), "steps": steps}


def _targets(audio: np.ndarray, chunks) -> torch.Tensor:
    channels = audio.shape[0]
    return torch.from_numpy(np.stack([audio[c, s : s + n] for s, n in chunks for c in range(channels)]))


def quantized_sisnr(inr, audio: np.ndarray, bits: int | None, wide=()) -> float:
    """Mean SI-SNR (dB, first head, no denoise) over the members, weights quantised to ``bits``
    (``None``: as they are; ``wide``: names kept in float32)."""
    from .fit import si_snr, time_grid
    from .functional import call_batched

    params = inr.params if bits is None else quantize.round_trip(inr.params, bits, wide)
    targets = _targets(np.atleast_2d(audio), inr.chunks)
    length = targets.shape[1]
    with torch.no_grad():
        pred = call_batched(inr.module, params, time_grid(length))[..., 0]  # head 0
    return float(si_snr(pred, targets).mean())


def finetune(inr, audio: np.ndarray, bits: int, seconds: float, lr: float,
             should_stop: Callable[[], bool] | None = None, seed: int = 0,
             max_steps: int | None = None, wide=()) -> dict[str, torch.Tensor]:
    """Quantisation-aware fine-tune: ``seconds`` (or ``max_steps``) of Adam on L1 with every weight
    rounded to ``bits`` in the forward pass (straight-through). Returns the float parameters whose
    rounding scored best (never worse than rounding the fit's own)."""
    from .fit import si_snr, time_grid
    from .functional import call_batched, heads

    targets = _targets(np.atleast_2d(audio), inr.chunks)
    members, length = targets.shape
    n_heads = heads(inr.module)
    goal_all = targets.repeat_interleave(n_heads, dim=0)  # [B*H, L], head-major per member like fit
    t = time_grid(length)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in inr.params.items()}
    optimizer = torch.optim.Adam(list(params.values()), lr=lr)
    draws = torch.Generator().manual_seed(seed)

    def score() -> float:
        with torch.no_grad():
            q = {n: p if n in wide else quantize.fake_quantize(p, bits) for n, p in params.items()}
            return float(si_snr(call_batched(inr.module, q, t)[..., 0], targets).mean())

    best, best_score = {n: p.detach().clone() for n, p in params.items()}, score()
    start, step = time.perf_counter(), 0
    while not (should_stop and should_stop()):
        elapsed = time.perf_counter() - start
        done = step / max_steps if max_steps else elapsed / seconds
        if done >= 1:
            break
        for g in optimizer.param_groups:  # cosine decay over the budget
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * done))
        idx = torch.randint(0, length, (min(QAT_SAMPLES, length),), generator=draws)
        q = {n: p if n in wide else quantize.fake_quantize(p, bits) for n, p in params.items()}
        pred = call_batched(inr.module, q, t[idx]).permute(0, 2, 1).reshape(members * n_heads, -1)
        loss = (pred - goal_all[:, idx]).abs().mean()
        if not torch.isfinite(loss):
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 25 == 0:
            now = score()
            if now > best_score:
                best, best_score = {n: p.detach().clone() for n, p in params.items()}, now
    if step % 25:
        now = score()
        if now > best_score:
            best = {n: p.detach().clone() for n, p in params.items()}
    return best


@dataclass
class Result:
    inr: object  # hya.INR with float weights (dequantised: what a reader gets)
    packed: tuple  # (tensors, layout) for hya.save(inr, path, packed)
    data: bytes  # the file
    plan: Plan
    bits: int
    info: dict = field(default_factory=dict)

    @property
    def kbps(self) -> float:
        return 8 * len(self.data) / self.inr.duration / 1000


def float_tensors(inr, bits: int) -> set[str]:
    """The tensors to keep in float32 (:func:`hyperaudio.quantize.sensitive`), measured against
    the float network's own output on every fourth sample of a chunk."""
    from .fit import time_grid

    return quantize.sensitive(inr.module, inr.params, bits, time_grid(inr.chunks[0][1])[::4])


def pack_within(inr, bits: int, budget: int | None, audio: np.ndarray | None = None, seconds: float = 0.0,
                lr: float = 0.0, should_stop=None, wide=None) -> tuple[tuple, bytes, int, dict, set]:
    """``(packed, file bytes, bits, float params, wide names)`` at ``bits``, stepping the depth down
    while the file is over ``budget`` bytes (a fine-tune of ``seconds`` at each depth below 8 when
    ``audio`` is given). Raises BudgetError when even 2 bits are over."""
    from . import hya

    order = [n for n, _ in inr.module.named_parameters()]
    base = dict(inr.params)
    while True:
        params = base
        chosen = float_tensors(inr, bits) if wide is None else set(wide)
        if bits < 8 and audio is not None and seconds > 0:
            params = finetune(inr, audio, bits, seconds, lr, should_stop, wide=chosen)
        packed = quantize.pack(params, order, bits, chosen)
        trial = hya.INR(inr.config, inr.module, params, inr.sample_rate, inr.num_samples, inr.channels,
                        inr.chunks, inr.info, inr.gain)
        data = hya.to_bytes(trial, packed)
        if budget is None or len(data) <= budget:
            return packed, data, bits, params, chosen
        if bits <= quantize.BITS.start:
            raise BudgetError(f"the file is {len(data):,} bytes at {bits} bits, over the budget of {budget:,}")
        bits -= 1
        seconds = seconds / 2  # a second try gets a shorter fine-tune


def compress(audio: np.ndarray, sr: float, kbps: float, *, seconds: float = DEFAULT_SECONDS,
             inr: str = DEFAULT_INR, bits: int | None = None, device="auto", progress: bool = False,
             callback=None, should_stop=None, overrides: list[str] = ()) -> Result:
    """Compress ``audio`` (``[C, N]``) to at most ``kbps`` (see the module docstring)."""
    from . import config, fit, hya

    audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    p = plan(kbps, audio.shape[1], sr, audio.shape[0], inr, bits)
    qat = p.bits < 8
    fit_seconds = seconds * (1 - QAT_FRACTION) if qat else seconds
    sets = [f"target.params.{k}={v}" for k, v in p.params.items()]
    cfg = config.resolve({}, inr, [*sets, f"fit.seconds={fit_seconds}", "fit.steps=100000000", *overrides])
    fitted = fit.fit(audio, sr, cfg, device=device, progress=progress, callback=callback, should_stop=should_stop)
    if fitted.info["steps"] == 0:
        raise HyperaudioError("no optimisation step was made: nothing learnt (raise --seconds)")
    fitted = fitted.to("cpu")
    steps, fit_time = int(fitted.info["steps"]), float(fitted.info["seconds"])
    lr = float(fitted.info.get("recipe", {}).get("lr", cfg["fit"]["lr"])) * QAT_LR_RATIO
    sisnr_float = quantized_sisnr(fitted, audio, None)
    fitted.info = _info(p.bits, kbps, sisnr_float, sisnr_float, steps)
    packed, data, used, params, wide = pack_within(fitted, p.bits, p.budget, audio,
                                                   seconds * QAT_FRACTION if qat else 0.0, lr, should_stop)
    out = hya.INR(fitted.config, fitted.module, quantize.round_trip(params, used, wide), fitted.sample_rate,
                  fitted.num_samples, fitted.channels, fitted.chunks, {}, fitted.gain)
    out.info = _info(used, kbps, sisnr_float, quantized_sisnr(out, audio, None), steps)
    out.info["fit_seconds"] = round(fit_time, 1)
    alpha = choose_denoise(out, audio)
    if alpha is not None:
        out.info["denoise"] = alpha
    # The info changed the metadata: pack again (the same integers) and check the real bytes once more.
    packed, data, used, _, _ = pack_within(out, used, p.budget, None, wide=wide)
    return Result(out, packed, data, p, used, out.info)


def choose_denoise(inr, audio: np.ndarray) -> float | None:
    """For a Siamese SIREN, the ``noise_alpha`` of :data:`DENOISE_ALPHAS` whose decoded output has
    the lowest log-spectral distance to ``audio``, set on ``inr`` (module and config, so the reader
    builds it so); 0 turns the denoiser off. None for a network without the setting.

    The encoder has the original, so it measures rather than assumes: on 1.5 s of read speech at
    48 kb/s the heads' difference made PESQ worse (1.41 to 1.40 at alpha 1, 1.62 to 1.46 at 7 bits)."""
    from . import render
    from .metrics import basic

    if not hasattr(inr.module, "noise_alpha") or "noise_alpha" not in _signature(inr):
        return None
    ref = np.atleast_2d(audio)
    scores = {}
    for alpha in DENOISE_ALPHAS:
        inr.module.noise_alpha = alpha
        y = render.render(inr, inr.sample_rate)
        n = min(ref.shape[1], y.shape[1])
        scores[alpha] = float(np.mean([basic.lsd(ref[c, :n], y[c, :n]) for c in range(ref.shape[0])]))
    best = min(scores, key=scores.get)
    inr.module.noise_alpha = best
    target = inr.config["target"]
    inr.config = {**inr.config, "target": {**target, "params": {**target.get("params", {}), "noise_alpha": best}}}
    return best


def _signature(inr) -> dict:
    from .config import target_signature
    from .plugins import get_registry

    return target_signature(get_registry().get("target_networks", inr.config["target"]["name"]).obj)


def requantize(inr, bits: int) -> tuple[tuple, bytes]:
    """Post-training quantisation of an existing float INR at ``bits`` (``hyperaudio quantize``)."""
    packed, data, _, _, _ = pack_within(inr, bits, None)
    return packed, data
