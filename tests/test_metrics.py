"""Metrics: ideal values, monotonicity in the noise level, known cases, and evaluate()'s contract."""

import sys

import numpy as np
import pytest

from conftest import speechlike
from hyperaudio import metrics
from hyperaudio.metrics import basic

SR = 22050
LIGHT = ["mse", "psnr", "lsd", "si-snr", "wasserstein"]


@pytest.fixture(scope="module")
def clean():
    return speechlike(SR, 1.0).astype(np.float64)


def noisy(x, level, seed=1):
    return x + level * np.random.default_rng(seed).standard_normal(x.size)


def test_table():
    assert set(metrics.METRICS) == {"mse", "psnr", "lsd", "si-snr", "pesq", "stoi", "visqol", "cdpam", "wasserstein"}
    assert metrics.DEFAULT_METRICS == LIGHT
    assert all(m.better in ("higher", "lower") and m.description for m in metrics.METRICS.values())


def test_identical_signals_score_ideal(clean):
    values = metrics.evaluate(clean, clean, SR)
    assert list(values) == LIGHT
    assert values["mse"] == 0 and values["psnr"] == float("inf") and values["lsd"] == 0
    assert values["wasserstein"] == 0
    assert values["si-snr"] > 80


def test_more_noise_is_worse_for_every_light_metric(clean):
    rows = [metrics.evaluate(clean, noisy(clean, level), SR) for level in (0.001, 0.01, 0.05, 0.2)]
    for name in LIGHT:
        values = [row[name] for row in rows]
        steps = np.diff(values) if metrics.METRICS[name].better == "lower" else -np.diff(values)
        assert np.all(steps > 0), (name, values)


def test_si_snr_scale_and_offset_invariant(clean):
    est = noisy(clean, 0.05)
    reference = basic.si_snr(clean, est)
    assert basic.si_snr(clean, 3.7 * est) == pytest.approx(reference, abs=1e-6)
    assert basic.si_snr(0.2 * clean, est) == pytest.approx(reference, abs=1e-6)
    assert basic.si_snr(clean, est + 0.1) == pytest.approx(reference, abs=1e-6)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_si_snr_known_case(clean, snr_db):
    x = clean - clean.mean()
    noise = np.random.default_rng(2).standard_normal(x.size)
    noise *= np.sqrt(np.sum(x**2) / np.sum(noise**2) / 10 ** (snr_db / 10))
    assert basic.si_snr(clean, clean + noise) == pytest.approx(snr_db, abs=0.5)


def test_psnr_and_lsd_known_cases(clean):
    assert basic.psnr(clean, clean + 0.01) == pytest.approx(10 * np.log10(4 / 1e-4))
    # Ten times the amplitude is 100 times the power: 2 bels in every bin that is well above eps.
    white = 0.5 * np.random.default_rng(3).standard_normal(8192)
    assert basic.lsd(white, 10 * white) == pytest.approx(2.0, abs=1e-3)
    assert np.isfinite(basic.lsd(white[:100], 10 * white[:100]))  # shorter than the FFT


def test_wasserstein_matches_scipy(clean):
    stats = pytest.importorskip("scipy.stats")
    est = noisy(clean, 0.05)
    a, b = np.abs(np.fft.rfft(clean)), np.abs(np.fft.rfft(est))
    support = np.arange(a.size, dtype=np.float64) ** 2
    expected = stats.wasserstein_distance(support, support, a, b) / clean.size
    assert basic.spectral_wasserstein(clean, est) == pytest.approx(expected, rel=1e-6)
    assert basic.spectral_wasserstein(np.zeros(64), np.zeros(64)) == 0.0


def test_evaluate_channels_lengths_and_names(clean):
    est = noisy(clean, 0.05)
    stereo = metrics.evaluate(np.stack([clean, 0.5 * clean]), np.stack([est, 0.5 * est]), SR, ["mse", "si-snr"])
    left, right = metrics.evaluate(clean, est, SR, ["mse", "si-snr"]), metrics.evaluate(0.5 * clean, 0.5 * est, SR,
                                                                                         ["mse", "si-snr"])
    assert stereo == pytest.approx({k: (left[k] + right[k]) / 2 for k in left})
    trimmed = metrics.evaluate(clean, np.concatenate([est, np.zeros(3)]), SR, "mse")
    assert trimmed == pytest.approx({"mse": basic.mse(clean, est)})
    with pytest.raises(ValueError, match="lengths differ"):
        metrics.evaluate(clean, est[: -SR // 10], SR)
    with pytest.raises(ValueError, match="known: mse, psnr"):
        metrics.evaluate(clean, est, SR, ["mse", "snr"])
    with pytest.raises(ValueError, match="sample rate"):
        metrics.evaluate(clean, est, 0)
    with pytest.raises(ValueError, match="channel counts differ"):
        metrics.evaluate(np.stack([clean, clean]), est, SR)
    with pytest.raises(ValueError, match="NaN"):
        metrics.evaluate(clean, np.full_like(est, np.nan), SR)


def test_missing_package_names_the_extra(clean, monkeypatch):
    monkeypatch.setitem(sys.modules, "pesq", None)  # makes `import pesq` fail
    with pytest.raises(metrics.MetricUnavailable, match=r"hyperaudio\[metrics\]"):
        metrics.evaluate(clean, clean, SR, ["pesq"])


HEAVY = [  # (metric, module to import, rate of the test signal: native or resampled inside)
    ("pesq", "pesq", 22050),
    ("stoi", "pystoi", 16000),
    ("visqol", "visqol", 48000),
    ("cdpam", "cdpam", 22050),
]


@pytest.mark.heavy_metrics
@pytest.mark.parametrize("name,module,sr", HEAVY, ids=[h[0] for h in HEAVY])
def test_heavy_metric_prefers_identical_over_noisy(name, module, sr):
    pytest.importorskip(module, reason=f"{module} not installed (pip install 'hyperaudio[metrics]')")
    x = speechlike(sr, 2.0).astype(np.float64)
    metric = metrics.METRICS[name]
    same = metrics.evaluate(x, x, sr, [name])[name]
    worse = metrics.evaluate(x, noisy(x, 0.05), sr, [name])[name]
    assert same == pytest.approx(metric.ideal, abs=0.01)
    assert (same > worse) if metric.better == "higher" else (same < worse), (same, worse)


@pytest.mark.heavy_metrics
def test_cdpam_loads_without_lifting_weights_only(clean, monkeypatch):
    pytest.importorskip("cdpam", reason="cdpam not installed (pip install 'hyperaudio[metrics]')")
    import io
    import os
    import pickle

    import torch

    from hyperaudio.metrics import perceptual

    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    monkeypatch.delenv(key, raising=False)
    real_load, seen = torch.load, []

    def spy(*args, **kwargs):
        seen.append(os.environ.get(key))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    perceptual._cdpam_model.cache_clear()
    try:
        value = perceptual.cdpam(clean, noisy(clean, 0.05), SR)
    finally:
        perceptual._cdpam_model.cache_clear()  # no spied model for later tests
    assert seen == [None] and key not in os.environ
    # Computed with the previous loader (cdpam.CDPAM(dev="cpu") under TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1;
    # torch 2.13.0 CPU, cdpam 0.0.6): the same weights give the same distance.
    assert value == pytest.approx(0.5548433065414429, rel=1e-5)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):  # any other global is refused
        perceptual._TensorPickle.load(io.BytesIO(pickle.dumps(os.system)))
