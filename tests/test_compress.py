"""Compression to a bitrate (issue #17): the bit budget, int8 PTQ against float on a fitted SIREN,
the quantisation-aware fine-tune, and ``hyperaudio compress`` end to end."""

import numpy as np
import pytest
import soundfile as sf

from conftest import speechlike
from hyperaudio import cli, compress, config, fit, hya, quantize

SR = 8000


@pytest.fixture(scope="module")
def siren():
    """A SIREN fitted for a fixed number of steps (deterministic) to 0.5 s of a speech-like signal."""
    x = speechlike(SR, 0.5)[None]
    cfg = config.resolve({}, "siren", ["fit.recipe=fixed", "fit.steps=400", "fit.lr=3e-4", "loss.lambda_f=0",
                                       "target.params.hidden=[32,32,32]", "fit.eval_every=100"])
    return fit.fit(x, SR, cfg, device="cpu", progress=False), x


def test_int8_ptq_stays_within_1_db_of_float(siren):
    inr, x = siren
    floating = compress.quantized_sisnr(inr, x, None)
    assert floating > 3.0  # a fit worth measuring
    kept = compress.float_tensors(inr, 8)
    # ω0 = 2000 multiplies the first layer: rounding it costs radians of phase, so it stays float32
    assert {"layers.0.linear.weight", "layers.0.linear.bias"} <= kept
    assert sum(inr.params[n].numel() for n in kept) <= 0.05 * sum(p.numel() for p in inr.params.values())
    assert compress.quantized_sisnr(inr, x, 8, kept) >= floating - 1.0
    assert compress.quantized_sisnr(inr, x, 8) < floating - 3.0  # without them int8 breaks the SIREN


def test_quantisation_aware_finetune_beats_rounding_at_4_bits(siren):
    inr, x = siren
    kept = compress.float_tensors(inr, 4)
    rounded = compress.quantized_sisnr(inr, x, 4, kept)
    tuned = compress.finetune(inr, x, 4, 0.0, 3e-5, max_steps=100, wide=kept)
    after = hya.INR(inr.config, inr.module, tuned, inr.sample_rate, inr.num_samples, inr.channels, inr.chunks)
    assert compress.quantized_sisnr(after, x, 4, kept) > rounded + 0.2


def test_pack_within_steps_the_depth_down_to_the_budget(siren):
    inr, _ = siren
    sizes = {b: len(compress.pack_within(inr, b, None)[1]) for b in (8, 4)}
    assert sizes[4] < sizes[8]
    budget = (sizes[4] + sizes[8]) // 2
    _, data, bits, _, _ = compress.pack_within(inr, 8, budget)
    assert len(data) <= budget and 4 <= bits < 8
    with pytest.raises(compress.BudgetError):
        compress.pack_within(inr, 8, 200)


@pytest.mark.parametrize("kbps", [6, 24, 96])
def test_plan_fits_the_budget_and_grows_with_it(kbps):
    p = compress.plan(kbps, 32768, 22050)
    assert p.budget == int(kbps * 1000 * 32768 / 22050 / 8) and p.estimate <= p.budget
    bigger = compress.plan(kbps * 2, 32768, 22050)
    assert bigger.parameters * bigger.bits > p.parameters * p.bits


def test_plan_refuses_a_budget_below_the_smallest_network():
    with pytest.raises(compress.BudgetError, match="raise --kbps"):
        compress.plan(0.5, 32768, 22050)


def test_compress_command_writes_within_the_budget(tmp_path, capsys):
    x = speechlike(SR, 0.6)
    src = tmp_path / "speech.wav"
    sf.write(str(src), x, SR)
    out = tmp_path / "c.hya"
    kbps = 24.0
    status = cli.main(["compress", str(src), "--kbps", str(kbps), "--seconds", "4", "-o", str(out), "-q"])
    assert status == 0, capsys.readouterr().err
    assert out.stat().st_size <= compress.budget_bytes(kbps, 0.6)
    head = hya.read_header(out)
    assert head.quantization is not None and head.kbps <= kbps
    assert head.config["target"]["name"] == "siamese-siren"
    wav = tmp_path / "c.wav"
    assert cli.main(["render", str(out), "--sr", "16000", "-o", str(wav)]) == 0
    y, sr = sf.read(str(wav))
    assert sr == 16000 and len(y) == round(0.6 * 16000) and np.all(np.isfinite(y))
    capsys.readouterr()
    assert cli.main(["info", str(out)]) == 0
    assert "bitrate:" in capsys.readouterr().out


def test_compress_command_refuses_an_impossible_budget(tmp_path, capsys):
    src = tmp_path / "speech.wav"
    sf.write(str(src), speechlike(SR, 0.6), SR)
    out = tmp_path / "c.hya"
    assert cli.main(["compress", str(src), "--kbps", "0.5", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("hyperaudio: error:") == 1 and "raise --kbps" in err and not out.exists()


def test_quantised_siamese_file_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    cfg = config.resolve({}, "siamese-siren", ["target.params.hidden=[16,16]", "target.params.siamese_hidden=[8]",
                                               "fit.recipe=fixed", "fit.steps=5"])
    x = speechlike(SR, 0.3)[None]
    inr = fit.fit(x, SR, cfg, device="cpu", progress=False)
    path = hya.save(inr, tmp_path / "q.hya", quantize.pack(inr.params, [n for n, _ in inr.module.named_parameters()], 6))
    assert cli.main(["export", str(path), "-o", str(tmp_path / "q.onnx")]) == 0
    assert (tmp_path / "q.onnx").stat().st_size > 0


def test_compress_command_refuses_bad_input_before_any_work(tmp_path, capsys):
    src = tmp_path / "speech.wav"
    sf.write(str(src), speechlike(SR, 0.6), SR)
    nan = tmp_path / "nan.wav"
    sf.write(str(nan), np.full(4000, np.nan, np.float32), SR, subtype="FLOAT")
    out = tmp_path / "c.hya"
    cases = [
        (["compress", str(tmp_path / "missing.wav"), "--kbps", "24", "-o", str(out)], "missing.wav"),
        (["compress", str(src), "--kbps", "24", "-o", str(src)], "speech.wav"),
        (["compress", str(src), "--kbps", "-3", "-o", str(out)], "must be positive"),
        (["compress", str(src), "--kbps", "24", "--inr", "kan", "-o", str(out)], "compress sizes"),
        (["compress", str(src), "--kbps", "24", "--inr", "nosuch", "-o", str(out)], "nosuch"),
        (["compress", str(src), "--kbps", "24", "--sr", "5", "-o", str(out)], "unsupported sample rate"),
        (["compress", str(nan), "--kbps", "24", "-o", str(out)], "NaN"),
        (["quantize", str(src), "--bits", "8", "-o", str(out)], "not a valid .hya"),
        (["quantize", str(src), "--bits", "5", "-o", str(out)], "invalid choice"),
    ]
    for args, match in cases:
        capsys.readouterr()
        try:
            status = cli.main(args)
        except SystemExit as exc:  # argparse's usage errors
            status = exc.code
        assert status == 2, args
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("hyperaudio: error:")]
        assert len(lines) == 1 and match in lines[0] and "Traceback" not in err, (args, err)
    assert not out.exists() and sf.info(str(src)).frames == int(0.6 * SR)
