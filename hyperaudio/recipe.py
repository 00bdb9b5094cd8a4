"""The budget-aware fit recipe (``fit.recipe = "auto"``): one schedule for any target network.

The papers' recipes (the ``*-inr`` presets, ``fit.recipe = "fixed"``) assume 10,000 GPU steps.
On a budget of minutes on a CPU most networks are still near silence when they run out: their
learning rate and frequency scale suit one network and one kind of sound. This recipe measures
both on the sound itself, then spends the budget in two phases (:func:`hyperaudio.fit.fit`):

1. **Race.** Candidate settings start from the same initialisation and take a few steps side by
   side, in one batched call, on the loudest chunk. First the learning rates of
   :data:`RACE_LRS` (at time scale 1), then the time scales of :data:`RACE_SCALES` at the winning
   rate and, for a network with a NeRF positional encoding or random Fourier features, the
   sound's partials in that encoding (:func:`spectral_encoding`). The lowest L1 over the whole
   chunk wins. A candidate that is no closer to the sound than silence is out. If all are out, the
   race restarts from another initialisation (with the spectral encoding, or a spectrum-matched
   time scale): a fit that is not learning is caught at once instead of running to the end of its
   budget.
2. **Waveform phase.** L1 on :data:`BATCH_SAMPLES` random samples per step (an unbiased estimate
   of the whole chunk's L1, several times cheaper), cosine-decayed learning rate.
3. **Spectrum phase**, from :data:`STFT_FROM` of the budget. L1 plus :data:`STFT_WEIGHT` times
   the multi-resolution mel-STFT loss of HyperSound (eq. 4) on the whole chunk. The mel term needs
   contiguous samples: on random crops it undid the waveform (SIREN, speech: 12.5 dB down to
   -16 dB); on the whole chunk at weight 0.1 SI-SNR held and PESQ rose from 1.96 to 2.85. Where
   the waveform is still poor the phase-blind mel term can undo it all the same (SIREN on a bell:
   7.6 dB down to -12.9 dB). So the fit is guarded, in both phases: when SI-SNR falls more than
   :data:`SISNR_TOLERANCE` below the best so far, it goes back to that point, clears Adam's state
   and halves the mel weight (:func:`weaker`).

The **time scale** ``s`` multiplies the coordinate a network sees, ``t ∈ [-s, s]`` instead of
``[-1, 1]`` (``target.time_scale``, applied by :func:`hyperaudio.config.build_target`, so every
renderer and exporter sees it). It is SIREN's ω0, the RFF σ and the NeRF encoding's frequencies
multiplied by ``s``, for any network: a sound whose energy sits in one high partial (a struck bell
at 6.7 kHz) needs a larger one than speech, where a large one fits noise.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .functional import call_batched, fresh_parameters
from .targets.encoding import FourierFeatures, PositionalEncoding

#: Learning rates raced first: SIREN-like networks want 1e-4 to 3e-4, ReLU ones 3e-3 to 1e-2.
RACE_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
#: Time scales raced at the winning learning rate (1 is already measured by the first stage).
RACE_SCALES = (4.0, 16.0)
RACE_STEPS = 60  # steps per stage
RACE_SAMPLES = 4096  # random samples per race step
RACE_FRACTION = 0.15  # at most this share of the budget goes to the race
RACE_RESTARTS = 2  # new initialisations tried when no learning rate beats silence
MAX_SCALE = 64.0
DEFAULT_SECONDS = 120.0  # the CLI's and the app's budget when none is given
BATCH_SAMPLES = 8192
STFT_FROM = 0.5
STFT_WEIGHT = 0.1
SISNR_TOLERANCE = 0.5  # dB of SI-SNR the spectrum phase may give up for a better spectrum


def weaker(weight: float) -> float:
    """The mel-STFT weight after it undid the waveform: half, and 0 (the waveform phase goes on)
    after four halvings."""
    return weight / 2 if weight > STFT_WEIGHT / 10 else 0.0


def median_frequency(x: torch.Tensor) -> float:
    """The frequency below which half the energy of ``x`` (``[N]``) lies, in cycles per sample."""
    power = torch.fft.rfft(x - x.mean()).abs().pow(2)
    cumulative = power.cumsum(0)
    return float(torch.searchsorted(cumulative, 0.5 * cumulative[-1])) / x.shape[0]


def spectrum_matched_scale(module: torch.nn.Module, init: dict[str, torch.Tensor], t: torch.Tensor,
                           target: torch.Tensor) -> float:
    """The time scale that moves the median frequency of the network's initial output onto the
    target's: ``f(s·t)`` has the spectrum of ``f(t)`` stretched by ``s``. Clamped to [1, MAX_SCALE]."""
    with torch.no_grad():
        out = call_batched(module, init, t)[0, :, 0]
    produced, wanted = median_frequency(out), median_frequency(target)
    return float(min(max(wanted / max(produced, 1.0 / t.shape[0]), 1.0), MAX_SCALE))


def spectral_peaks(x: torch.Tensor, count: int) -> torch.Tensor:
    """Angular frequencies, in radians per unit of ``t`` on :func:`hyperaudio.fit.time_grid`, of the
    ``count`` strongest peaks of the spectrum of ``x`` (``[N]``), ascending. Peaks are local maxima
    over ``N / 512`` bins (43 Hz at 32768 samples and 22.05 kHz), so one partial counts once."""
    n = x.shape[0]
    power = torch.fft.rfft((x - x.mean()) * torch.hann_window(n, dtype=x.dtype, device=x.device)).abs().pow(2)
    reach = max(1, n // 1024)
    pooled = F.max_pool1d(power.view(1, 1, -1), 2 * reach + 1, stride=1, padding=reach).view(-1)
    peaks = torch.nonzero((power == pooled) & (power > 0)).view(-1)
    peaks = peaks[peaks > 0]  # not DC
    top = peaks[power[peaks].argsort(descending=True)[:count]]
    # Bin k is k cycles per N samples; the grid spans 2 units of t in N - 1 steps.
    return torch.sort(top.to(torch.float64) * math.pi * (n - 1) / n).values.to(x.dtype)


def with_partials(frequencies: torch.Tensor, target: torch.Tensor, radians_per_unit: float) -> torch.Tensor:
    """``frequencies`` with its half farthest from 0 replaced by the strongest partials of
    ``target``, in the encoding's unit (``radians_per_unit`` radians); the half nearest 0 (the low
    octaves, or the Gaussian's low half of RFF's ``B``) keeps the envelope."""
    flat = frequencies.reshape(-1)
    peaks = spectral_peaks(target.to(flat.dtype), flat.numel() // 2).to(flat.device) / radians_per_unit
    new = flat.clone()
    new[flat.abs().argsort()[flat.numel() - peaks.numel():]] = peaks
    return new.view_as(frequencies)


def spectral_encoding(module: torch.nn.Module, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """New frequencies for every NeRF positional encoding and random Fourier features in ``module``
    (``{buffer name: tensor}``, empty when it has none): the lower half of its octaves (or of ``B``,
    by magnitude), which shape the envelope, and the strongest partials of ``target`` in place of
    the upper half.

    An octave ladder can only make a partial that falls between two of its rungs by intermodulation,
    which gradient descent does not find: KAN and NeRF learnt nothing of a struck bell (partials at
    1.3, 3.5, 4.3, 6.7 and 10.4 kHz) at any learning rate or time scale. The frequencies are
    buffers, so the ``.hya`` file, rendering and ONNX export carry them."""
    found = {}
    for name, encoding in module.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(encoding, PositionalEncoding):  # radians per unit of t
            found[prefix + "frequencies"] = with_partials(encoding.frequencies, target, 1.0)
        elif isinstance(encoding, FourierFeatures):  # random Fourier features: cycles per unit of t
            found[prefix + "B"] = with_partials(encoding.B, target, 2 * math.pi)
    return found


def set_buffers(module: torch.nn.Module, buffers: dict[str, torch.Tensor]) -> torch.nn.Module:
    with torch.no_grad():
        for name, value in buffers.items():
            module.get_buffer(name).copy_(value)
    return module


@dataclass
class RaceResult:
    lr: float
    time_scale: float
    steps: int  # batched race steps taken
    seconds: float
    restarts: int
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)  # spectral encoding, when chosen


def race_stage(module: torch.nn.Module, init: dict[str, torch.Tensor], t: torch.Tensor, target: torch.Tensor,
               lrs, scales, *, steps: int, generator: torch.Generator,
               keep_going: Callable[[], bool] = lambda: True) -> tuple[list[float], int, dict[str, torch.Tensor]]:
    """Candidate ``k`` (learning rate ``lrs[k]``, time scale ``scales[k]``) takes up to ``steps``
    Adam steps from ``init`` (``{name: [1, *shape]}``), all in one batched call.

    Returns each candidate's L1 over the whole of ``target`` (``[N]``), the steps taken and the
    parameters (``{name: [K, *shape]}``).
    """
    k = len(lrs)
    params = {n: p.to(t.device).repeat(k, *[1] * (p.dim() - 1)).requires_grad_(True) for n, p in init.items()}
    rates = torch.tensor(lrs, device=t.device, dtype=t.dtype)
    grid = t.unsqueeze(0) * torch.tensor(scales, device=t.device, dtype=t.dtype).view(k, 1, 1)  # [K, N, 1]
    # Adam at lr 1, then each candidate's update scaled by its own rate: exactly Adam at that rate
    # (its update is linear in the rate), for every candidate in one call.
    optimizer = torch.optim.Adam(list(params.values()), lr=1.0)
    n, taken = t.shape[0], 0
    while taken < steps and keep_going():
        idx = torch.randint(0, n, (min(RACE_SAMPLES, n),), generator=generator, device=t.device)
        pred = call_batched(module, params, grid[:, idx])  # [K, n, H]
        loss = (pred - target[idx].view(1, -1, 1)).abs().mean()
        before = [p.detach().clone() for p in params.values()]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for p, b in zip(params.values(), before):
                p.copy_(b + (p - b) * rates.view(-1, *[1] * (p.dim() - 1)))
        taken += 1
    with torch.no_grad():
        l1 = (call_batched(module, params, grid) - target.view(1, -1, 1)).abs().mean(dim=(1, 2))
    return l1.tolist(), taken, {n: p.detach() for n, p in params.items()}


def race(module: torch.nn.Module, factory: Callable[[], torch.nn.Module], t: torch.Tensor, target: torch.Tensor,
         *, max_seconds: float, max_steps: int, generator: torch.Generator,
         should_stop: Callable[[], bool] | None = None) -> RaceResult:
    """Choose the learning rate and time scale for ``target`` (``[N]``) on the grid ``t`` (``[N, 1]``).

    ``max_seconds`` (0 = no limit) and ``max_steps`` bound the whole race; a stage cut short is
    judged on the steps it took.
    """
    start = time.perf_counter()
    silence = float(target.abs().mean())
    steps = 0

    def keep_going() -> bool:
        return (steps < max_steps and not (max_seconds and time.perf_counter() - start >= max_seconds)
                and not (should_stop is not None and should_stop()))

    def stage(lrs, scales, init) -> list[float]:
        nonlocal steps
        budget = min(RACE_STEPS, max_steps - steps)
        l1, taken, _ = race_stage(module, init, t, target, lrs, scales, steps=budget, generator=generator,
                                  keep_going=keep_going)
        steps += taken
        # Not closer to the sound than silence (or not finite): this candidate learnt nothing.
        return [v if v < 0.98 * silence else math.inf for v in l1]

    init = fresh_parameters(factory, 1)
    scale = 1.0
    lrs = stage(RACE_LRS, [scale] * len(RACE_LRS), init)
    restarts, buffers = 0, {}
    spectral = spectral_encoding(module, target)
    octaves = {name: module.get_buffer(name).clone() for name in spectral}
    while min(lrs) == math.inf and restarts < RACE_RESTARTS and keep_going():
        # Nothing learnt: most often the sound's energy lies far above what the network produces at
        # its initialisation (a bell's 6.7 kHz partial). Start again from a new initialisation: with
        # the sound's partials in the network's positional encoding where it has one, else with
        # its output spectrum stretched onto the sound's.
        restarts += 1
        init = fresh_parameters(factory, 1)
        buffers = spectral if spectral and not buffers else {}
        set_buffers(module, buffers or octaves)
        scale = 1.0 if buffers else spectrum_matched_scale(module, init, t, target)
        lrs = stage(RACE_LRS, [scale] * len(RACE_LRS), init)
    best = min(range(len(lrs)), key=lrs.__getitem__)
    lr, best_l1 = RACE_LRS[best], lrs[best]
    if scale == 1.0 and not buffers and best_l1 < math.inf and keep_going():
        # The scales start from the initialisation the winning rate had.
        others = stage([lr] * len(RACE_SCALES), RACE_SCALES, init)
        for s, v in zip(RACE_SCALES, others):
            if v < best_l1:
                scale, best_l1 = s, v
        if spectral and keep_going():
            # The sound's partials in the encoding race too, at the winning rate and its neighbours.
            near = RACE_LRS[max(best - 1, 0): best + 2]
            set_buffers(module, spectral)
            for r, v in zip(near, stage(near, [1.0] * len(near), init)):
                if v < best_l1:
                    lr, scale, buffers, best_l1 = r, 1.0, spectral, v
            set_buffers(module, buffers or octaves)
    return RaceResult(lr, scale, steps, time.perf_counter() - start, restarts, buffers)
