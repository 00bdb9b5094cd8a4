"""Signal-level metrics (KAN/FewSound §4: MSE, PSNR, LSD, SI-SNR; §4.4: spectral Wasserstein).

Each takes two 1-D arrays of equal length, reference first, and returns a float. Computation is in
float64 whatever the input dtype. Amplitudes are assumed to lie in [-1, 1].
"""

from __future__ import annotations

import numpy as np

#: Power floor of :func:`lsd` (−80 dB re a unit STFT bin), so silent bins give a finite log.
LSD_EPS = 1e-8
#: Energy floor of :func:`si_snr`, the value the fitting loop uses, so the numbers agree with its log.
SI_SNR_EPS = 1e-8


def _pair(ref, est) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, dtype=np.float64)
    est = np.asarray(est, dtype=np.float64)
    if ref.ndim != 1 or ref.shape != est.shape or ref.size == 0:
        raise ValueError(f"expected two non-empty 1-D signals of equal length, got {ref.shape} and {est.shape}")
    return ref, est


def mse(ref, est) -> float:
    """Mean squared error."""
    ref, est = _pair(ref, est)
    return float(np.mean((ref - est) ** 2))


def psnr(ref, est) -> float:
    """Peak signal-to-noise ratio in dB: ``10·log10(4 / MSE)``.

    The peak is the peak-to-peak range of the [-1, 1] amplitude scale, 2, so ``peak² = 4``
    (independent of the actual signal's peak, so values compare across clips). ``inf`` when
    ``MSE = 0``.
    """
    error = mse(ref, est)
    return float("inf") if error == 0 else float(10 * np.log10(4.0 / error))


def _log_power_frames(x: np.ndarray, n_fft: int, hop: int, block: int):
    """``log10(|STFT|² + eps)`` in blocks of frames ``[frames, bins]``: periodic Hann, centred
    frames, zero padding at the ends. Blocks bound the memory on long recordings."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, n_fft // 2), n_fft)[::hop]
    for start in range(0, len(frames), block):
        spectrum = np.fft.rfft(frames[start : start + block] * window, axis=-1)
        yield np.log10(spectrum.real**2 + spectrum.imag**2 + LSD_EPS)


def lsd(ref, est, n_fft: int = 2048, hop: int = 512) -> float:
    """Log-spectral distance: mean over frames of ``sqrt(mean over bins of (log10 P_ref − log10 P_est)²)``.

    ``P = |STFT|² + 1e-8`` with a periodic Hann window of ``n_fft = 2048`` samples, hop 512 and
    centred, zero-padded frames. A signal shorter than ``n_fft`` uses the largest power of two not
    above its length (at least 2) and hop ``n_fft / 4``. Unitless (log10 of power, i.e. bels).
    """
    ref, est = _pair(ref, est)
    if ref.size < n_fft:
        n_fft = max(2, 1 << (ref.size.bit_length() - 1))
        hop = max(1, n_fft // 4)
    block = max(1, (1 << 20) // n_fft)
    per_frame = [
        np.sqrt(np.mean((a - b) ** 2, axis=-1))
        for a, b in zip(_log_power_frames(ref, n_fft, hop, block), _log_power_frames(est, n_fft, hop, block))
    ]
    return float(np.mean(np.concatenate(per_frame)))


def si_snr(ref, est) -> float:
    """Scale-invariant SNR in dB (both signals made zero-mean first).

    ``s = (<est, ref> / ‖ref‖²) · ref``, ``e = est − s``, ``10·log10((‖s‖² + ε) / (‖e‖² + ε))`` with
    ``ε = 1e-8``, as in the fitting loop: identical signals give a large finite value (about
    ``10·log10(‖ref‖² / ε)``), not ``inf``, and a silent reference gives no NaN.
    """
    ref, est = _pair(ref, est)
    ref = ref - ref.mean()
    est = est - est.mean()
    scale = np.dot(est, ref) / (np.dot(ref, ref) + SI_SNR_EPS)
    target = scale * ref
    noise = est - target
    return float(10 * np.log10((np.dot(target, target) + SI_SNR_EPS) / (np.dot(noise, noise) + SI_SNR_EPS)))


def spectral_wasserstein(ref, est) -> float:
    """Wasserstein-1 distance between the magnitude spectra, high-frequency biased (KAN/FewSound §4.4).

    ``|rFFT|`` of each signal, normalised to sum 1, is a distribution over the ``n = N // 2 + 1``
    one-sided bins placed at the squared indices ``[0, 1, 4, …, (n − 1)²]`` (so errors at high
    frequencies cost more); W1 is computed from the CDFs, ``Σ_k |F_ref(k) − F_est(k)| · (s_{k+1} − s_k)``,
    and divided by the signal length ``N`` as in the paper's Table 11. The paper's wording uses
    ``len(audio)`` points, i.e. the two-sided FFT; its mirrored half would put low frequencies at the
    top of the support, so we use the one-sided spectrum: values are comparable among themselves,
    not with Table 11. Both signals silent: 0; one silent: NaN (no distribution to compare).
    """
    ref, est = _pair(ref, est)
    a, b = np.abs(np.fft.rfft(ref)), np.abs(np.fft.rfft(est))
    total_a, total_b = a.sum(), b.sum()
    if total_a == 0 or total_b == 0:
        return 0.0 if total_a == total_b else float("nan")
    support = np.arange(a.size, dtype=np.float64) ** 2
    cdf_gap = np.abs(np.cumsum(a / total_a) - np.cumsum(b / total_b))[:-1]
    return float(np.dot(cdf_gap, np.diff(support)) / ref.size)
