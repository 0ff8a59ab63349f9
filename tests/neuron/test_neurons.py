"""Neuron behaviour: hand-computed traces, SpikingJelly 2.0 golden vectors, gradcheck, state handling, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from cases import SURROGATE_MODULES

from spikeforge import LIFSpike, functional, neuron, surrogate

VECTORS = Path(__file__).parent.parent / "data" / "neurons_public.pt"

ALL_SURROGATES = [cls() for cls in SURROGATE_MODULES]


def run_trace(node, xs):
    """Feed a list of scalar inputs one step at a time; return spikes and membranes (after reset) as lists."""
    spikes, vs = [], []
    for x in xs:
        spikes.append(node(torch.tensor([x])).item())
        vs.append(node.v.item())
    return spikes, vs


# ------------------------------------------------------------------------------------- hand-computed traces
def test_if_hard_reset_trace():
    # H: 0.6, 1.2 (fire, V=0), 0.6, 1.2 (fire), 0.3 ...
    spikes, vs = run_trace(neuron.IFNode(), [0.6, 0.6, 0.6, 0.6, 0.3])
    assert spikes == [0, 1, 0, 1, 0]
    assert vs == pytest.approx([0.6, 0.0, 0.6, 0.0, 0.3])


def test_if_soft_reset_trace_fires_on_tie():
    # H: 0.5, 1.0 (tie fires, V=0), 0.75, 1.5 (fire, V=0.5), 1.25 (fire, V=0.25)
    spikes, vs = run_trace(neuron.IFNode(v_reset=None), [0.5, 0.5, 0.75, 0.75, 0.75])
    assert spikes == [0, 1, 0, 1, 1]
    assert vs == pytest.approx([0.5, 0.0, 0.75, 0.5, 0.25])


def test_lif_decay_input_trace():
    # tau=2: H = V + (X - V)/2 with X = 1.5: 0.75, 1.125 (fire -> 0), 0.75, 1.125 (fire)
    spikes, vs = run_trace(neuron.LIFNode(tau=2.0), [1.5, 1.5, 1.5, 1.5])
    assert spikes == [0, 1, 0, 1]
    assert vs == pytest.approx([0.75, 0.0, 0.75, 0.0])


def test_lif_no_decay_input_trace_with_nonzero_reset():
    # tau=4, V_r = -0.2: H = V - (V + 0.2)/4 + X; V0 = -0.2, X = 0.5
    node = neuron.LIFNode(tau=4.0, decay_input=False, v_reset=-0.2)
    v, expected_v, expected_s = -0.2, [], []
    for _ in range(6):
        h = v - (v + 0.2) / 4 + 0.5
        s = 1.0 if h >= 1.0 else 0.0
        v = -0.2 if s else h
        expected_v.append(v)
        expected_s.append(s)
    spikes, vs = run_trace(node, [0.5] * 6)
    assert spikes == expected_s and 1.0 in expected_s
    assert vs == pytest.approx(expected_v)


def test_lif_soft_reset_trace():
    # soft reset: V_r = 0 in the charge; H = V + (X - V)/2, X = 2.5: 1.25 (fire, V=.25), 1.375 (fire, V=.375), ...
    spikes, vs = run_trace(neuron.LIFNode(tau=2.0, v_reset=None), [2.5, 2.5, 0.0])
    assert spikes == [1, 1, 0]
    assert vs == pytest.approx([0.25, 0.375, 0.1875])


def test_plif_initial_tau_and_trace():
    node = neuron.ParametricLIFNode(init_tau=4.0)
    assert torch.sigmoid(node.w).item() == pytest.approx(0.25)
    spikes, vs = run_trace(node, [2.0, 2.0, 2.0])
    # H = V + (X - V)/4: 0.5, 0.875, 1.15625 (fire)
    assert spikes == [0, 0, 1]
    assert vs == pytest.approx([0.5, 0.875, 0.0])


def test_stbp_lifspike_trace_is_strict_and_multiplicative():
    # u_t = 0.25 * u_{t-1} * (1 - o_{t-1}) + x_t, o = u > 0.4 (strict)
    x = torch.tensor([0.4, 0.3, 0.1, 0.5, 0.45]).view(5, 1)
    out = LIFSpike()(x).flatten().tolist()
    # u: 0.4 (tie, no fire), 0.4 (0.1 + 0.3: tie again, no fire), 0.2, 0.55 (fire), 0.45 (fire)
    assert out == [0, 0, 0, 1, 1]


def test_stbp_lifspike_time_last_layout():
    x = torch.rand(2, 3, 4, 5)  # [N, C, F, T]
    time_last = LIFSpike(time_dim=-1)(x)
    time_first = LIFSpike()(x.movedim(-1, 0)).movedim(0, -1)
    assert torch.equal(time_last, time_first)


# ------------------------------------------------------------------------------------ detach_reset gradient
def test_detach_reset_changes_only_the_reset_path():
    # IF, hard reset, two steps, Rect surrogate with alpha=1 (g' = 1 on |z| < 0.5).
    # Step 0: H0 = x0 = 1.2 fires (z = 0.2, g' = 1), V0 = 0. Step 1: H1 = V0 + x1, loss = S1.
    # dS1/dx0 = g'(H1 - 1) * dV0/dH0, with dV0/dH0 = (1 - S0) + (0 - H0) * g'(z0) = -1.2 (or 0 when detached).
    for detach, expected in ((False, -1.2), (True, 0.0)):
        node = neuron.IFNode(surrogate_function=surrogate.Rect(), detach_reset=detach, step_mode="m")
        x = torch.tensor([[1.2], [0.8]], requires_grad=True)
        out = node(x)
        out[1].sum().backward()
        assert x.grad[0].item() == pytest.approx(expected)
        assert x.grad[1].item() == pytest.approx(1.0)  # g'(0.8 - 1) = 1


# ------------------------------------------------------------------------------------ golden vectors
def _module_for_case(case):
    sg_cls = {"ATan": surrogate.ATan, "Sigmoid": surrogate.Sigmoid}[case["surrogate"]]
    common = dict(v_threshold=case["v_threshold"], v_reset=case["v_reset"], detach_reset=case["detach_reset"],
                  surrogate_function=sg_cls(alpha=case["surrogate_alpha"]), step_mode="m", store_v_seq=True)
    if case["neuron"] == "IFNode":
        return neuron.IFNode(**common)
    if case["neuron"] == "LIFNode":
        return neuron.LIFNode(tau=case["tau"], decay_input=case["decay_input"], **common)
    return neuron.ParametricLIFNode(init_tau=case["init_tau"], decay_input=case["decay_input"], **common)


def _golden_cases():
    if not VECTORS.exists():
        return []
    return torch.load(VECTORS, weights_only=True)["cases"]


@pytest.mark.parametrize("backend", [None, "reference"])
@pytest.mark.parametrize("case", _golden_cases(), ids=lambda c: f"case{c['case_id']}-{c['neuron']}")
def test_matches_spikingjelly_golden_vectors(case, backend):
    node = _module_for_case(case)
    node.backend = backend
    x = case["x"].clone().requires_grad_(True)
    spikes = node(x)
    (spikes * case["w"]).sum().backward()
    assert torch.equal(spikes.detach(), case["spikes"]), "spikes must match exactly (ties fire: H >= V_th)"
    torch.testing.assert_close(node.v_seq, case["v_seq"], atol=1e-6, rtol=0)
    torch.testing.assert_close(node.v, case["v_final"], atol=1e-6, rtol=0)
    torch.testing.assert_close(x.grad, case["x_grad"], atol=1e-6, rtol=0)
    if case["neuron"] == "ParametricLIFNode":
        torch.testing.assert_close(node.w.detach(), case["plif_w"], atol=0, rtol=0)
        torch.testing.assert_close(node.w.grad, case["plif_w_grad"], atol=1e-5, rtol=1e-5)


def test_golden_vectors_present():
    assert VECTORS.exists(), f"golden vectors missing: {VECTORS}"
    assert len(_golden_cases()) == 28


# ------------------------------------------------------------------------------------ gradcheck (float64)
def _neuron_fn(kind, sg, v_reset, detach_reset, decay_input):
    def fn(x_seq, v0, w):
        common = dict(v_reset=v_reset, surrogate_function=sg, detach_reset=detach_reset, store_v_seq=True,
                      backend="reference")
        if kind == "IF":
            s, v, vs = functional.if_multi_step(x_seq, v0, **common)
        elif kind == "LIF":
            s, v, vs = functional.lif_multi_step(x_seq, v0, tau=3.0, decay_input=decay_input, **common)
        else:
            s, v, vs = functional.plif_multi_step(x_seq, v0, w, decay_input=decay_input, **common)
        return s, v, vs

    return fn


@pytest.mark.parametrize("sg", ALL_SURROGATES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("kind", ["IF", "LIF", "PLIF"])
def test_gradcheck_every_neuron_and_surrogate(kind, sg):
    """float64 gradcheck through the custom Function, in the surrogate's smooth (spiking=False) form.

    With S = g(H − V_th) the pass is differentiable, and its backward is the same code as the spiking one with
    Θ's value replaced by g's, so every charge / reset / decay / initial-state term is verified.
    """
    smooth = type(sg)(**({"w": sg.w, "c": 0.3} if isinstance(sg, surrogate.PiecewiseLeakyReLU) else
                         {"a": sg.a} if isinstance(sg, surrogate.STBPRectangle) else {"alpha": sg.alpha}),
                      spiking=False)
    gen = torch.Generator().manual_seed(7)
    x = (torch.rand(5, 2, 3, generator=gen, dtype=torch.float64) * 2.0 - 0.3).requires_grad_(True)
    v0 = (torch.rand(2, 3, generator=gen, dtype=torch.float64) * 0.5).requires_grad_(True)
    w = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    # detach_reset deliberately drops a true derivative term, so it is checked against the autograd loop below.
    for v_reset in (0.0, -0.3, None):
        for decay_input in ((True, False) if kind != "IF" else (True,)):
            fn = _neuron_fn(kind, smooth, v_reset, False, decay_input)
            assert torch.autograd.gradcheck(fn, (x, v0, w), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("sg", ALL_SURROGATES, ids=lambda s: type(s).__name__)
def test_gradcheck_stbp_lifspike(sg):
    smooth_kwargs = {"w": sg.w, "c": 0.3} if isinstance(sg, surrogate.PiecewiseLeakyReLU) else (
        {"a": sg.a} if isinstance(sg, surrogate.STBPRectangle) else {"alpha": sg.alpha})
    node = LIFSpike(surrogate_function=type(sg)(**smooth_kwargs, spiking=False))
    x = (torch.rand(6, 2, 3, dtype=torch.float64) * 0.8).requires_grad_(True)
    assert torch.autograd.gradcheck(node, (x,), eps=1e-6, atol=1e-6)


def _loop_reference(x_seq, sg, v_reset, detach_reset, decay, decay_input, v0):
    """An independent autograd implementation: a Python loop of torch ops and the surrogate module."""
    v = v0
    spikes = []
    for x in x_seq:
        v_r = 0.0 if v_reset is None else v_reset
        h = v + x if decay == 0.0 else (v + (x - (v - v_r)) * decay if decay_input else v - (v - v_r) * decay + x)
        s = sg(h - 1.0)
        s_r = s.detach() if detach_reset else s
        v = h - s_r if v_reset is None else h * (1 - s_r) + v_reset * s_r
        spikes.append(s)
    return torch.stack(spikes), v


@pytest.mark.parametrize("sg", ALL_SURROGATES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("kind", ["IF", "LIF", "PLIF"])
def test_spiking_gradients_equal_autograd_loop(kind, sg):
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(7, 4, 5, generator=gen, dtype=torch.float64) * 2.0 - 0.2).requires_grad_(True)
    w_loss = torch.randn(7, 4, 5, generator=gen, dtype=torch.float64)
    for v_reset in (0.0, None):
        for detach_reset in (False, True):
            w = torch.tensor(-0.4, dtype=torch.float64, requires_grad=True)
            fn = _neuron_fn(kind, sg, v_reset, detach_reset, True)
            s, v, _ = fn(x, 0.0, w)
            ((s * w_loss).sum() + v.sum()).backward()
            got_x, got_w = x.grad.clone(), w.grad
            x.grad = None
            w_ref = torch.tensor(-0.4, dtype=torch.float64, requires_grad=True)
            decay = {"IF": 0.0, "LIF": 1 / 3.0}.get(kind)
            decay = torch.sigmoid(w_ref) if decay is None else decay
            s_ref, v_ref = _loop_reference(x, sg, v_reset, detach_reset, decay, True, torch.zeros(4, 5).double())
            ((s_ref * w_loss).sum() + v_ref.sum()).backward()
            assert torch.equal(s.detach(), s_ref.detach())
            torch.testing.assert_close(got_x, x.grad, atol=1e-12, rtol=1e-10)
            if kind == "PLIF":
                torch.testing.assert_close(got_w, w_ref.grad, atol=1e-12, rtol=1e-10)
            x.grad = None


# ------------------------------------------------------------------------------------ step modes and state
@pytest.mark.parametrize("make", [
    lambda: neuron.IFNode(v_reset=None, surrogate_function=surrogate.ATan()),
    lambda: neuron.LIFNode(tau=3.0, decay_input=False, detach_reset=True),
    lambda: neuron.ParametricLIFNode(init_tau=2.5, v_reset=-0.1),
])
def test_single_step_loop_equals_multi_step(make):
    x = torch.rand(8, 3, 6) * 1.5
    single, multi = make(), make()
    multi.step_mode = "m"
    xs = x.clone().requires_grad_(True)
    xm = x.clone().requires_grad_(True)
    out_s = torch.stack([single(xs[t]) for t in range(8)])
    out_m = multi(xm)
    assert torch.equal(out_s, out_m)
    torch.testing.assert_close(single.v, multi.v)
    g = torch.randn_like(out_s)
    (out_s * g).sum().backward()
    (out_m * g).sum().backward()
    torch.testing.assert_close(xs.grad, xm.grad, atol=1e-6, rtol=1e-5)


def test_reset_net_restores_initial_state_and_detach_cuts_graph():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), neuron.LIFNode(v_reset=-0.5), neuron.IFNode(v_reset=None))
    x = torch.rand(2, 4, requires_grad=True)
    net(x)
    assert isinstance(net[1].v, torch.Tensor) and net[1].v.requires_grad
    functional.detach_net(net)
    assert not net[1].v.requires_grad and net[1].v.grad_fn is None
    functional.reset_net(net)
    assert net[1].v == -0.5 and net[2].v == 0.0
    out1 = net(x)
    functional.reset_net(net)
    out2 = net(x)
    assert torch.equal(out1, out2)


def test_store_v_seq_records_membrane_after_reset():
    node = neuron.IFNode(step_mode="m", store_v_seq=True)
    node(torch.tensor([[0.6], [0.6], [0.3]]))
    assert node.v_seq.flatten().tolist() == pytest.approx([0.6, 0.0, 0.3])


def test_set_step_mode_and_half_precision_input_keeps_float32_state():
    net = torch.nn.Sequential(neuron.LIFNode())
    functional.set_step_mode(net, "m")
    assert net[0].step_mode == "m"
    for dtype in (torch.float16, torch.bfloat16):
        functional.reset_net(net)
        out = net(torch.rand(4, 2, 3).to(dtype) * 3)
        assert out.dtype == dtype and net[0].v.dtype == torch.float32


def test_surrogate_spiking_false_gives_smooth_neuron_output():
    node = neuron.IFNode(surrogate_function=surrogate.Sigmoid(spiking=False))
    out = node(torch.tensor([0.5]))
    assert out.item() == pytest.approx(1 / (1 + math.exp(-4 * (0.5 - 1.0))))


# ------------------------------------------------------------------------------------ bad input
def test_bad_input_errors_name_the_argument():
    with pytest.raises(ValueError, match="tau"):
        neuron.LIFNode(tau=1.0)
    with pytest.raises(ValueError, match="init_tau"):
        neuron.ParametricLIFNode(init_tau=0.5)
    with pytest.raises(ValueError, match="step_mode"):
        neuron.IFNode(step_mode="x")
    with pytest.raises(ValueError, match="step_mode"):
        functional.set_step_mode(torch.nn.Sequential(neuron.IFNode()), "multi")
    with pytest.raises(ValueError, match="v_threshold"):
        neuron.IFNode(v_threshold=float("nan"))
    with pytest.raises(ValueError, match="v_threshold"):
        neuron.LIFNode(v_threshold=float("inf"))
    with pytest.raises(ValueError, match="T >= 1"):
        neuron.IFNode(step_mode="m")(torch.zeros(0, 3))
    with pytest.raises(TypeError, match="floating-point"):
        neuron.IFNode()(torch.ones(3, dtype=torch.int64))
    node = neuron.LIFNode()
    node(torch.rand(2, 3))
    with pytest.raises(ValueError, match="reset"):
        node(torch.rand(4, 3))
    with pytest.raises(ValueError, match="backend"):
        neuron.IFNode(backend="nonsense")(torch.rand(2))
    assert neuron.LIFNode(tau=3).tau == 3.0  # ints are accepted


def test_surrogate_module_matches_listed_derivatives():
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    expected = {
        "Sigmoid": 4 * torch.sigmoid(4 * x) * (1 - torch.sigmoid(4 * x)),
        "ATan": 1.0 / (1 + (math.pi * x) ** 2),
        "PiecewiseQuadratic": torch.clamp(1 - x.abs(), min=0),
        "PiecewiseExp": 0.5 * torch.exp(-x.abs()),
        "SoftSign": 2 / (2 * (1 + 2 * x.abs()) ** 2),
        "SuperSpike": 1 / (1 + x.abs()) ** 2,
        "Erf": 2 / math.sqrt(math.pi) * torch.exp(-4 * x**2),
        "Rect": (x.abs() < 0.5).double(),
        "PiecewiseLeakyReLU": torch.where(x.abs() < 1, torch.full_like(x, 0.5), torch.full_like(x, 0.01)),
        "STBPRectangle": (x.abs() < 0.5).double(),
    }
    for sg in ALL_SURROGATES:
        xx = x.clone().requires_grad_(True)
        out = sg(xx)
        assert torch.equal(out.detach(), (x >= 0).double())
        out.sum().backward()
        torch.testing.assert_close(xx.grad, expected[type(sg).__name__], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("sg", ALL_SURROGATES, ids=lambda s: type(s).__name__)
def test_primitive_derivative_is_the_surrogate_gradient(sg):
    # Away from the kinks, d/dx g(x) (by autograd) equals the surrogate's g'(x).
    x = torch.linspace(-2.93, 2.97, 300, dtype=torch.float64, requires_grad=True)
    g = sg.primitive_function(x)
    (grad,) = torch.autograd.grad(g.sum(), x)
    torch.testing.assert_close(grad, sg.derivative(x.detach()), atol=1e-10, rtol=1e-10)
