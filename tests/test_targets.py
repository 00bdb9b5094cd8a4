"""The built-in target networks: the module contract, batched evaluation, fitting, and the KAN basis."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hyperaudio.config import target_signature
from hyperaudio.functional import (
    call_batched,
    count_parameters,
    direct_call,
    fresh_parameters,
    heads,
    modulation_parameters,
    postprocess,
    stacked_parameters,
)
from hyperaudio.plugins import Registry
from hyperaudio.targets import FINER, KAN, RFF, SIREN, WIRE, FiLMSIREN, PositionalEncoding, SiameseSIREN
from hyperaudio.targets.finer import wrap_phase_
from hyperaudio.targets.kan import KANLayer, bspline_basis

pytestmark = pytest.mark.usefixtures("one_thread")

BUILTINS = ["nerf", "siren", "rff", "finer", "wire", "kan", "siamese-siren", "film-siren"]
# Adam learning rates for the short fitting check; periodic networks need small ones (HyperSound §4.3).
FIT_LR = {"nerf": 1e-3, "siren": 1e-4, "rff": 1e-3, "finer": 1e-4, "wire": 1e-4, "kan": 1e-2,
          "siamese-siren": 1e-4, "film-siren": 1e-4}


@pytest.fixture(scope="module")
def registry():
    registry = Registry()
    registry.load_default_plugins()
    return registry


def build(registry, name, seed=0, **kwargs):
    torch.manual_seed(seed)
    return registry.get("target_networks", name).obj(**kwargs)


def grid(n: int, dtype=torch.float32) -> torch.Tensor:
    return torch.linspace(-1, 1, n, dtype=dtype).unsqueeze(-1)


def dense_basis(x: torch.Tensor, knots: torch.Tensor, order: int) -> torch.Tensor:
    """Reference Cox–de Boor recursion over every knot (efficient-KAN's ``b_splines``)."""
    x = x.unsqueeze(-1)
    bases = ((x >= knots[:-1]) & (x < knots[1:])).to(x.dtype)
    for d in range(1, order + 1):
        left = (x - knots[: -(d + 1)]) / (knots[d:-1] - knots[: -(d + 1)]) * bases[..., :-1]
        right = (knots[d + 1 :] - x) / (knots[d + 1 :] - knots[1:-d]) * bases[..., 1:]
        bases = left + right
    return bases


# -- registry and constructor contract ----------------------------------------------------------


def test_builtins_registered(registry):
    assert set(BUILTINS) <= set(registry.names("target_networks"))
    assert not registry.broken()
    for name in BUILTINS:
        entry = registry.get("target_networks", name)
        assert entry.description and entry.paper, name
        assert entry.obj.__doc__ and len(entry.obj.__doc__) > 200, name


@pytest.mark.parametrize("name", BUILTINS)
def test_constructor_takes_keywords_with_defaults(registry, name):
    signature = target_signature(registry.get("target_networks", name).obj)
    assert signature.get("out_channels") == 1
    assert all(default is not None for default in signature.values()), signature


# -- the module contract -------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("channels", [1, 2])
def test_output_shape_and_finite(registry, name, channels):
    module = build(registry, name, out_channels=channels)
    with torch.no_grad():
        y = module(grid(257))
    assert y.shape == (257, channels * heads(module))
    assert torch.isfinite(y).all()
    assert y.std() > 0


@pytest.mark.parametrize("name", BUILTINS)
def test_fixed_things_are_buffers(registry, name):
    module = build(registry, name)
    buffers = dict(module.named_buffers())
    params = dict(module.named_parameters())
    assert not set(buffers) & set(params)
    for key in buffers:  # nothing fixed was made learnable by mistake
        assert key.endswith(("frequencies", "B", "grid")), key


@pytest.mark.parametrize("name", BUILTINS)
def test_call_batched_equals_own_forward(registry, name):
    """Stacked copies through vmap reproduce the module's own output, member by member.

    Checked in float64: with ω0 = 2000 (SIREN, FiLM, WIRE's first layer) a one-ulp difference
    between the batched and unbatched matmul kernels in float32 already moves the output by more
    than 1e-5, so float32 could not tell a real batching bug from rounding.
    """
    module = build(registry, name).double()
    t = grid(257, torch.float64)
    own = module(t)
    batched = call_batched(module, stacked_parameters(module, 3), t)
    assert batched.shape == (3, *own.shape)
    assert (batched - own).abs().max() < 1e-5


@pytest.mark.parametrize("name", BUILTINS)
def test_call_batched_float32_as_accurate_as_own_forward(registry, name):
    module = build(registry, name)
    t = grid(257)
    with torch.no_grad():
        own = module(t)
        batched = call_batched(module, stacked_parameters(module, 3), t)
        exact = module.double()(t.double())
    rounding = (own.double() - exact).abs().max().item()
    assert (batched.double() - exact).abs().max().item() <= 10 * rounding + 1e-5


@pytest.mark.parametrize("name", BUILTINS)
def test_call_batched_distinct_members(registry, name):
    """Each batch member uses its own parameters (no cross-talk through vmap)."""
    cls = registry.get("target_networks", name).obj
    torch.manual_seed(1)
    params = {n: p.double() for n, p in fresh_parameters(cls, 3).items()}
    module = cls().double()
    t = grid(129, torch.float64)
    batched = call_batched(module, params, t)
    for b in range(3):
        member = cls().double()
        member.load_state_dict({**module.state_dict(), **{n: p[b] for n, p in params.items()}})
        assert (batched[b] - member(t)).abs().max() < 1e-5
    assert (batched[0] - batched[1]).abs().max() > 1e-3


@pytest.mark.parametrize("name", BUILTINS)
def test_gradients_reach_every_parameter(registry, name):
    module = build(registry, name).double()
    t = grid(257, torch.float64)
    target = torch.sin(40 * t)

    loss = (module(t) - target).pow(2).mean()
    own = dict(zip(dict(module.named_parameters()), torch.autograd.grad(loss, list(module.parameters()))))

    params = {n: p.requires_grad_(True) for n, p in stacked_parameters(module, 2).items()}
    loss = (call_batched(module, params, t) - target).pow(2).mean(dim=(1, 2)).sum()
    batched = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))

    for n, g in own.items():
        assert torch.isfinite(g).all() and g.abs().max() > 0, f"{name}: no gradient for {n}"
        for b in range(2):
            assert torch.allclose(batched[n][b], g, rtol=1e-6, atol=1e-9), f"{name}: batched gradient of {n}"


@pytest.mark.parametrize("name", BUILTINS)
def test_fitting_lowers_the_error(registry, name):
    """A few Adam steps on a short two-tone chirp halve the MSE (same target for every head)."""
    n, sr = 2048, 22050.0
    seconds = np.arange(n) / sr
    tone = 0.4 * np.sin(2 * np.pi * (300 * seconds + 4000 * seconds**2)) + 0.3 * np.sin(2 * np.pi * 1100 * seconds)
    target = torch.from_numpy(tone.astype(np.float32)).unsqueeze(-1)
    t = grid(n)
    module = build(registry, name)
    optimizer = torch.optim.Adam(module.parameters(), lr=FIT_LR[name])

    def mse():
        return (module(t) - target).pow(2).mean()

    with torch.no_grad():
        start = mse().item()
    for _ in range(60):
        optimizer.zero_grad()
        loss = mse()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        end = mse().item()
    assert math.isfinite(end)
    assert end < 0.5 * start, f"{name}: MSE {start:.4f} -> {end:.4f}"


# -- KAN -------------------------------------------------------------------------------------------


def test_kan_has_the_papers_parameter_count():
    assert count_parameters(KAN()) == 33_768  # 2412 edges x (G + k + 2 = 14)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_kan_fast_basis_equals_dense_cox_de_boor(order):
    layer = KANLayer(5, 2, grid_size=10, spline_order=order)
    torch.manual_seed(0)
    inside = torch.rand(2000, 5) * 2.8 - 1.4
    knots = layer.grid.unsqueeze(-1).expand(-1, 5)  # exactly on every knot, both ends included
    outside = torch.tensor([[-1e6, -3.0, -1.7, 2.0, 1e6]])
    x = torch.cat([inside, knots, outside])
    fast = bspline_basis(x, layer.grid, order)
    dense = dense_basis(x, layer.grid, order)
    assert fast.shape == dense.shape == (x.shape[0], 5, 10 + order)
    assert (fast - dense).abs().max() < 1e-5
    assert fast[-1].abs().max() == 0  # outside the extended grid: no spline at all
    if order > 1:  # the bases are C^1 there, so their gradients agree too
        xg = inside.clone().requires_grad_(True)
        g_fast = torch.autograd.grad(bspline_basis(xg, layer.grid, order).pow(2).sum(), xg)[0]
        xg = inside.clone().requires_grad_(True)
        g_dense = torch.autograd.grad(dense_basis(xg, layer.grid, order).pow(2).sum(), xg)[0]
        assert (g_fast - g_dense).abs().max() < 1e-3


def test_kan_layer_equals_reference_formula():
    layer = KANLayer(4, 3)
    x = torch.rand(256, 4) * 3.2 - 1.6  # beyond the extended grid [-1.4, 1.4] too: margins, zero spline
    scaled = layer.spline_weight * layer.spline_scaler.unsqueeze(-1)
    reference = torch.nn.functional.silu(x) @ layer.base_weight.T + torch.einsum(
        "nij,oij->no", dense_basis(x, layer.grid, 2), scaled
    )
    assert (layer(x) - reference).abs().max() < 1e-5


@pytest.mark.parametrize("order", [1, 2, 3])
def test_kan_direct_call_lookup_equals_the_dense_basis_path(order):
    torch.manual_seed(0)
    layer = KANLayer(4, 3, spline_order=order)
    x = torch.rand(256, 4) * 3.2 - 1.6  # beyond the extended grid too
    x[0, 1] = float("nan")
    with direct_call():
        got = layer(x)
    want = layer(x)
    torch.testing.assert_close(got, want.detach(), rtol=0, atol=1e-6, equal_nan=True)
    assert got[0].isnan().all() and not got[1:].isnan().any()
    kan, t = KAN(), grid(2048)
    with direct_call():
        got = kan(t)
    torch.testing.assert_close(got, kan(t).detach(), rtol=0, atol=1e-6)


def test_kan_lookup_tables_follow_in_place_parameter_changes():
    torch.manual_seed(0)
    layer, x = KANLayer(4, 3), torch.rand(64, 4) * 2 - 1
    with direct_call():
        before = layer(x)
        tables = layer.lookup_tables()
        assert layer.lookup_tables() is tables  # built once per parameter state
        layer.spline_scaler.mul_(2.0)  # what the renderer's copy_ into its module does
        after = layer(x)
    assert layer.lookup_tables() is not tables
    torch.testing.assert_close(after, layer(x).detach(), rtol=0, atol=1e-6)
    assert not torch.allclose(after, before)
    layer.load_state_dict({n: torch.randn_like(p) for n, p in layer.state_dict().items() if n != "grid"}, strict=False)
    with direct_call():
        got = layer(x)
    torch.testing.assert_close(got, layer(x).detach(), rtol=0, atol=1e-5)


def test_kan_nan_input_gives_nan_not_an_index_error():
    y = KANLayer(3, 2)(torch.tensor([[float("nan"), 0.0, 0.5]]))
    assert torch.isnan(y).all()


# -- per-network details ---------------------------------------------------------------------------


def test_positional_encoding_layout():
    t = torch.tensor([[0.3]])
    gamma = PositionalEncoding(3)(t)
    expected = [f(2**i * math.pi * 0.3) for i in range(3) for f in (math.sin, math.cos)]
    assert torch.allclose(gamma[0], torch.tensor(expected), atol=1e-6)
    with_t = PositionalEncoding(16, include_input=True)
    assert with_t.out_features == 33 and with_t(t)[0, 0] == 0.3


def test_siren_initialisation():
    module = SIREN()
    first, second = module.layers[0].linear.weight, module.layers[1].linear.weight
    assert first.abs().max() <= 1.0 and first.abs().max() > 0.9  # U(-1/in, 1/in), in = 1
    bound = math.sqrt(6 / 90) / 30
    assert second.abs().max() <= bound and second.abs().max() > 0.9 * bound


def test_rff_matrix_is_a_seeded_buffer():
    a, b, c = RFF(), RFF(), RFF(seed=1)
    assert "encoding.B" not in dict(a.named_parameters())
    assert torch.equal(a.encoding.B, b.encoding.B)
    assert not torch.equal(a.encoding.B, c.encoding.B)
    assert a.encoding.B.shape == (256, 1)
    assert 0.8 * 1000 < a.encoding.B.std() < 1.2 * 1000


def test_finer_first_bias_range():
    bias = FINER(first_bias_scale=20.0).layers[0].linear.bias
    assert bias.abs().max() <= 20.0 and bias.abs().max() > 10.0


def test_finer_phase_wrap_keeps_the_sine_in_float32():
    torch.manual_seed(0)
    a = torch.cat([torch.rand(20000) * 2e5 - 1e5, torch.tensor([0.0, math.pi, -math.pi, 12787.9])])
    exact = torch.sin(a.double())  # of the same float32 numbers
    wrapped = wrap_phase_(a.clone())
    assert wrapped.abs().max() <= math.pi + 1e-2  # k = round(a / 2π) is itself rounded near half-turns
    assert (torch.sin(wrapped).double() - exact).abs().max() < 5e-7


def test_wire_matches_complex_arithmetic():
    torch.manual_seed(0)
    module = WIRE(hidden=(8, 8, 8)).double()
    t = grid(33, torch.float64)

    def psi(z, omega, s):
        return torch.exp(1j * omega * z - (s * z).abs() ** 2)

    z = psi(module.first(t).to(torch.complex128), module.omega_first, module.s_first)
    for layer in module.layers:
        weight = torch.complex(layer.weight_real, layer.weight_imag)
        z = psi(z @ weight.T + torch.complex(layer.bias_real, layer.bias_imag), module.omega_0, module.s_0)
    out = module.output
    expected = (z @ torch.complex(out.weight_real, out.weight_imag).T).real + out.bias
    assert torch.allclose(module(t), expected, atol=1e-10)


@pytest.mark.parametrize("cls", [SIREN, FINER, FiLMSIREN])
def test_sine_layers_fold_omega_without_changing_values_or_gradients(cls):
    """The layers fold ω into their matrix products (speed); values and gradients must stay those of
    the papers' formulas, FINER's |z| + 1 held constant for backprop."""
    torch.manual_seed(0)
    module = cls().double()
    if cls is FiLMSIREN:
        with torch.no_grad():
            for layer in module.layers:
                layer.gamma.uniform_(0.5, 1.5)
                layer.beta.normal_()

    def textbook(t):
        x = t
        for layer in module.layers:
            z = layer.linear(x)
            if cls is FINER:
                x = torch.sin(layer.omega * (z.detach().abs() + 1) * z)
            elif cls is FiLMSIREN:
                x = torch.sin(layer.omega * layer.gamma * z + layer.beta)
            else:
                x = torch.sin(layer.omega * z)
        return module.output(x)

    t = grid(300, torch.float64)
    params = list(module.parameters())
    got, want = module(t), textbook(t)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for g, w in zip(torch.autograd.grad(got.square().sum(), params), torch.autograd.grad(want.square().sum(), params)):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)
    with direct_call():  # the in-place path (inference mode, no vmap)
        torch.testing.assert_close(module(t), want.detach(), rtol=0, atol=1e-10)


def test_film_siren_modulations():
    film = FiLMSIREN()
    names = modulation_parameters(film)
    params = dict(film.named_parameters())
    assert len(names) == 10 and set(names) <= set(params)
    assert all(params[n].shape == (90,) for n in names)
    # gamma = 1, beta = 0: at initialisation it is the SIREN with the same weights (in float64: the
    # two fold ω into their products differently, and ω0 = 2000 magnifies float32 rounding)
    siren = SIREN()
    siren.load_state_dict({k: v for k, v in film.state_dict().items() if k in siren.state_dict()})
    film, siren, t = film.double(), siren.double(), grid(257, torch.float64)
    assert torch.allclose(film(t), siren(t), atol=1e-10)
    # the modulations change the output
    with torch.no_grad():
        film.layers[2].beta.fill_(0.5)
    assert (film(t) - siren(t)).abs().max() > 1e-3


def test_siamese_heads_are_head_major():
    module = SiameseSIREN(out_channels=2)
    assert heads(module) == 2
    t = grid(65)
    with torch.no_grad():
        y = module(t)
        h = module.trunk(module.encoding(t))
        assert torch.equal(y[:, :2], module.twins[0](h))
        assert torch.equal(y[:, 2:], module.twins[1](h))
    assert not torch.equal(y[:, :2], y[:, 2:])  # different initialisations


def test_siamese_postprocess_returns_finite_signal():
    module = SiameseSIREN()
    with torch.no_grad():
        y = module(grid(8192)).T.numpy()  # [H, M]
    out = postprocess(module, y, 22050)
    assert out.shape == (8192,) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert not np.allclose(out, y[0])  # something was removed
    short = postprocess(module, y[:, :100], 22050)  # too short to gate: head 0 as it is
    assert np.array_equal(short, y[0, :100])
