"""The reconstruction loss (hypersound.md §3.4), checked against an independent numpy computation."""

import math

import numpy as np
import pytest
import torch

from hyperaudio.loss import (
    EPS,
    MelSTFTLoss,
    MultiResolutionMelSTFTLoss,
    ReconstructionLoss,
    frequency_weights,
    mel_filterbank,
)

SR = 22050


def naive_slaney_mel(sr, n_fft, n_mels):
    """Slaney mel filters written out filter by filter, bin by bin (independent of hyperaudio)."""

    def to_mel(f):
        return f / (200 / 3) if f < 1000 else 15 + math.log(f / 1000) * 27 / math.log(6.4)

    def to_hz(m):
        return m * 200 / 3 if m < 15 else 1000 * math.exp((m - 15) * math.log(6.4) / 27)

    top = to_mel(sr / 2)
    edges = [to_hz(top * k / (n_mels + 1)) for k in range(n_mels + 2)]
    fb = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        lo, mid, hi = edges[m : m + 3]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if lo < f < hi:
                fb[m, k] = (f - lo) / (mid - lo) if f <= mid else (hi - f) / (hi - mid)
        fb[m] *= 2 / (hi - lo)
    return fb


def test_frequency_weights():
    for n in (1, 65, 1025):
        assert torch.equal(frequency_weights(n, 0.0), torch.ones(n))
        for p in (0.5, 1.0, 3.0):
            w = frequency_weights(n, p)
            assert w.sum().item() == pytest.approx(n, rel=1e-5)
            if n > 1:
                assert torch.all(w[1:] > w[:-1])
                assert w[0] < 1 < w[-1]
    # eq. 5 written out for N = 4, p = 1: 4 · i / (1 + 2 + 3 + 4)
    assert torch.allclose(frequency_weights(4, 1.0), torch.tensor([0.4, 0.8, 1.2, 1.6]))
    with pytest.raises(ValueError):
        frequency_weights(8, -1.0)


def test_mel_filterbank_is_slaney():
    for n_fft, n_mels in ((2048, 128), (128, 128), (64, 10)):
        fb = mel_filterbank(SR, n_fft, n_mels)
        assert np.all(np.isfinite(fb))
        np.testing.assert_allclose(fb, naive_slaney_mel(SR, n_fft, n_mels), atol=1e-12)
    assert np.any(mel_filterbank(SR, 128, 128).sum(1) == 0)  # empty filters at small FFT sizes are kept
    librosa = pytest.importorskip("librosa", reason="librosa (hyperaudio[metrics]) not installed")
    np.testing.assert_allclose(mel_filterbank(SR, 1024, 128), librosa.filters.mel(sr=SR, n_fft=1024, n_mels=128),
                               rtol=1e-5, atol=1e-9)


def test_hand_computed_single_resolution():
    """SC + log-mel distance of a tiny configuration, from numpy's rfft on hand-made frames."""
    sr, n_fft, hop, n_mels, p = 8000, 16, 4, 4, 1.5
    rng = np.random.default_rng(0)
    target = rng.standard_normal((2, 64))
    pred = target + 0.3 * rng.standard_normal((2, 64))

    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    bins = n_fft // 2 + 1
    weights = bins * np.arange(1, bins + 1) ** p / np.sum(np.arange(1, bins + 1) ** p)
    fb = naive_slaney_mel(sr, n_fft, n_mels)

    def mel_magnitudes(x):
        padded = np.pad(x, n_fft // 2, mode="reflect")
        frames = np.array([padded[i : i + n_fft] for i in range(0, len(padded) - n_fft + 1, hop)])
        power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
        return fb @ (weights[:, None] * np.sqrt(np.maximum(power, EPS)).T)

    expected = []
    for x_wave, y_wave in zip(pred, target):
        x, y = mel_magnitudes(x_wave), mel_magnitudes(y_wave)
        convergence = np.linalg.norm(y - x) / np.linalg.norm(y)
        log_distance = np.mean(np.abs(np.log(y + EPS) - np.log(x + EPS)))
        expected.append(convergence + log_distance)
    expected = float(np.mean(expected))

    module = MelSTFTLoss(sr, n_fft, hop, n_fft, n_mels)
    got = module(torch.from_numpy(pred), torch.from_numpy(target), p=p).item()
    assert got == pytest.approx(expected, rel=1e-6)

    multi = MultiResolutionMelSTFTLoss(sr, fft_sizes=[n_fft], hop_sizes=[hop], n_mels=n_mels)
    assert multi(torch.from_numpy(pred), torch.from_numpy(target), p=p).item() == pytest.approx(expected, rel=1e-6)
    full = ReconstructionLoss(sr, lambda_t=0.5, lambda_f=2.0, p=p, fft_sizes=[n_fft], hop_sizes=[hop], n_mels=n_mels)
    total, parts = full(torch.from_numpy(pred), torch.from_numpy(target))
    l1 = np.mean(np.abs(pred - target))
    assert total.item() == pytest.approx(0.5 * l1 + 2.0 * expected, rel=1e-6)
    assert parts == pytest.approx({"l1": l1, "stft": expected}, rel=1e-6)


def test_zero_for_identical_inputs_and_finite_gradients():
    loss = ReconstructionLoss(SR, p=2.0)
    target = torch.randn(2, 4096)
    pred = target.clone().requires_grad_(True)
    total, parts = loss(pred, target)
    assert total.item() == 0.0 and parts == {"l1": 0.0, "stft": 0.0}
    total.backward()
    assert torch.all(torch.isfinite(pred.grad))
    for pred in (torch.randn(2, 4096), torch.zeros(2, 4096)):  # random, and silent (clamped magnitudes)
        pred.requires_grad_(True)
        total, _ = loss(pred, target)
        total.backward()
        assert torch.isfinite(total) and total.item() > 0
        assert torch.all(torch.isfinite(pred.grad)) and pred.grad.abs().sum() > 0


def test_lambda_weighting():
    target = torch.randn(1, 4096)
    pred = target + 0.1 * torch.randn(1, 4096)
    _, parts = ReconstructionLoss(SR)(pred, target)
    for lt, lf in ((1.0, 1.0), (2.0, 0.5), (0.0, 3.0)):
        total, p = ReconstructionLoss(SR, lambda_t=lt, lambda_f=lf)(pred, target)
        assert total.item() == pytest.approx(lt * parts["l1"] + lf * parts["stft"], rel=1e-6)
    total, p = ReconstructionLoss(SR, lambda_f=0.0)(pred, target)
    assert total.item() == pytest.approx(parts["l1"]) and p["stft"] == 0.0


def test_weighting_exponent_ramp():
    loss = ReconstructionLoss(SR, p=2.0, ramp_steps=100)
    assert [loss.p_at(s) for s in (0, 25, 100, 1000, None)] == [0.0, 0.5, 2.0, 2.0, 2.0]
    assert ReconstructionLoss(SR, p=2.0).p_at(0) == 2.0  # no ramp
    target = torch.randn(1, 4096)
    pred = target + 0.1 * torch.randn(1, 4096)
    at = {s: loss(pred, target, step=s)[0].item() for s in (0, 50, 100)}
    assert at[0] == pytest.approx(ReconstructionLoss(SR, p=0.0)(pred, target)[0].item(), rel=1e-6)
    assert at[50] == pytest.approx(ReconstructionLoss(SR, p=1.0)(pred, target)[0].item(), rel=1e-6)
    assert at[100] == pytest.approx(ReconstructionLoss(SR, p=2.0)(pred, target)[0].item(), rel=1e-6)
    assert at[0] != at[100]


def test_short_signals_skip_resolutions_that_do_not_fit():
    target = torch.randn(1, 300)
    pred = target + 0.1 * torch.randn(1, 300)
    got = MultiResolutionMelSTFTLoss(SR)(pred, target)
    assert got.item() == pytest.approx(MultiResolutionMelSTFTLoss(SR, fft_sizes=(256, 128))(pred, target).item())
    total, parts = ReconstructionLoss(SR)(pred[:, :50], target[:, :50])  # shorter than every FFT
    assert parts["stft"] == 0.0 and total.item() == pytest.approx(parts["l1"])
    with pytest.raises(ValueError, match="shapes differ"):
        ReconstructionLoss(SR)(pred, target[:, :200])


def test_batch_items_are_independent_and_target_cache_is_safe():
    loss = ReconstructionLoss(SR)
    target = torch.randn(2, 4096)
    target[1] *= 0.01  # a quiet member must not be drowned by a loud one
    pred = target + 0.05 * torch.randn(2, 4096)
    both = loss(pred, target)[1]["stft"]
    each = [ReconstructionLoss(SR)(pred[i : i + 1], target[i : i + 1])[1]["stft"] for i in range(2)]
    assert both == pytest.approx(np.mean(each), rel=1e-5)
    # The cached target spectra must follow an in-place edit of the target.
    with torch.no_grad():
        target.mul_(0.5)
    assert loss(pred, target)[1]["stft"] == pytest.approx(ReconstructionLoss(SR)(pred, target)[1]["stft"], rel=1e-6)
