"""Reconstruction loss of HyperSound (hypersound.md §3.4): λt·L1 + λf·multi-resolution mel-STFT.

Conventions (ParallelWaveGAN / auraloss style), for a prediction ``x`` and a target ``y``:

* Spectra: the frames of ``torch.stft(center=True, pad_mode="reflect")`` with a periodic Hann
  window of ``win_length`` samples, no normalisation. Magnitude
  ``|S| = sqrt(clamp(re² + im², min=eps))``: it never reaches 0, so its gradient stays finite.
* Optional high-frequency weighting (eq. 5): the linear-frequency magnitudes are multiplied by
  :func:`frequency_weights` before the mel projection (folded into the filterbank: one matmul).
* Mel projection: :func:`mel_filterbank` (Slaney mel scale, Slaney area normalisation: librosa's
  default). Filters that cover no FFT bin at small FFT sizes are all-zero rows; they contribute
  exactly 0 to both terms below.
* Per resolution: spectral convergence ``‖Y − X‖_F / ‖Y‖_F`` + log-magnitude distance
  ``mean |log(Y + eps) − log(X + eps)|`` on the mel magnitudes, with ``eps = 1e-7`` in both the
  power clamp and the log (ParallelWaveGAN's clamp value). The two terms are summed with equal
  weight and averaged over resolutions.
* Batches: both terms are computed per item and averaged over the batch. (ParallelWaveGAN and
  auraloss take the Frobenius norms over the whole batch; per item, members fitted together in one
  batch do not interact through the loss, and for ``B = 1`` the two agree.)

Inputs are ``[B, T]`` (any leading dimensions are flattened), prediction first.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

EPS = 1e-7

#: HyperSound §3.4: 128 mel bins, FFT sizes 2048…128, window = FFT size, 75 % overlap.
FFT_SIZES = (2048, 1024, 512, 256, 128)
N_MELS = 128


def frequency_weights(n_bins: int, p: float) -> torch.Tensor:
    """HyperSound eq. 5: ``w_i = N · i^p / Σ_j j^p`` for bins ``i = 1..N`` (float32, shape ``[N]``).

    The paper writes the sum from ``j = 0``; we index bins from 1 on both sides, so the weights sum
    to exactly ``N`` and ``p = 0`` gives exactly uniform weights, which is what the paper says it
    intends ("normalised so that they always sum to N", "p = 0 ... uniform"). ``p > 0`` favours
    high frequencies.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    if not p >= 0:  # also rejects NaN
        raise ValueError(f"the weighting exponent p must be >= 0, got {p}")
    if p == 0:
        return torch.ones(n_bins)
    # float64 then normalise: i^p spans many orders of magnitude for large p.
    w = torch.arange(1, n_bins + 1, dtype=torch.float64).pow(p)
    return (n_bins * w / w.sum()).float()


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa ``htk=False``): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    mel = f / f_sp
    log_part = f >= min_log_hz
    mel[log_part] = min_log_mel + np.log(f[log_part] / min_log_hz) / logstep
    return mel


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    f = f_sp * m
    log_part = m >= min_log_mel
    f[log_part] = min_log_hz * np.exp(logstep * (m[log_part] - min_log_mel))
    return f


def mel_filterbank(sample_rate: float, n_fft: int, n_mels: int = N_MELS, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Triangular mel filters ``[n_mels, n_fft // 2 + 1]`` (float64), as ``librosa.filters.mel``.

    Slaney mel scale and Slaney area normalisation (each triangle scaled by ``2 / bandwidth`` in
    Hz). At small FFT sizes some filters fall between bins and are all zero; that is kept, not an
    error.
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, fmax={fmax}")
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array([fmin]))[0], _hz_to_mel(np.array([fmax]))[0], n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


class MelSTFTLoss(nn.Module):
    """One resolution of the mel-STFT loss: spectral convergence + mean absolute log-mel distance.

    ``forward(pred, target, p=0.0)`` returns a scalar tensor; ``p`` is the weighting exponent of
    eq. 5, an argument rather than a setting so a trainer can ramp it.
    """

    def __init__(self, sample_rate: float, n_fft: int = 1024, hop_length: int | None = None,
                 win_length: int | None = None, n_mels: int = N_MELS, fmin: float = 0.0,
                 fmax: float | None = None, eps: float = EPS):
        super().__init__()
        self.n_fft = int(n_fft)
        self.win_length = int(win_length or n_fft)
        self.hop_length = int(hop_length or self.win_length // 4)
        if not 0 < self.win_length <= self.n_fft or self.hop_length < 1:
            raise ValueError(f"need 0 < win_length <= n_fft and hop_length >= 1 "
                             f"(n_fft={self.n_fft}, win_length={self.win_length}, hop_length={self.hop_length})")
        self.eps = float(eps)
        self.n_bins = self.n_fft // 2 + 1
        # As torch.stft does, a window shorter than the FFT is centred and zero-padded.
        left = (self.n_fft - self.win_length) // 2
        window = nn.functional.pad(torch.hann_window(self.win_length), (left, self.n_fft - self.win_length - left))
        # Non-persistent: derived from the settings, so they stay out of state_dicts but follow .to().
        self.register_buffer("window", window, persistent=False)
        fb = mel_filterbank(sample_rate, self.n_fft, n_mels, fmin, fmax).T  # [bins, mels]: frames-major
        self.register_buffer("filterbank", torch.from_numpy(np.ascontiguousarray(fb)).float(), persistent=False)
        self._weighted = None  # (p, device, dtype, diag(w) · filterbank): p changes only while ramping

    def _projection(self, p: float, like: torch.Tensor) -> torch.Tensor:
        fb = self.filterbank.to(like.dtype)
        if p == 0:
            return fb
        cached = self._weighted
        if cached is None or cached[:3] != (p, fb.device, fb.dtype):
            w = frequency_weights(self.n_bins, p).to(device=fb.device, dtype=fb.dtype)
            self._weighted = cached = (p, fb.device, fb.dtype, w[:, None] * fb)
        return cached[3]

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """Linear-frequency magnitudes ``[B, frames, n_fft // 2 + 1]`` of ``[B, T]`` audio (T >= n_fft).

        Same frames as ``torch.stft(center=True, pad_mode="reflect")``, laid out frames-major:
        framing with ``unfold`` and projecting with ``mag @ filterbank`` backpropagates about 15 %
        faster than ``torch.stft``, whose backward goes through a generic ``as_strided``.
        """
        half = self.n_fft // 2
        padded = nn.functional.pad(x[:, None], (half, half), mode="reflect")[:, 0]
        frames = padded.unfold(-1, self.n_fft, self.hop_length) * self.window.to(x.dtype)
        # max(|S|, sqrt(eps)) equals sqrt(clamp(re² + im², eps)) and costs less than summing squares.
        return torch.fft.rfft(frames, dim=-1).abs().clamp(min=math.sqrt(self.eps))

    def distance(self, pred_mag: torch.Tensor, target_mag: torch.Tensor, p: float = 0.0) -> torch.Tensor:
        """The loss between two :meth:`spectrum` outputs, weighted with exponent ``p``."""
        fb = self._projection(p, pred_mag)
        x, y = pred_mag @ fb, target_mag @ fb
        convergence = torch.linalg.vector_norm(y - x, dim=(-2, -1)) / torch.linalg.vector_norm(y, dim=(-2, -1))
        log_distance = (torch.log(y + self.eps) - torch.log(x + self.eps)).abs().mean(dim=(-2, -1))
        return (convergence + log_distance).mean()

    def forward(self, pred: torch.Tensor, target: torch.Tensor, p: float = 0.0) -> torch.Tensor:
        pred, target = _as_batch(pred, target)
        if pred.shape[-1] < self.n_fft:
            raise ValueError(f"signal of {pred.shape[-1]} samples is shorter than the FFT size {self.n_fft}")
        return self.distance(self.spectrum(pred), self.spectrum(target), p)


class MultiResolutionMelSTFTLoss(nn.Module):
    """The mel-STFT loss averaged over several resolutions (HyperSound §3.4 defaults).

    ``hop_sizes`` defaults to FFT / 4 and ``win_lengths`` to the FFT size. Resolutions whose FFT
    size exceeds the signal length are skipped (a window longer than the signal measures nothing,
    and reflect padding would fail); if none fits, the loss is 0.

    The target's spectra are cached while the very same, unmodified target tensor comes back (a
    fit passes one target for thousands of steps): that saves the target's STFTs, about 15 % of
    the cost. A target that requires grad is never cached.
    """

    def __init__(self, sample_rate: float, fft_sizes=FFT_SIZES, hop_sizes=None, win_lengths=None,
                 n_mels: int = N_MELS, fmin: float = 0.0, fmax: float | None = None, eps: float = EPS):
        super().__init__()
        fft_sizes = [int(n) for n in fft_sizes]
        hop_sizes = list(hop_sizes) if hop_sizes is not None else [n // 4 for n in fft_sizes]
        win_lengths = list(win_lengths) if win_lengths is not None else list(fft_sizes)
        if not len(fft_sizes) == len(hop_sizes) == len(win_lengths) > 0:
            raise ValueError("fft_sizes, hop_sizes and win_lengths must be non-empty and of equal length")
        self.resolutions = nn.ModuleList(
            MelSTFTLoss(sample_rate, n, h, w, n_mels, fmin, fmax, eps)
            for n, h, w in zip(fft_sizes, hop_sizes, win_lengths)
        )
        self._target_cache = None  # (target, key, [spectrum per resolution])

    def _target_spectra(self, target: torch.Tensor, flat: torch.Tensor, used) -> list[torch.Tensor]:
        if target.requires_grad or target.is_inference():  # inference tensors have no version counter
            return [r.spectrum(flat) for r in used]
        # Holding the tensor itself keeps its memory from being reused by another tensor; the
        # version counter catches in-place edits.
        key = (target._version, target.data_ptr(), target.shape, target.dtype, target.device, len(used))
        cached = self._target_cache
        if cached is None or cached[0] is not target or cached[1] != key:
            with torch.no_grad():
                self._target_cache = cached = (target, key, [r.spectrum(flat) for r in used])
        return cached[2]

    def forward(self, pred: torch.Tensor, target: torch.Tensor, p: float = 0.0) -> torch.Tensor:
        flat_pred, flat_target = _as_batch(pred, target)
        used = [r for r in self.resolutions if r.n_fft <= flat_pred.shape[-1]]
        if not used:
            return flat_pred.new_zeros(())
        target_mags = self._target_spectra(target, flat_target, used)
        total = sum(r.distance(r.spectrum(flat_pred), y, p) for r, y in zip(used, target_mags))
        return total / len(used)


class ReconstructionLoss(nn.Module):
    """HyperSound eq. 4: ``λt · L1(pred, target) + λf · multi-resolution mel-STFT(pred, target)``.

    ``forward(pred, target, step=None)`` returns ``(total, {"l1": float, "stft": float})``; the
    parts are the unweighted terms, detached, ready to log (``"stft"`` is 0.0 when ``λf = 0``, as it
    is then not computed). The weighting exponent ramps linearly from 0 at ``step = 0`` to ``p`` at
    ``step = ramp_steps`` (the paper ramps over 500 epochs; a trainer counts steps); with
    ``ramp_steps = 0`` or ``step=None`` the target ``p`` applies. ``stft_kwargs`` go to
    :class:`MultiResolutionMelSTFTLoss` (``fft_sizes``, ``hop_sizes``, ``win_lengths``, ``n_mels``,
    ``fmin``, ``fmax``, ``eps``); signals shorter than an FFT size skip that resolution.
    """

    def __init__(self, sample_rate: float, lambda_t: float = 1.0, lambda_f: float = 1.0, p: float = 0.0,
                 ramp_steps: int = 0, **stft_kwargs):
        super().__init__()
        if not p >= 0:
            raise ValueError(f"the weighting exponent p must be >= 0, got {p}")
        if ramp_steps < 0:
            raise ValueError(f"ramp_steps must be >= 0, got {ramp_steps}")
        self.lambda_t, self.lambda_f = float(lambda_t), float(lambda_f)
        self.p, self.ramp_steps = float(p), int(ramp_steps)
        self.stft = MultiResolutionMelSTFTLoss(sample_rate, **stft_kwargs)

    def p_at(self, step: int | None) -> float:
        """The weighting exponent in force at ``step``."""
        if step is None or self.ramp_steps == 0:
            return self.p
        return self.p * min(max(step, 0) / self.ramp_steps, 1.0)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, step: int | None = None):
        _as_batch(pred, target)  # validates; the STFT loss gets the caller's target for its cache
        l1 = (pred - target).abs().mean()
        total = self.lambda_t * l1
        stft = pred.new_zeros(())
        if self.lambda_f:
            stft = self.stft(pred, target, self.p_at(step))
            total = total + self.lambda_f * stft
        return total, {"l1": float(l1.detach()), "stft": float(stft.detach())}


def _as_batch(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"prediction and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.dim() == 0 or pred.shape[-1] == 0:
        raise ValueError(f"expected audio shaped [B, T] with T > 0, got {tuple(pred.shape)}")
    return pred.reshape(-1, pred.shape[-1]), target.reshape(-1, target.shape[-1])
