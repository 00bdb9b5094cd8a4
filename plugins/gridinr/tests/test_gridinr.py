"""hyperaudio-gridinr's own tests: the conformance kit plus checks of the grid encoding itself."""

import importlib.metadata

import pytest
import torch

from hyperaudio.testing import check_plugin, check_preset, parametrize_with_checks
from hyperaudio_gridinr import GridINR
from hyperaudio_gridinr.model import level_resolutions

DENSE = {"levels": 2, "features": 3, "base_resolution": 8, "max_resolution": 32, "table_size": 0, "hidden": [8]}


# The kit: one pytest test per check, for the hashed (conformance_params) and a dense configuration.
@parametrize_with_checks(target_networks=[GridINR, (GridINR, DENSE)])
def test_conformance(check):
    check()


def test_resolutions_grow_geometrically_to_the_maximum():
    res = level_resolutions(5, 16, 256)
    assert res[0] == 16 and res[-1] == 256
    ratios = [b / a for a, b in zip(res, res[1:])]
    assert all(1.9 < r < 2.1 for r in ratios)


def test_levels_above_the_table_size_are_hashed():
    net = GridINR(levels=4, features=2, base_resolution=8, max_resolution=512, table_size=100, hidden=[4])
    assert net.hashed == [False, False, True, True]
    assert [g.shape[0] for g in net.grids] == [9, 33, 100, 100]
    dense = GridINR(levels=4, features=2, base_resolution=8, max_resolution=512, table_size=0, hidden=[4])
    assert [g.shape[0] for g in dense.grids] == [r + 1 for r in dense.resolutions]


def test_features_interpolate_linearly_between_vertices():
    net = GridINR(levels=1, features=1, base_resolution=4, max_resolution=4, table_size=0, hidden=[])
    with torch.no_grad():
        net.grids[0].copy_(torch.tensor([[0.0], [1.0], [3.0], [2.0], [-1.0]]))
    t = torch.tensor([[-1.0], [-0.75], [-0.5], [-0.25], [0.0], [0.25], [0.5], [0.75], [1.0]])
    expected = torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0, 2.5, 2.0, 0.5, -1.0])
    assert torch.allclose(net.encode(t)[:, 0], expected)


def test_learns_a_tone_quickly():
    torch.manual_seed(0)
    n = 512
    t = torch.linspace(-1, 1, n).unsqueeze(-1)
    y = 0.5 * torch.sin(2 * torch.pi * 10 * t)
    net = GridINR(levels=4, features=2, base_resolution=16, max_resolution=256, table_size=0, hidden=[16])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        loss = (net(t) - y).square().mean()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * y.square().mean().item()  # better than 10 dB


def _installed() -> bool:
    try:
        importlib.metadata.distribution("hyperaudio-gridinr")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _installed(), reason="hyperaudio-gridinr is not installed (pip install .)")
def test_installed_plugin_registers_through_its_entry_point(hyperaudio_plugins):
    registry = hyperaudio_plugins("hyperaudio-gridinr")
    assert registry.plugins["hyperaudio-gridinr"].status == "ok"
    entry = registry.get("target_networks", "grid-inr")
    assert entry.obj is GridINR and entry.dist == "hyperaudio-gridinr"
    assert {"grid-inr", "grid-inr-small"} <= set(registry.names("presets"))
    for name in ("grid-inr", "grid-inr-small"):
        check_preset(registry.get("presets", name).obj, name=name)
    check_plugin("hyperaudio-gridinr", registry)  # everything it registers, as 'plugin install' checks it
