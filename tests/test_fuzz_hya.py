"""Property-based fuzzing of the ``.hya`` reader (issue #15), with hypothesis.

Each example starts from a small valid file and replaces metadata fields with arbitrary values
(JSON of any shape, huge, negative, NaN and non-numeric numbers, random chunk lists), tensors
with ones of other shapes and dtypes, or the config's target parameters. The rule, whatever the
file: ``info`` and ``render`` exit 0 or 2, never raise, never print a traceback, and their peak
memory grows by less than 2 GB.
"""

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from hyperaudio import cli, config, fit, hya
from peak_memory import available, peak_rss

SR = 8000
MEMORY_BOUND = 2 << 30
FIELDS = ["version", "config", "sample_rate", "num_samples", "channels", "chunks", "info", "gain", "format"]

pytestmark = pytest.mark.skipif(not available(), reason="needs /proc/self/clear_refs (Linux) to measure memory")


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """``(metadata, tensors)`` of a small fitted mono .hya with two chunks (nerf, hidden [8])."""
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(400) / SR)).astype(np.float32)
    cfg = config.resolve("nerf-inr", overrides=["target.params.hidden=[8]", "fit.chunk_samples=256",
                                                "fit.overlap_samples=32", "fit.steps=1"])
    path = hya.save(fit.fit(x, SR, cfg, device="cpu", progress=False), tmp_path_factory.mktemp("fuzz") / "v.hya")
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2**31, 2**33 + 1, 2**63, 10**12, 1e-300, 1e308]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)
chunk_lists = st.lists(st.lists(st.one_of(st.integers(-10, 2**34), st.floats(0, 1e3)), min_size=0, max_size=3),
                       min_size=0, max_size=5)


def as_text(value) -> str:
    """A metadata field as a writer would put it: a number's repr, or JSON for anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    return json.dumps(value, allow_nan=True)


field_edits = st.dictionaries(
    st.sampled_from(FIELDS),
    st.one_of(json_values.map(as_text), chunk_lists.map(json.dumps), st.text(max_size=12)),
    max_size=3,
)
target_params = st.dictionaries(
    st.sampled_from(["hidden", "encoding_length", "include_input", "bogus"]),
    st.one_of(json_values, st.lists(st.integers(-3, 10**9), max_size=3)),
    max_size=2,
)
tensor_edits = st.lists(
    st.tuples(st.integers(0, 7),  # which params tensor
              st.sampled_from([torch.float32, torch.float16, torch.float64, torch.int32, torch.int8, torch.bool]),
              st.lists(st.integers(0, 5), min_size=0, max_size=3),  # a new shape, [] keeps the old one
              st.sampled_from([None, float("nan"), float("inf"), 1e30])),
    max_size=2,
)


def forge(meta, tensors, fields, params, edits):
    meta = {**meta, **fields}
    if params:
        try:
            cfg = json.loads(meta["config"])
            cfg["target"]["params"] = params
            meta["config"] = json.dumps(cfg, allow_nan=True)
        except (ValueError, KeyError, TypeError):  # the config field was already replaced
            pass
    tensors = dict(tensors)
    names = sorted(k for k in tensors if k.startswith("params."))
    for index, dtype, shape, value in edits:
        name = names[index % len(names)]
        t = tensors[name].float() if not shape else torch.randn(*shape)  # float: a value edit may follow a cast
        if value is not None and t.numel():
            t = t.clone()
            t.view(-1)[0] = value
        tensors[name] = t.to(dtype).contiguous()
    return meta, tensors


def run(capsys, args):
    capsys.readouterr()
    with peak_rss() as peak:
        status = cli.main([str(a) for a in args])
    err = capsys.readouterr().err
    return status, err, peak.growth


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fields=field_edits, params=target_params, edits=tensor_edits)
def test_any_damaged_hya_is_refused_or_read_within_bounded_memory(valid, capsys, fields, params, edits):
    meta, tensors = forge(*valid, fields, params, edits)
    with tempfile.TemporaryDirectory() as folder:
        path, out = Path(folder) / "f.hya", Path(folder) / "out.wav"
        save_file(tensors, str(path), metadata=meta)
        for args in (["info", path], ["render", path, "--sr", SR, "-o", out]):
            status, err, growth = run(capsys, args)
            assert status in (0, 2), (args[0], status, err)
            assert "Traceback" not in err, err
            assert growth < MEMORY_BOUND, f"{args[0]}: peak growth {growth / 1e9:.2f} GB"
            if status == 2:
                assert sum(line.startswith("hyperaudio: error:") for line in err.splitlines()) == 1, err
        if status == 0:  # a file that renders renders finite audio
            import soundfile as sf

            y, _ = sf.read(str(out))
            assert np.all(np.isfinite(y)) and (y.size == 0 or math.isfinite(float(np.abs(y).max())))
