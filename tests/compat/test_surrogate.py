"""spikeforge.surrogate against SpikingJelly 2.0's surrogate module.

CI (no SpikingJelly): every surrogate's gradient against its formula written out here, the primitive's autograd
derivative against the surrogate gradient, the lowercase autograd functions, SpikingJelly-style subclassing, and
the route of a surrogate outside the kernels' table (``SurrogateKind.CUSTOM``) to the reference kernel, checked
against the built-in kernel path. Peer venv: every public SpikingJelly surrogate class and function compared in
one process, alone and inside LIF/IF neurons (spikes and input gradients).
"""

from __future__ import annotations

import copy
import gc
import logging
import math

import pytest
import torch

from spikeforge import functional, neuron, surrogate
from spikeforge.kernels import select_kernel
from spikeforge.kernels.reference import ReferenceKernel
from spikeforge.spec import SurrogateKind

logging.getLogger("spikeforge").setLevel(logging.WARNING)

X = torch.linspace(-2.9, 2.9, 233, dtype=torch.float64)


def _where(cond, a, b):
    """torch.where in float64 also for Python-number branches (torch would make those float32)."""
    as64 = lambda v: v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return torch.where(cond, as64(a), as64(b))

# class, constructor args, g'(x) written from the formulas (SpikingJelly 2.0's)
NEW_SURROGATES = {
    "LeakyKReLU": ((0.1, 2.0), lambda x: _where(x >= 0, 2.0, 0.1) * torch.ones_like(x)),
    "S2NN": ((4.0, 1.0), lambda x: _where(x < 0, 4 * torch.sigmoid(4 * x) * (1 - torch.sigmoid(4 * x)),
                                               1.0 / (x + 1.0))),
    "QPseudoSpike": ((3.0,), lambda x: (1 + 2 * x.abs() / 2.0) ** -3.0),
    "LogTailedReLU": ((0.05,), lambda x: _where(x > 1, 1 / x, _where(x <= 0, 0.05, 1.0))),
    "NonzeroSignLogAbs": ((2.0,), lambda x: 1 / (0.5 + x.abs())),
    "SquarewaveFourierSeries": ((3, 8.0), lambda x: 0.5 * (torch.cos(2 * math.pi / 8 * x)
                                                           + torch.cos(3 * 2 * math.pi / 8 * x))),
    "FakeNumericalGradient": ((0.3,), lambda x: torch.clamp_max(_where(x >= 0, 1.0, -1.0) / x, 0.3)),
    "DeterministicPass": ((), lambda x: torch.ones_like(x)),
}


def _grad(module_or_fn, x, *args):
    x = x.clone().requires_grad_(True)
    y = module_or_fn(x, *args) if args else module_or_fn(x)
    y.sum().backward()
    return y.detach(), x.grad


@pytest.mark.parametrize("name", list(NEW_SURROGATES))
def test_new_surrogates_forward_theta_backward_formula(name):
    args, expected = NEW_SURROGATES[name]
    sg = getattr(surrogate, name)(*args)
    assert sg.is_custom and sg.spec.kind is SurrogateKind.CUSTOM
    y, g = _grad(sg, X)
    assert torch.equal(y, (X >= 0).double())
    torch.testing.assert_close(g, expected(X), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["LeakyKReLU", "S2NN", "QPseudoSpike", "LogTailedReLU", "NonzeroSignLogAbs",
                                  "SquarewaveFourierSeries", "Sigmoid", "ATan", "Erf", "PiecewiseLeakyReLU"])
def test_primitive_derivative_is_the_surrogate_gradient(name):
    args = NEW_SURROGATES.get(name, ((),))[0]
    sg = getattr(surrogate, name)(*args)
    x = X[(X - 1).abs() > 1e-3]  # away from the kinks of LogTailedReLU / PiecewiseLeakyReLU
    x = x[(x.abs() > 1e-3) & ((x.abs() - 1).abs() > 1e-3)]
    sg.set_spiking_mode(False)
    _, g_primitive = _grad(sg, x)
    sg.set_spiking_mode(True)
    _, g_surrogate = _grad(sg, x)
    tol = 2e-5 if name == "S2NN" else 1e-9  # S2NN's primitive is β·log(|x + 1| + 1e-5): off by that 1e-5
    torch.testing.assert_close(g_primitive, g_surrogate, rtol=tol, atol=tol)
    torch.testing.assert_close(sg.derivative(x), g_surrogate, rtol=1e-12, atol=1e-12)


def test_lowercase_functions_and_backward_helpers():
    cases = [(surrogate.sigmoid, (4.0,), lambda x: 4 * torch.sigmoid(4 * x) * (1 - torch.sigmoid(4 * x))),
             (surrogate.atan, (2.0,), lambda x: 1 / (1 + (math.pi * x) ** 2)),
             (surrogate.soft_sign, (2.0,), lambda x: 1 / (1 + 2 * x.abs()) ** 2),
             (surrogate.piecewise_quadratic, (1.0,), lambda x: torch.clamp(1 - x.abs(), min=0)),
             (surrogate.piecewise_exp, (1.0,), lambda x: 0.5 * torch.exp(-x.abs())),
             (surrogate.super_spike, (1.0,), lambda x: 1 / (1 + x.abs()) ** 2),
             (surrogate.erf, (2.0,), lambda x: 2 / math.sqrt(math.pi) * torch.exp(-4 * x ** 2)),
             (surrogate.rect, (1.0,), lambda x: (x.abs() < 0.5).double()),
             (surrogate.piecewise_leaky_relu, (1.0, 0.01), lambda x: _where(x.abs() < 1, 0.5, 0.01)),
             (surrogate.leaky_k_relu, (0.1, 2.0), NEW_SURROGATES["LeakyKReLU"][1]),
             (surrogate.s2nn, (4.0, 1.0), NEW_SURROGATES["S2NN"][1]),
             (surrogate.q_pseudo_spike, (3.0,), NEW_SURROGATES["QPseudoSpike"][1]),
             (surrogate.log_tailed_relu, (0.05,), NEW_SURROGATES["LogTailedReLU"][1]),
             (surrogate.nonzero_sign_log_abs, (2.0,), NEW_SURROGATES["NonzeroSignLogAbs"][1]),
             (surrogate.squarewave_fourier_series, (3, 8.0), NEW_SURROGATES["SquarewaveFourierSeries"][1]),
             (surrogate.fake_numerical_gradient, (0.3,), NEW_SURROGATES["FakeNumericalGradient"][1])]
    for fn, args, expected in cases:
        y, g = _grad(fn.apply, X, *args)
        assert torch.equal(y, (X >= 0).double()), fn.__name__
        torch.testing.assert_close(g, expected(X) * torch.ones_like(X), rtol=1e-12, atol=1e-12)
    y, g = _grad(surrogate.piecewise_leaky_relu.apply, X)  # SpikingJelly's defaults w=1, c=0.01
    torch.testing.assert_close(g, _where(X.abs() < 1, 0.5, 0.01).double())
    grad_out = torch.rand_like(X)
    g, none = surrogate.sigmoid_backward(grad_out, X, 4.0)
    assert none is None
    torch.testing.assert_close(g, grad_out * cases[0][2](X))
    y, g = _grad(surrogate.deterministic_pass.apply, X)
    assert torch.equal(y, (X >= 0).double()) and torch.equal(g, torch.ones_like(X))
    torch.manual_seed(0)
    p = torch.full((4000,), 0.3, dtype=torch.float64)
    y, g = _grad(surrogate.poisson_pass.apply, p)
    assert abs(float(y.mean()) - 0.3) < 0.03 and torch.equal(g, torch.ones_like(p))
    y, g = _grad(surrogate.MultiLevelSpikeCount(3), torch.tensor([-1.0, 0.4, 1.6, 2.5, 7.0]))
    assert y.tolist() == [0.0, 0.0, 2.0, 2.0, 3.0] and g.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


class MySigmoid(surrogate.SurrogateFunctionBase):
    """A user's surrogate written SpikingJelly 2.0's way: its own autograd function, static methods."""

    class _fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha):
            ctx.save_for_backward(x)
            ctx.alpha = alpha
            return (x >= 0).to(x)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            s = torch.sigmoid(ctx.alpha * x)
            return grad * ctx.alpha * s * (1 - s), None

    def __init__(self, alpha=4.0, spiking=True):
        super().__init__(spiking=spiking, alpha=alpha)

    @staticmethod
    def spiking_function(x, alpha):
        return MySigmoid._fn.apply(x, alpha)

    @staticmethod
    def primitive_function(x, alpha):
        return torch.sigmoid(alpha * x)


class OldStyleATan(surrogate.SurrogateFunctionBase):
    """SpikingJelly 0.0.0.0.14's way: ``super().__init__(alpha, spiking)``, parameters passed positionally."""

    def __init__(self, alpha=2.0, spiking=True):
        super().__init__(alpha, spiking)

    @staticmethod
    def spiking_function(x, a):
        return surrogate.atan.apply(x, a)

    @staticmethod
    def primitive_function(x, a):
        return torch.atan(math.pi / 2 * a * x) / math.pi + 0.5


class SigmoidWithOtherBackward(surrogate.Sigmoid):
    """A subclass of a table surrogate that changes its backward: no longer what the kernels compute."""

    @staticmethod
    def spiking_function(x, alpha):
        return surrogate.rect.apply(x, 1.0)


def _lif_run(sg, backend=None, T=7, seed=0):
    torch.manual_seed(seed)
    x = (torch.rand(T, 3, 5, dtype=torch.float64) * 1.6).requires_grad_(True)
    node = neuron.LIFNode(tau=2.0, surrogate_function=sg, step_mode="m", backend=backend)
    spikes = node(x)
    (spikes * torch.linspace(0.5, 1.5, 5, dtype=torch.float64)).sum().backward()
    return spikes.detach(), x.grad, node


@pytest.mark.parametrize("backend", [None, "cpu", "reference"])
def test_user_subclass_runs_in_neurons_on_the_reference_kernel(backend):
    custom = MySigmoid(4.0)
    assert custom.spec.kind is SurrogateKind.CUSTOM and custom.is_custom
    s_custom, g_custom, node = _lif_run(custom, backend)
    assert node.spec.custom_surrogate
    assert select_kernel(torch.device("cpu"), backend, node.spec) is ReferenceKernel
    s_builtin, g_builtin, builtin = _lif_run(surrogate.Sigmoid(4.0), backend)
    assert not builtin.spec.custom_surrogate
    assert torch.equal(s_custom, s_builtin) and s_custom.sum() > 0
    torch.testing.assert_close(g_custom, g_builtin, rtol=1e-12, atol=1e-12)
    s_old, g_old, _ = _lif_run(OldStyleATan(2.0))
    s_atan, g_atan, _ = _lif_run(surrogate.ATan(2.0))
    assert torch.equal(s_old, s_atan)
    torch.testing.assert_close(g_old, g_atan, rtol=1e-12, atol=1e-12)


def test_overriding_a_table_surrogate_makes_it_custom():
    sg = SigmoidWithOtherBackward()
    assert sg.is_custom and not surrogate.Sigmoid().is_custom and not surrogate.STBPRectangle().is_custom
    _, g, _ = _lif_run(sg)
    _, g_rect, _ = _lif_run(surrogate.Rect(1.0))
    torch.testing.assert_close(g, g_rect, rtol=1e-12, atol=1e-12)


def test_smooth_custom_surrogate_and_parameter_changes():
    sg = MySigmoid(4.0, spiking=False)
    s, g, _ = _lif_run(sg)
    s_ref, g_ref, _ = _lif_run(surrogate.Sigmoid(4.0, spiking=False))
    torch.testing.assert_close(s, s_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
    sg = surrogate.LeakyKReLU(0.0, 1.0)
    node = neuron.IFNode(surrogate_function=sg, step_mode="m")
    x = torch.tensor([[0.4], [0.7], [0.2]], dtype=torch.float64, requires_grad=True)
    node(x).sum().backward()
    first = x.grad.clone()
    sg.k = 3.0  # the live module's parameters are used (the spec names the module, not a copy)
    node.reset()
    x.grad = None
    node(x).sum().backward()
    assert not torch.equal(first, x.grad)


def test_copies_of_a_neuron_with_a_custom_surrogate_use_their_own_module():
    _, g_orig, node = _lif_run(MySigmoid(4.0))
    node.reset()
    clone = copy.deepcopy(node)
    del node
    gc.collect()
    torch.manual_seed(0)
    clone.reset()
    x = (torch.rand(7, 3, 5, dtype=torch.float64) * 1.6).requires_grad_(True)
    (clone(x) * torch.linspace(0.5, 1.5, 5, dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(x.grad, g_orig)
    assert surrogate.from_spec(clone.surrogate_function.spec) is clone.surrogate_function


def test_signatures_and_multi_args_base():
    assert surrogate.Sigmoid(3.0, False).alpha == 3.0 and not surrogate.Sigmoid(3.0, False).spiking
    assert surrogate.PiecewiseLeakyReLU(0.5, 0.1).spec.beta == 0.1
    assert surrogate.SquarewaveFourierSeries(4, 6.0).T_period == 6.0
    with pytest.raises(ValueError, match="alpha"):
        surrogate.Sigmoid(alpha=0.0)

    class TwoParam(surrogate.MultiArgsSurrogateFunctionBase):
        def __init__(self, spiking=True, lo=0.2, hi=1.0):
            super().__init__(spiking)
            self.lo, self.hi = lo, hi

        def forward(self, x):
            return surrogate.leaky_k_relu.apply(x, self.lo, self.hi)

    _, g = _grad(TwoParam(), X)
    torch.testing.assert_close(g, _where(X >= 0, 1.0, 0.2).double())
    assert TwoParam().is_custom
    y, g, _ = _lif_run(TwoParam())
    assert g.abs().sum() > 0
    assert functional.surrogate_spec(TwoParam()).kind is SurrogateKind.CUSTOM


def test_check_manual_grad_and_plot(tmp_path, capsys):
    err = surrogate.check_manual_grad(surrogate.Sigmoid.primitive_function, surrogate.Sigmoid.spiking_function, 4.0)
    assert err < 1e-6 and "max |manual - auto|" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    fig = surrogate.plot_surrogate_function(surrogate.S2NN(), tmp_path / "s2nn.png")
    assert (tmp_path / "s2nn.png").stat().st_size > 2000 and len(fig.axes[0].lines) == 3


# ----------------------------------------------------------------------------------- against SpikingJelly
def _sj():
    pytest.importorskip("spikingjelly.activation_based")
    from spikingjelly.activation_based import surrogate as sj_surrogate

    return sj_surrogate


SJ_CLASSES = {  # every public surrogate class of SpikingJelly 2.0, with non-default arguments
    "Sigmoid": (3.0,), "ATan": (1.5,), "PiecewiseQuadratic": (1.5,), "PiecewiseExp": (2.0,), "SoftSign": (3.0,),
    "SuperSpike": (1.5,), "Erf": (1.5,), "Rect": (1.5,), "PiecewiseLeakyReLU": (0.5, 0.05),
    "LeakyKReLU": (0.1, 2.0), "S2NN": (3.0, 0.5), "QPseudoSpike": (3.0,), "LogTailedReLU": (0.05,),
    "NonzeroSignLogAbs": (2.0,), "SquarewaveFourierSeries": (4, 6.0), "FakeNumericalGradient": (0.3,),
    "DeterministicPass": (), "PoissonPass": (), "MultiLevelSpikeCount": (3,),
}
SJ_NO_PRIMITIVE = {"SuperSpike", "FakeNumericalGradient"}  # SpikingJelly raises / has none


def test_every_sj_surrogate_class_is_here():
    sj_surrogate = _sj()
    import inspect

    names = {n for n, o in vars(sj_surrogate).items() if inspect.isclass(o) and not n.startswith("_")
             and getattr(o, "__module__", "") == sj_surrogate.__name__ and issubclass(o, torch.nn.Module)}
    assert names - {"SurrogateFunctionBase"} == set(SJ_CLASSES)
    functions = {n for n, o in vars(sj_surrogate).items() if not n.startswith("_") and callable(o)
                 and getattr(o, "__module__", "") == sj_surrogate.__name__} - names
    assert functions <= set(dir(surrogate)), functions - set(dir(surrogate))
    for name in SJ_CLASSES:
        assert (inspect.signature(getattr(surrogate, name)).parameters.keys()
                == inspect.signature(getattr(sj_surrogate, name)).parameters.keys()), name


@pytest.mark.parametrize("name", list(SJ_CLASSES))
def test_sj_surrogate_class_same_forward_and_gradient(name):
    sj_surrogate = _sj()
    args = SJ_CLASSES[name]
    ours, theirs = getattr(surrogate, name)(*args), getattr(sj_surrogate, name)(*args)
    x = torch.linspace(-2.9, 3.1, 241) * (1.0 if name != "PoissonPass" else 0.0) + (
        0.5 if name == "PoissonPass" else 0.0)
    torch.manual_seed(1)
    y1, g1 = _grad(ours, x)
    torch.manual_seed(1)
    y2, g2 = _grad(theirs, x)
    assert torch.equal(y1, y2)
    torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-7)
    if "backward" in vars(type(theirs)) and name not in ("DeterministicPass", "PoissonPass"):
        grad_out = torch.rand_like(x)
        params = list(theirs._sg_params.values())
        torch.testing.assert_close(type(ours).backward(grad_out, x, *params),
                                   type(theirs).backward(grad_out, x, *params), rtol=1e-6, atol=1e-7)
    if name in SJ_NO_PRIMITIVE:
        return
    ours.set_spiking_mode(False)
    theirs.set_spiking_mode(False)
    p1, pg1 = _grad(ours, x)
    p2, pg2 = _grad(theirs, x)
    torch.testing.assert_close(p1, p2, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(pg1, pg2, rtol=1e-6, atol=1e-7)


def test_sj_lowercase_functions_same_gradient():
    sj_surrogate = _sj()
    for name, args in [("sigmoid", (4.0,)), ("atan", (2.0,)), ("piecewise_quadratic", (1.0,)),
                       ("piecewise_exp", (1.0,)), ("soft_sign", (2.0,)), ("super_spike", (1.0,)),
                       ("erf", (2.0,)), ("rect", (1.0,)), ("piecewise_leaky_relu", (1.0, 0.01)),
                       ("leaky_k_relu", (0.1, 2.0)), ("s2nn", (4.0, 1.0)), ("q_pseudo_spike", (2.5,)),
                       ("log_tailed_relu", (0.1,)), ("nonzero_sign_log_abs", (1.0,)),
                       ("squarewave_fourier_series", (3, 8.0)), ("fake_numerical_gradient", (0.3,)),
                       ("deterministic_pass", ())]:
        x = torch.linspace(-2.9, 3.1, 241)
        y1, g1 = _grad(getattr(surrogate, name).apply, x, *args) if args else _grad(getattr(surrogate, name).apply, x)
        y2, g2 = _grad(getattr(sj_surrogate, name).apply, x, *args) if args else _grad(
            getattr(sj_surrogate, name).apply, x)
        assert torch.equal(y1, y2), name
        torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-7, msg=name)
        if hasattr(sj_surrogate, f"{name}_backward"):
            gr = torch.rand_like(x)
            b1 = getattr(surrogate, f"{name}_backward")(gr, x, *args)
            b2 = getattr(sj_surrogate, f"{name}_backward")(gr, x, *args)
            assert len(b1) == len(b2)
            torch.testing.assert_close(b1[0], b2[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["LeakyKReLU", "S2NN", "QPseudoSpike", "LogTailedReLU", "NonzeroSignLogAbs",
                                  "SquarewaveFourierSeries", "DeterministicPass", "FakeNumericalGradient"])
@pytest.mark.parametrize("cls", ["LIFNode", "IFNode"])
def test_sj_neuron_with_a_custom_surrogate_same_spikes_and_input_gradient(name, cls):
    sj_surrogate = _sj()
    from spikingjelly.activation_based import neuron as sj_neuron

    args = SJ_CLASSES[name]
    results = []
    for lib_neuron, lib_surrogate in ((neuron, surrogate), (sj_neuron, sj_surrogate)):
        torch.manual_seed(3)
        x = (torch.rand(8, 2, 6) * 2.5 - 0.2).requires_grad_(True)
        node = getattr(lib_neuron, cls)(surrogate_function=getattr(lib_surrogate, name)(*args), step_mode="m",
                                        detach_reset=False)
        s = node(x)
        (s * torch.linspace(0.3, 1.7, 6)).sum().backward()
        results.append((s.detach(), x.grad, node.v.detach()))
    (s1, g1, v1), (s2, g2, v2) = results
    assert torch.equal(s1, s2) and s1.sum() > 0
    torch.testing.assert_close(v1, v2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)


def test_sj_style_user_subclass_same_in_both_libraries():
    sj_surrogate = _sj()
    from spikingjelly.activation_based import neuron as sj_neuron

    def make(base, atan):
        class Mine(base):
            def __init__(self, alpha=2.0, spiking=True):
                super().__init__(spiking=spiking, alpha=alpha)

            @staticmethod
            def spiking_function(x, alpha):
                return atan.apply(x, alpha * 0.75)

            @staticmethod
            def primitive_function(x, alpha):
                return torch.atan(math.pi / 2 * alpha * 0.75 * x) / math.pi + 0.5

        return Mine

    results = []
    for lib_neuron, lib_surrogate in ((neuron, surrogate), (sj_neuron, sj_surrogate)):
        Mine = make(lib_surrogate.SurrogateFunctionBase, lib_surrogate.atan)
        torch.manual_seed(4)
        x = (torch.rand(6, 3, 4) * 1.4).requires_grad_(True)
        node = lib_neuron.LIFNode(3.0, False, 1.0, None, Mine(2.0), step_mode="m")
        s = node(x)
        (s * torch.arange(1.0, 5.0)).sum().backward()
        results.append((s.detach(), x.grad))
    assert torch.equal(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-6)
