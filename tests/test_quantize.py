"""Quantised weights (issue #17): the quantiser's round trip, the version 2 .hya layout, and the
reader's checks on hostile quantised files (one line, exit 2, bounded memory)."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import zstandard
from safetensors import safe_open
from safetensors.torch import save_file

from hyperaudio import cli, config, fit, hya, limits, quantize, render
from peak_memory import available, peak_rss

SR = 8000
N = 600
MEMORY_BOUND = 2 << 30


# -- the quantiser ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [8, 6, 4, 2])
def test_round_trip_error_is_half_a_step_per_row(bits):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(3, 16, 5, generator=g) * torch.logspace(-3, 1, 16).view(1, 16, 1)  # rows of very different size
    q, s = quantize.quantize(w, bits)
    assert q.dtype == torch.int8 and s.shape == (3, 16)
    assert int(q.abs().max()) <= quantize.qmax(bits)
    assert torch.equal(s, s.to(torch.float16).to(torch.float32))  # the stored float16 scale is the one used
    err = (quantize.dequantize(q, s) - w).abs()
    assert bool((err <= s.unsqueeze(-1) / 2 * (1 + 1e-3) + 1e-12).all())
    # per-row scales: a small row keeps its own precision
    assert float(err[:, 0].max()) < 1e-3 * float(err[:, -1].max())


def test_zero_rows_biases_and_scalars():
    params = {"w": torch.zeros(2, 4, 3), "b": torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]]),
              "s": torch.tensor([3.0, -2.0])}
    out = quantize.round_trip(params, 8)
    assert torch.equal(out["w"], params["w"]) and torch.equal(out["b"][1], params["b"][1])
    assert torch.allclose(out["b"][0], params["b"][0], atol=1.0 / 127)
    assert torch.allclose(out["s"], params["s"], rtol=1e-3)  # a scalar is its own row: float16 scale rounding


def test_fake_quantize_rounds_forward_and_passes_gradients_straight_through():
    w = torch.randn(2, 6, 4, requires_grad=True)
    y = quantize.fake_quantize(w, 4)
    assert torch.allclose(y, quantize.round_trip({"w": w.detach()}, 4)["w"])
    (y * torch.arange(48.0).view(2, 6, 4)).sum().backward()
    assert torch.equal(w.grad, torch.arange(48.0).view(2, 6, 4))


@pytest.mark.parametrize("bits", [8, 4])
def test_pack_unpack_equals_round_trip(bits):
    g = torch.Generator().manual_seed(0)
    shapes = {"a": torch.Size([7, 3]), "b": torch.Size([7]), "c": torch.Size([2, 7]), "d": torch.Size([2])}
    params = {n: torch.randn(4, *s, generator=g) for n, s in shapes.items()}
    tensors, layout = quantize.pack(params, list(shapes), bits, kept={"b"})
    assert layout["float"] == [1] and tensors["quant.float"].numel() == 4 * 7
    out = quantize.unpack("x.hya", layout, tensors["quant.values"], tensors["quant.scales"], tensors["quant.float"],
                          shapes, 4)
    expected = quantize.round_trip(params, bits, kept={"b"})
    assert all(torch.equal(out[n], expected[n]) for n in shapes)
    assert torch.equal(out["b"], params["b"])


def test_fewer_bits_code_shorter():
    w = {"w": torch.randn(1, 64, 64, generator=torch.Generator().manual_seed(1))}
    sizes = [quantize.pack(w, ["w"], b)[0]["quant.values"].numel() for b in (8, 6, 4)]
    assert sizes[0] > sizes[1] > sizes[2]
    assert sizes[2] < 0.6 * 64 * 64  # zstd codes 4-bit integers in well under a byte each


def test_config_delta_merges_back():
    cfg = config.resolve({}, "nerf", ["target.params.hidden=[8]", "fit.seconds=3"])
    delta = quantize.config_delta(cfg)
    assert delta["target"] == cfg["target"] and delta["fit"] == {"seconds": 3.0}
    assert "loss" not in delta and "train" not in delta
    assert config._merge(config.DEFAULTS, delta) == cfg


# -- the file -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A fitted stereo float .hya (nerf, hidden [8], three chunks), its 8-bit quantised version with
    one float32 tensor, and the reference WAV."""
    folder = tmp_path_factory.mktemp("quant")
    t = np.arange(N) / SR
    x = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    sf.write(str(folder / "ref.wav"), x.T, SR)
    cfg = config.resolve("nerf-inr", overrides=["target.params.hidden=[8]", "fit.chunk_samples=256",
                                                "fit.overlap_samples=32", "fit.steps=20"])
    inr = fit.fit(x, SR, cfg, device="cpu", progress=False)
    plain = hya.save(inr, folder / "plain.hya")
    order = [n for n, _ in inr.module.named_parameters()]
    packed = quantize.pack(inr.params, order, 8, kept={order[1]})
    quant = hya.save(inr, folder / "quant.hya", packed)
    return plain, quant, folder / "ref.wav", inr


def test_quantised_file_loads_as_its_round_trip(files):
    plain, quant, _, inr = files
    head = hya.read_header(quant)
    assert head.version == hya.QUANTIZED_VERSION and head.quantization["bits"] == 8
    assert not any(k.startswith("params.") for k in head.tensors)
    assert head.parameters_per_member() == hya.read_header(plain).parameters_per_member()
    assert head.file_bytes < plain.stat().st_size / 2
    loaded = hya.load(quant)
    order = [n for n, _ in inr.module.named_parameters()]
    expected = quantize.round_trip(inr.params, 8, kept={order[1]})
    assert all(torch.equal(loaded.params[n], expected[n]) for n in expected)
    assert loaded.config == inr.config  # the stored delta merged back over the defaults
    y = render.render(loaded, SR)
    assert y.shape == (2, N) and np.all(np.isfinite(y))


def test_info_shows_bits_and_bitrate(files, capsys):
    plain, quant, _, _ = files
    assert cli.main(["info", str(quant)]) == 0
    out = capsys.readouterr().out
    assert "8-bit integers" in out and "kb/s" in out
    kbps = float(out.split("bitrate:")[1].split("kb/s")[0])
    assert kbps == pytest.approx(8 * quant.stat().st_size / (N / SR) / 1000, rel=1e-3)
    assert cli.main(["info", str(plain)]) == 0 and "bitrate:" in capsys.readouterr().out


def test_quantize_command(files, tmp_path, capsys):
    plain, quant, ref, inr = files
    out = tmp_path / "q4.hya"
    assert cli.main(["quantize", str(plain), "--bits", "4", "-o", str(out)]) == 0
    head = hya.read_header(out)
    assert head.quantization["bits"] == 4 and out.stat().st_size < quant.stat().st_size
    wav = tmp_path / "q4.wav"
    assert cli.main(["render", str(out), "--sr", "16000", "-o", str(wav)]) == 0
    assert sf.info(str(wav)).samplerate == 16000
    capsys.readouterr()
    assert cli.main(["quantize", str(out), "--bits", "8", "-o", str(tmp_path / "again.hya")]) == 2
    assert "already quantised" in capsys.readouterr().err


# -- hostile quantised files ------------------------------------------------------------------------
def contents(path):
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def forge(src, dst, layout=None, meta=None, tensors=None):
    metadata, weights = contents(src)
    if layout is not None:
        metadata["quantization"] = json.dumps(layout(json.loads(metadata["quantization"])))
    metadata.update(meta or {})
    if tensors is not None:
        weights = tensors(weights)
    metadata = {k: v for k, v in metadata.items() if v is not None}
    save_file(weights, str(dst), metadata=metadata)
    return dst


def _set(**changes):
    return lambda layout: {**layout, **changes}


def _frame(raw: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(zstandard.ZstdCompressor().compress(raw)), dtype=torch.uint8)


def _zeros_frame(nbytes: int):
    """A zstd frame of ``nbytes`` zeros, made without holding them: a decompression bomb."""
    def make(_weights):
        c = zstandard.ZstdCompressor(level=19).compressobj(size=nbytes)
        block = bytes(1 << 20)
        frame = b"".join(c.compress(block) for _ in range(nbytes >> 20)) + c.flush()
        return torch.frombuffer(bytearray(frame), dtype=torch.uint8)

    return make


def _replace(name, value):
    return lambda w: {**w, name: value(w) if callable(value) else value}


def _scales(value):
    def change(w):
        s = w["quant.scales"].clone()
        s[2] = value
        return {**w, "quant.scales": s}

    return change


HOSTILE = {
    "layout not an object": (dict(meta={"quantization": "[1, 2]"}), "must be a JSON object"),
    "layout not json": (dict(meta={"quantization": "{bits"}), "not valid JSON"),
    "no layout in version 2": (dict(meta={"quantization": None}), "without a quantization field"),
    "layout in version 1": (dict(meta={"version": "1"}), "with a quantization field"),
    "bits 9": (dict(layout=_set(bits=9)), "bits 9 is outside 2..8"),
    "bits text": (dict(layout=_set(bits="8")), "bits 8 is outside"),
    "codec": (dict(layout=_set(codec="lzma")), "is not 'zstd'"),
    "values huge": (dict(layout=_set(values=limits.MAX_QUANT_VALUES + 1)), "values 268435457 is outside"),
    "values wrong": (dict(layout=lambda q: {**q, "values": q["values"] + 6}), "the network needs"),
    "rows wrong": (dict(layout=lambda q: {**q, "rows": q["rows"] - 6},
                        tensors=lambda w: {**w, "quant.scales": w["quant.scales"][:-6].clone()}), "the network needs"),
    "float index past the network": (dict(layout=_set(float=[1, 500])), "float tensor 500"),
    "float indices unsorted": (dict(layout=_set(float=[3, 1])), "increasing tensor indices"),
    "no values tensor": (dict(tensors=lambda w: {k: v for k, v in w.items() if k != "quant.values"}),
                         "no quant.values tensor"),
    "values not u8": (dict(tensors=_replace("quant.values", lambda w: w["quant.values"].to(torch.int16))),
                      "quant.values is I16"),
    "scales float32": (dict(tensors=_replace("quant.scales", lambda w: w["quant.scales"].float())),
                       "quant.scales is F32"),
    "not a zstd frame": (dict(tensors=_replace("quant.values", torch.arange(64, dtype=torch.uint8))),
                         "not a zstd frame"),
    "frame too short": (dict(tensors=_replace("quant.values", _frame(b"\x01" * 10))), "decompresses to 10 bytes"),
    "frame too long": (dict(tensors=_replace("quant.values", lambda w: _frame(
        zstandard.ZstdDecompressor().decompress(w["quant.values"].numpy().tobytes()) + b"\x00"))),
        "decompresses to more bytes"),
    # 256 MiB of zeros in an 8 kB frame: longer than any frame of this network's weights
    "decompression bomb": (dict(tensors=_replace("quant.values", _zeros_frame(256 << 20))), "bytes for"),
    # 4 MiB in a frame short enough to pass: read one byte past what the network needs, no further
    "small decompression bomb": (dict(tensors=_replace("quant.values", _zeros_frame(4 << 20))),
                                 "decompresses to more bytes"),
    "integers past 4 bits": (dict(layout=_set(bits=4)), "integers outside ±7 for 4 bits"),
    "scale nan": (dict(tensors=_scales(float("nan"))), "not finite and positive"),
    "scale inf": (dict(tensors=_scales(float("inf"))), "not finite and positive"),
    "scale zero": (dict(tensors=_scales(0.0)), "not finite and positive"),
    "scale negative": (dict(tensors=_scales(-0.5)), "not finite and positive"),
    "float nan": (dict(tensors=lambda w: {**w, "quant.float": torch.full_like(w["quant.float"], float("nan"))}),
                  "quant.float holds NaN"),
    "float tensor without layout": (dict(layout=_set(float=[])), "no float tensors in the layout"),
    "params beside": (dict(tensors=_replace("params.extra", torch.zeros(6, 2))), "params.* tensors beside"),
}


@pytest.mark.skipif(not available(), reason="needs /proc/self/clear_refs (Linux) to measure memory")
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_quantised_files_are_refused(files, tmp_path, capsys, case):
    _, quant, ref, _ = files
    kwargs, match = HOSTILE[case]
    bad = forge(quant, tmp_path / "bad.hya", **kwargs)
    if case == "decompression bomb":
        assert bad.stat().st_size < 100_000
    before = bad.read_bytes()
    for command in (["render", str(bad), "--sr", "8000", "-o", str(tmp_path / "out.wav")],
                    ["eval", str(ref), str(bad)]):
        capsys.readouterr()
        with peak_rss() as peak:
            status = cli.main(command)
        err = capsys.readouterr().err
        assert status == 2, err
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("hyperaudio: error:")]
        assert len(errors) == 1 and match in errors[0], err
        assert peak.growth < MEMORY_BOUND
    assert bad.read_bytes() == before and not (tmp_path / "out.wav").exists()
