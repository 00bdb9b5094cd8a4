"""Seams between chunks (issue #14, long sounds; docs/long-sounds.md).

bench/seams.py found the seams of real 10 s fits no worse than mid-chunk, because render.py's
crossfade is amplitude-complementary and every rendered sample in an overlap is a convex mix of
the two chunks' own outputs, with each chunk's outermost samples weighted least. These tests pin
those properties, and check that the bench's own blend is render.py's.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import speechlike
from hyperaudio import config, fit, render

SR = 8000


def _bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "seams.py"
    spec = importlib.util.spec_from_file_location("bench_seams", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("n, chunk, overlap", [(5000, 2048, 256), (220500, 32768, 1024), (9000, 4096, 1)])
def test_crossfade_weights_are_complementary_and_favour_chunk_interiors(n, chunk, overlap):
    spans = render.chunk_spans(fit.chunk_layout(n, chunk, overlap))
    pos = torch.arange(n, dtype=torch.float64)
    weights = []
    for s in spans:
        w = torch.zeros(n, dtype=torch.float64)
        inside = (pos >= s.start) & (pos <= s.end)
        w[inside] = render.crossfade_weights(s, pos[inside])
        weights.append(w)
    weights = torch.stack(weights)
    assert torch.all(weights >= 0) and torch.all(weights <= 1)
    total = weights.sum(0)
    assert torch.all(total > 0)  # every sample is covered
    normalised = weights / total
    for k, s in enumerate(spans[:-1]):
        first, last = spans[k + 1].start, s.end
        assert last - first + 1 >= overlap
        fade_out = normalised[k, first: last + 1]
        # Monotone hand-over, and a chunk's last sample carries at most 1 / (overlap + 1) of the mix:
        # the ends, where an INR is least constrained, hardly reach the output.
        assert torch.all(fade_out[1:] <= fade_out[:-1] + 1e-12)
        assert fade_out[-1] <= 1.0 / (s.next_overlap + 1) + 1e-9
        assert fade_out[0] >= 1 - 1.0 / (s.next_overlap + 1) - 1e-9
        # Outside the overlaps one chunk alone is heard.
        assert torch.allclose(normalised[k, spans[k].start + spans[k].prev_overlap + 1: first], torch.tensor(1.0,
                              dtype=torch.float64))


def test_rendered_overlaps_are_convex_mixes_of_the_chunks_and_match_the_bench():
    x = speechlike(SR, 0.7)[None]
    cfg = config.resolve(None, "nerf", ["fit.steps=15", "fit.recipe=fixed", "loss.lambda_f=0.0",
                                        "fit.chunk_samples=2048", "fit.overlap_samples=256",
                                        "target.params.hidden=[16, 16]"])
    model = fit.fit(x, SR, cfg, progress=False)
    assert len(model.chunks) >= 3
    y = render.render(model, SR)[0].astype(np.float64)
    bench = _bench()
    outs = bench.chunk_outputs(model)
    # The bench re-blends the chunks' own outputs exactly as render.py does.
    assert np.max(np.abs(bench.blend(model, outs, "linear") - y)) < 1e-5
    for k, (first, last, _) in enumerate(bench.seam_centres(model)):
        a0, b0 = model.chunks[k][0], model.chunks[k + 1][0]
        ya, yb = outs[k][first - a0: last - a0 + 1], outs[k + 1][first - b0: last - b0 + 1]
        seg = y[first: last + 1]
        lo, hi = np.minimum(ya, yb), np.maximum(ya, yb)
        assert np.all(seg >= lo - 1e-5) and np.all(seg <= hi + 1e-5)
        # So the error there is never above the larger of the two chunks' own errors.
        xs = x[0, first: last + 1]
        assert np.all(np.abs(seg - xs) <= np.maximum(np.abs(ya - xs), np.abs(yb - xs)) + 1e-5)


def test_bench_click_check_sees_a_click_at_a_seam():
    bench = _bench()
    n, half = 20000, 100
    x = np.sin(2 * np.pi * 300 * np.arange(n) / SR)
    y = x + 0.01 * np.random.default_rng(0).standard_normal(n)
    clicked = y.copy()
    clicked[10000] += 0.5
    quiet = bench.window_stats(x, y, [10000], half, SR, 2000.0)[0]
    click = bench.window_stats(x, clicked, [10000], half, SR, 2000.0)[0]
    assert click["hf_err_db"] > quiet["hf_err_db"] + 10
    assert click["err_db"] > quiet["err_db"] + 5
