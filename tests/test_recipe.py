"""The auto fit recipe (hyperaudio.recipe): the race, the time scale, the guarded spectrum phase."""

import numpy as np
import pytest
import torch

from hyperaudio import config, fit, hya, recipe, render
from hyperaudio.errors import ConfigError
from hyperaudio.functional import call_batched, fresh_parameters

SR = 8000


def tones(n=4096, freqs=(220.0, 330.0), sr=SR):
    t = np.arange(n) / sr
    return (0.4 * sum(np.sin(2 * np.pi * f * t + i) for i, f in enumerate(freqs))).astype(np.float32)


def small_siren(*extra):
    return config.resolve({}, "siren", ["target.params.hidden=[24, 24]", *extra])


def test_race_stage_is_adam_at_each_rate():
    """One batched call with rates scaled per candidate equals separate Adam runs, one per rate."""
    # In float64: in float32 the two ways of rounding an Adam step whose second moment is tiny
    # differed by 3e-6 on one CPU.
    cfg = small_siren("target.params.omega_0=30.0")
    module = config.build_target(cfg).double()
    init = {n: p.double() for n, p in fresh_parameters(lambda: config.build_target(cfg), 1).items()}
    t = fit.time_grid(512).double()
    target = torch.from_numpy(tones(512)).double()
    lrs, scales = [1e-4, 1e-3, 1e-2], [1.0, 1.0, 2.0]
    _, taken, batched = recipe.race_stage(module, init, t, target, lrs, scales, steps=5,
                                          generator=torch.Generator().manual_seed(3))
    assert taken == 5
    for k, (lr, scale) in enumerate(zip(lrs, scales)):
        draws = torch.Generator().manual_seed(3)
        params = {n: p.clone().requires_grad_(True) for n, p in init.items()}
        optimizer = torch.optim.Adam(list(params.values()), lr=lr)
        for _ in range(5):
            idx = torch.randint(0, 512, (512,), generator=draws)
            pred = call_batched(module, params, t[idx] * scale)
            # The batched loss averages over K candidates: the same gradient up to a factor, which
            # Adam does not see.
            loss = (pred - target[idx].view(1, -1, 1)).abs().mean() / len(lrs)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        for n, p in params.items():
            torch.testing.assert_close(batched[n][k], p.detach()[0], rtol=1e-9, atol=1e-12)


def test_median_frequency_of_a_tone():
    n = 4096
    x = torch.from_numpy(np.sin(2 * np.pi * 300 / n * np.arange(n)).astype(np.float32))
    assert recipe.median_frequency(x) == pytest.approx(300 / n, abs=1 / n)


def test_the_spectrum_matched_scale_moves_the_initial_output_onto_the_sound():
    """f(s t) has f's spectrum stretched by s: after the scale, the initial output's median
    frequency is the target's."""
    cfg = small_siren()
    module = config.build_target(cfg)
    init = fresh_parameters(lambda: config.build_target(cfg), 1)
    t = fit.time_grid(8192)
    target = torch.from_numpy(tones(8192, freqs=(2500.0,)))
    scale = recipe.spectrum_matched_scale(module, init, t, target)
    assert scale > 2
    with torch.no_grad():
        stretched = call_batched(module, init, t * scale)[0, :, 0]
    assert recipe.median_frequency(stretched) == pytest.approx(recipe.median_frequency(target), rel=0.35)


def test_time_scale_is_part_of_the_network_everywhere():
    """target.time_scale reaches every caller through build_target: direct call, the batched
    functional call, and a .hya round trip with render."""
    plain, scaled = config.build_target(small_siren()), config.build_target(small_siren("target.time_scale=4.0"))
    scaled.load_state_dict(plain.state_dict())
    assert list(dict(scaled.named_parameters())) == list(dict(plain.named_parameters()))
    t = fit.time_grid(256)
    with torch.no_grad():
        torch.testing.assert_close(scaled(t), plain(4 * t))
        params = {n: p[None] for n, p in plain.named_parameters()}
        torch.testing.assert_close(call_batched(scaled, params, t)[0], plain(4 * t))


def test_time_scale_and_recipe_are_validated():
    for bad in ("target.time_scale=0.0", "target.time_scale=-1.0", "target.time_scale=nan", "target.time_scale=1e9"):
        with pytest.raises(ConfigError, match="time_scale"):
            small_siren(bad)
    with pytest.raises(ConfigError, match="fit.recipe must be one of auto, fixed"):
        small_siren("fit.recipe='magic'")


def test_auto_fit_learns_records_its_choice_and_renders_the_same(tmp_path):
    x = tones()
    # omega_0 300 suits two tones at 220 and 330 Hz; at the default 2000 a 24-unit SIREN collapses to
    # silence for some initialisations and float rounding orders (the thread count).
    cfg = small_siren("target.params.omega_0=300.0", "fit.steps=400", "fit.eval_every=20")
    model = fit.fit(x, SR, cfg, device="cpu", progress=False)
    chosen = model.info["recipe"]
    assert chosen["lr"] in recipe.RACE_LRS and chosen["race_steps"] > 0
    assert model.config["target"]["time_scale"] == chosen["time_scale"]
    assert model.info["sisnr"] > 10
    hya.save(model, tmp_path / "m.hya")
    again = hya.load(tmp_path / "m.hya")
    assert again.config["target"]["time_scale"] == chosen["time_scale"]
    np.testing.assert_allclose(render.render(again, SR), render.render(model, SR), atol=1e-6)


def test_a_tone_far_above_the_networks_band_restarts_with_a_larger_scale():
    """A tone the network cannot produce at its initialisation: the race sees nothing beat silence,
    restarts with the spectrum-matched scale, and the fit then learns the tone."""
    x = tones(8192, freqs=(2900.0,))
    cfg = small_siren("target.params.omega_0=200.0", "fit.steps=600", "fit.eval_every=20")
    model = fit.fit(x, SR, cfg, device="cpu", progress=False)
    assert model.info["recipe"]["restarts"] >= 1
    assert model.info["recipe"]["time_scale"] > 4
    assert model.info["sisnr"] > 5
    # The scale travels with the network: the ONNX graph computes what torch renders.
    pytest.importorskip("onnxruntime")
    from hyperaudio import onnx_export

    onnx_export.verify(model, onnx_export.export_bytes(model))  # raises ExportError when they disagree


def test_spectral_peaks_are_the_strongest_partials():
    n = 8192
    x = torch.from_numpy(tones(n, freqs=(2900.0, 440.0, 1700.0)) + 0.01 * np.sin(np.arange(n) * 0.3).astype(np.float32))
    peaks = recipe.spectral_peaks(x, 3)
    # Back from radians per unit of t (the grid spans 2 units in n - 1 steps) to Hz.
    hz = peaks.double() / (2 * np.pi) * 2 / (n - 1) * SR
    np.testing.assert_allclose(hz.numpy(), [440.0, 1700.0, 2900.0], atol=2 * SR / n)


def test_random_fourier_features_get_the_sounds_partials_in_their_upper_half():
    """RFF's B (cycles per unit of t): the half nearest 0 stays, the rest becomes the partials."""
    n = 4096
    x = torch.from_numpy(tones(n, freqs=(2900.0, 1730.0)))
    cfg = config.resolve({}, "rff", ["target.params.num_features=8", "target.params.hidden=[16]"])
    module = config.build_target(cfg)
    b = module.encoding.B.view(-1)
    new = recipe.spectral_encoding(module, x)["encoding.B"].view(-1)
    low = b.abs().argsort()[:4]
    torch.testing.assert_close(new[low], b[low])
    placed = torch.sort(new[b.abs().argsort()[4:]]).values
    torch.testing.assert_close(placed, recipe.spectral_peaks(x, 4) / (2 * np.pi))
    hz = placed.double().numpy() * 2 / (n - 1) * SR
    assert all(np.abs(hz - f).min() < 2 * SR / n for f in (1730.0, 2900.0))


def test_an_octave_encoding_gets_the_sounds_partials_when_nothing_learns(tmp_path):
    """A NeRF positional encoding can only reach a partial between its octaves by intermodulation
    (a struck bell: KAN and NeRF learnt nothing). The race restarts with the sound's partials in the
    upper half of the encoding; the frequencies are buffers, so the .hya file and the live preview
    render what the fit learnt."""
    n = 4096
    decay = np.exp(-np.arange(n) / 2000.0).astype(np.float32)
    x = tones(n, freqs=(2900.0, 1730.0)) * decay
    cfg = config.resolve({}, "nerf", ["target.params.encoding_length=6", "target.params.hidden=[32, 32]",
                                      "fit.steps=500", "fit.eval_every=25"])
    seen = []
    model = fit.fit(x, SR, cfg, device="cpu", progress=False, callback=seen.append)
    chosen = model.info["recipe"]
    assert chosen["restarts"] >= 1 and chosen["spectral_encoding"] and chosen["time_scale"] == 1.0
    frequencies = model.module.encoding.frequencies
    octaves = config.build_target(cfg).encoding.frequencies
    torch.testing.assert_close(frequencies[:3], octaves[:3])  # the lower half stays
    assert not torch.allclose(frequencies[3:], octaves[3:])
    assert model.info["sisnr"] > 8
    last = seen[-1]
    with torch.no_grad():
        preview = call_batched(last.module, last.params, fit.time_grid(n))[0, :, 0]
    assert float(fit.si_snr(preview[None], torch.from_numpy(x)[None])) == pytest.approx(last.sisnr, abs=1e-3)
    path = tmp_path / "bell.hya"
    hya.save(model, path)
    np.testing.assert_allclose(render.render(hya.load(path), SR), render.render(model, SR), atol=1e-6)


def test_the_spectrum_phase_never_gives_up_more_than_the_tolerance():
    seen = []
    cfg = small_siren("fit.steps=400", "fit.eval_every=10")
    model = fit.fit(tones(), SR, cfg, device="cpu", progress=False, callback=lambda p: seen.append(p.sisnr))
    assert model.info["sisnr"] >= max(seen) - recipe.SISNR_TOLERANCE - 1e-6


def test_fixed_presets_keep_their_schedule():
    """The papers' presets are reproduction settings: no race, their own learning rate."""
    cfg = config.resolve("siren-inr", None, ["target.params.hidden=[16]", "fit.steps=3"])
    assert cfg["fit"]["recipe"] == "fixed"
    lrs = []
    model = fit.fit(tones(1024), SR, cfg, device="cpu", progress=False, callback=lambda p: lrs.append(p.lr))
    assert "recipe" not in model.info
    assert lrs[0] == pytest.approx(cfg["fit"]["lr"])


def test_weaker_halves_then_stops():
    weights = [recipe.STFT_WEIGHT]
    while weights[-1]:
        weights.append(recipe.weaker(weights[-1]))
    assert weights[1] == recipe.STFT_WEIGHT / 2 and len(weights) == 6 and weights[-1] == 0.0
    assert all(a > b for a, b in zip(weights, weights[1:]))
