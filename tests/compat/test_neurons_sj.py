"""spikeforge's neurons against SpikingJelly 2.0 in the same process: spikes (or outputs), membranes, state and
input (and parameter) gradients, in single- and multi-step mode, with the constructors called positionally as
SpikingJelly code calls them. Skipped where SpikingJelly is not installed (CI); the hand-computed traces in
tests/neuron/test_extra_neurons.py and tests/neuron/test_custom.py cover the same neurons there.
"""

from __future__ import annotations

import logging

import pytest
import torch

sj = pytest.importorskip("spikingjelly.activation_based")
from spikingjelly.activation_based import functional as sj_functional  # noqa: E402
from spikingjelly.activation_based import neuron as sj_neuron  # noqa: E402
from spikingjelly.activation_based import surrogate as sj_surrogate  # noqa: E402

from spikeforge import functional, neuron, surrogate  # noqa: E402

logging.getLogger("spikeforge").setLevel(logging.WARNING)

T, SHAPE = 6, (3, 4)
SG = "surrogate placeholder"


def _pair(name, *args, sg=None, **kwargs):
    """The same constructor call in both libraries; ``sg`` names a surrogate class present in both, passed in
    place of the ``SG`` placeholder of ``args`` (positionally) or as ``surrogate_function=``."""
    ours_kw, theirs_kw = dict(kwargs), dict(kwargs)
    cls, alpha = sg if sg is not None else ("Sigmoid", 4.0)
    ours_sg, theirs_sg = getattr(surrogate, cls)(alpha), getattr(sj_surrogate, cls)(alpha)
    ours_args = [ours_sg if a == SG else a for a in args]
    theirs_args = [theirs_sg if a == SG else a for a in args]
    if sg is not None and SG not in args:
        ours_kw["surrogate_function"], theirs_kw["surrogate_function"] = ours_sg, theirs_sg
    ours = getattr(neuron, name)(*ours_args, **ours_kw)
    theirs = getattr(sj_neuron, name)(*theirs_args, **theirs_kw)
    if list(theirs.state_dict()):
        ours.load_state_dict(theirs.state_dict())
    return ours, theirs


# name, positional args (SpikingJelly's order), keyword args, input scale, states compared after the run
CASES = {
    "IFNode-positional-store_v_seq": ("IFNode", (1.0, 0.0, SG, False, "m", True), {"sg": ("ATan", 2.0)}, 1.0,
                                      ["v"]),
    "IFNode-soft": ("IFNode", (0.8, None), {"sg": ("ATan", 2.0)}, 1.0, ["v"]),
    "LIFNode-positional": ("LIFNode", (3.0, False, 1.0, -0.1, SG, True, "m", True), {}, 1.0, ["v"]),
    "ParametricLIFNode-positional": ("ParametricLIFNode", (3.0, True, 0.7, None), {"sg": ("ATan", 2.0)}, 1.0,
                                     ["v"]),
    "SimpleIFNode": ("SimpleIFNode", (1.0, 0.0), {}, 1.0, ["v"]),
    "SimpleLIFNode": ("SimpleLIFNode", (2.0, True, 1.0, 0.0), {"sg": ("ATan", 2.0)}, 1.5, ["v"]),
    "SimpleLIFNode-no-decay-input": ("SimpleLIFNode", (3.0, False, 0.5, -0.2), {}, 0.6, ["v"]),
    "HalfThresholdIFNode": ("HalfThresholdIFNode", (0.9,), {"sg": ("ATan", 2.0)}, 1.0, ["v"]),
    "QIFNode": ("QIFNode", (2.0, 0.8, 1.0, 1.0, 0.0, -0.1), {}, 0.8, ["v"]),
    "QIFNode-soft": ("QIFNode", (3.0, 0.5, 0.7, 1.0, 0.0, None), {"sg": ("ATan", 2.0)}, 0.8, ["v"]),
    "EIFNode": ("EIFNode", (2.0, 1.0, 0.8, 1.0, 0.0, -0.1), {}, 0.8, ["v"]),
    "EIFNode-soft": ("EIFNode", (4.0, 0.5, 0.6, 1.0, 0.1, None), {"sg": ("ATan", 2.0)}, 1.2, ["v"]),
    "IzhikevichNode": ("IzhikevichNode", (2.0, 0.8, 1.0, 1.0, 0.0, -0.1, 0.0, 3.0, 0.3, 0.2), {}, 1.0, ["v", "w"]),
    "IzhikevichNode-detach": ("IzhikevichNode", (3.0, 0.6, 0.5, 1.0, None, 0.0, 0.1, 2.0, 0.5, 0.4),
                              {"sg": ("ATan", 2.0), "detach_reset": True}, 1.0, ["v", "w"]),
    "CUBALIFNode": ("CUBALIFNode", (0.5, 0.75, 0.5, 0.0), {}, 0.6, ["v", "c"]),
    "CUBALIFNode-soft": ("CUBALIFNode", (0.3, 0.9, 0.7, None), {"sg": ("ATan", 2.0)}, 0.6, ["v", "c"]),
    "KLIFNode": ("KLIFNode", (False, 2.0, True, 1.0, 0.0), {}, 1.5, ["v"]),
    "KLIFNode-scale-soft": ("KLIFNode", (True, 3.0, False, 0.8, None), {"sg": ("ATan", 2.0)}, 1.0, ["v"]),
    "ComplementaryLIFNode": ("ComplementaryLIFNode", (2.0, 1.0), {}, 1.5, ["v", "m"]),
    "ComplementaryLIFNode-atan": ("ComplementaryLIFNode", (3.0, 0.7), {"sg": ("ATan", 2.0)}, 1.0, ["v", "m"]),
    "RAFNode": ("RAFNode", (-0.2, 1.0, 1.0, 1.0, 0.0), {}, 1.5, ["v", "u"]),
    "RAFNode-soft": ("RAFNode", (-0.5, 2.0, 0.5, 0.6, None), {"sg": ("ATan", 2.0)}, 1.5, ["v", "u"]),
    "TernaryIFNode": ("TernaryIFNode", (0.7, 0.0), {}, 1.0, ["v"]),
    "ILIFNode": ("ILIFNode", (4.0 / 3.0, 1.0), {}, 3.0, ["v"]),
    "ILIFNode-2-detach": ("ILIFNode", (2.0, 0.5), {"sg": ("MultiLevelSpikeCount", 2), "detach_reset": True}, 1.0,
                          ["v"]),
    "TernaryLIFNode-soft": ("TernaryLIFNode", (2.0, True, 0.5, None), {"sg": ("ATan", 2.0)}, 1.5, ["v"]),
}


def _run(node, x, mode):
    if mode == "m":
        functional.set_step_mode(node, "m") if node.__module__.startswith("spikeforge") else \
            sj_functional.set_step_mode(node, "m")
        return node(x)
    return torch.stack([node(x_t) for x_t in x])


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_neuron_matches_spikingjelly(case, mode):
    name, args, kwargs, scale, states = CASES[case]
    torch.manual_seed(0)
    ours, theirs = _pair(name, *args, **kwargs)
    x = (torch.rand(T, *SHAPE) * 2 * scale - 0.5 * scale).double()
    ours.double(), theirs.double()
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_theirs = _run(ours, x_ours, mode), _run(theirs, x_theirs, mode)
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-10, atol=1e-12)
    assert y_theirs.abs().sum() > 0, "the case should make the neuron fire"
    for state in states:
        torch.testing.assert_close(getattr(ours, state), getattr(theirs, state), rtol=1e-10, atol=1e-12)
    if getattr(theirs, "store_v_seq", False) and mode == "m":
        torch.testing.assert_close(ours.v_seq, theirs.v_seq, rtol=1e-10, atol=1e-12)
    weight = torch.linspace(-1.0, 2.0, y_ours.numel(), dtype=torch.float64).view_as(y_ours)
    loss_ours = (y_ours * weight).sum() + sum(getattr(ours, s).square().sum() for s in states)
    loss_theirs = (y_theirs * weight).sum() + sum(getattr(theirs, s).square().sum() for s in states)
    loss_ours.backward()
    loss_theirs.backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-9, atol=1e-12)
    assert x_theirs.grad.abs().sum() > 0
    params_theirs = dict(theirs.named_parameters())
    for pname, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, params_theirs[pname].grad, rtol=1e-9, atol=1e-12)


def _grads_match(y_ours, y_theirs, x_ours, x_theirs, ours=None, theirs=None):
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-10, atol=1e-12)
    weight = torch.linspace(-1.0, 2.0, y_ours.numel(), dtype=y_ours.dtype).view_as(y_ours)
    (y_ours * weight).sum().backward()
    (y_theirs * weight).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-9, atol=1e-12)
    assert x_theirs.grad.abs().sum() > 0
    if ours is not None:
        params_theirs = dict(theirs.named_parameters())
        for pname, p in ours.named_parameters():
            torch.testing.assert_close(p.grad, params_theirs[pname].grad, rtol=1e-9, atol=1e-12)


def _inputs(*shape, scale=1.0, seed=0):
    torch.manual_seed(seed)
    x = (torch.rand(*shape, dtype=torch.float64) * 2 - 0.5) * scale
    return x.clone().requires_grad_(), x.clone().requires_grad_()


@pytest.mark.parametrize("decode", [None, "max-mem", "max-abs-mem", "mean-mem", "last_mem"])
@pytest.mark.parametrize("name,args", [("NonSpikingIFNode", ()), ("NonSpikingLIFNode", (3.0,))])
def test_non_spiking_readouts_match(name, args, decode):
    ours, theirs = getattr(neuron, name)(*args, decode), getattr(sj_neuron, name)(*args, decode)
    x_ours, x_theirs = _inputs(T, *SHAPE)
    y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
    if decode is None:  # SpikingJelly returns the list of the T membranes
        assert isinstance(y_ours, list) and len(y_ours) == T
        y_ours, y_theirs = torch.stack(y_ours), torch.stack(y_theirs)
    _grads_match(y_ours, y_theirs, x_ours, x_theirs)


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("case", ["PSN", "MaskedPSN", "MaskedPSN-annealing", "SlidingPSN", "SlidingPSN-kaiming"])
def test_parallel_spiking_neurons_match(case, mode):
    torch.manual_seed(1)
    if case.startswith("MaskedPSN"):
        lam = 0.4 if case.endswith("annealing") else 1.0
        if mode == "s" and lam < 1:
            pytest.skip("single-step MaskedPSN needs lambda_ >= 1 (both libraries refuse it)")
        ours = neuron.MaskedPSN(2, T, lam, surrogate.ATan())
        theirs = sj_neuron.MaskedPSN(2, T, lam, sj_surrogate.ATan())
    elif case.startswith("SlidingPSN"):
        exp_init = not case.endswith("kaiming")
        ours, theirs = neuron.SlidingPSN(3, exp_init), sj_neuron.SlidingPSN(3, exp_init)
    else:
        if mode == "s":
            pytest.skip("PSN is multi-step only")
        ours, theirs = neuron.PSN(T), sj_neuron.PSN(T)
    ours.load_state_dict(theirs.state_dict())
    ours.double(), theirs.double()
    x_ours, x_theirs = _inputs(T, *SHAPE, scale=3.0)
    y_ours, y_theirs = _run(ours, x_ours, mode), _run(theirs, x_theirs, mode)
    assert y_theirs.sum() > 0
    _grads_match(y_ours, y_theirs, x_ours, x_theirs, ours, theirs)


@pytest.mark.parametrize("inplane", [None, 3])
def test_gated_lif_matches(inplane):
    torch.manual_seed(2)
    theirs = sj_neuron.GatedLIFNode(T, inplane, None, None, 0.25, 0.5, 0.5, sj_surrogate.ATan())
    ours = neuron.GatedLIFNode(T, inplane, None, None, 0.25, 0.5, 0.5, surrogate.ATan())
    ours.load_state_dict(theirs.state_dict())
    ours.double(), theirs.double()
    x_ours, x_theirs = _inputs(T, 2, 3, 2, 2, scale=2.0)
    y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
    assert y_theirs.sum() > 0
    torch.testing.assert_close(ours.v, theirs.v, rtol=1e-10, atol=1e-12)
    _grads_match(y_ours, y_theirs, x_ours, x_theirs, ours, theirs)


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("threshold_related", [True, False])
def test_liaf_matches(threshold_related, mode):
    """Compared with SpikingJelly's single-step LIAF in both modes: SpikingJelly 2.0's multi-step LIAFNode falls
    back to LIFNode's fused multi-step and returns spikes, not the analog output (a bug there); ours returns the
    analog output in both modes."""
    ours = neuron.LIAFNode(torch.nn.Tanh(), threshold_related, 3.0, True, 0.8, 0.0, surrogate.ATan(), step_mode=mode)
    theirs = sj_neuron.LIAFNode(torch.nn.Tanh(), threshold_related, 3.0, True, 0.8, 0.0, sj_surrogate.ATan())
    x_ours, x_theirs = _inputs(T, *SHAPE, scale=2.0)
    y_ours, y_theirs = ours(x_ours) if mode == "m" else _run(ours, x_ours, "s"), _run(theirs, x_theirs, "s")
    assert ((y_theirs != 0) & (y_theirs != 1)).any(), "the output is analog"
    torch.testing.assert_close(ours.v, theirs.v, rtol=1e-10, atol=1e-12)
    _grads_match(y_ours, y_theirs, x_ours, x_theirs)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", ["OTTTLIFNode", "SLTTLIFNode"])
def test_online_lif_matches(name, training):
    ours, theirs = getattr(neuron, name)(), getattr(sj_neuron, name)()
    ours.train(training), theirs.train(training)
    x_ours, x_theirs = _inputs(T, *SHAPE, scale=2.0)
    outs_ours = [ours(x) for x in x_ours.double()]
    outs_theirs = [theirs(x) for x in x_theirs.double()]
    if name == "OTTTLIFNode" and training:  # [spike, trace] per step
        for ours_step, theirs_step in zip(outs_ours, outs_theirs, strict=True):
            torch.testing.assert_close(ours_step[1], theirs_step[1], rtol=1e-10, atol=1e-12)
        outs_ours, outs_theirs = [o[0] for o in outs_ours], [o[0] for o in outs_theirs]
    y_ours, y_theirs = torch.stack(outs_ours), torch.stack(outs_theirs)
    torch.testing.assert_close(ours.v, theirs.v, rtol=1e-10, atol=1e-12)
    if training:
        _grads_match(y_ours, y_theirs, x_ours, x_theirs)
    else:
        torch.testing.assert_close(y_ours, y_theirs)


# ------------------------------------------------------------------------------------------- custom neurons
def _square_charge(self, x):
    self.v = self.v + x.square() - 0.1 * self.v


@pytest.mark.parametrize("mode", ["s", "m"])
def test_custom_simple_base_node_subclass_matches(mode):
    """SpikingJelly 2.0's documented way: subclass SimpleBaseNode and override neuronal_charge."""
    Ours = type("OursSquare", (neuron.SimpleBaseNode,), {"neuronal_charge": _square_charge})
    Theirs = type("TheirsSquare", (sj_neuron.SimpleBaseNode,), {"neuronal_charge": _square_charge})
    ours, theirs = Ours(0.9, None, surrogate.ATan(), True), Theirs(0.9, None, sj_surrogate.ATan(), True)
    x_ours, x_theirs = _inputs(T, *SHAPE, scale=1.5)
    y_ours, y_theirs = _run(ours, x_ours, mode), _run(theirs, x_theirs, mode)
    assert y_theirs.sum() > 0
    torch.testing.assert_close(ours.v, theirs.v, rtol=1e-10, atol=1e-12)
    _grads_match(y_ours, y_theirs, x_ours, x_theirs)


@pytest.mark.parametrize("mode", ["s", "m"])
def test_base_node_subclass_equals_spikingjelly_simple_node(mode):
    """Our BaseNode subclassed the SpikingJelly 0.0.0.0.14 way (override neuronal_charge) computes what
    SpikingJelly 2.0's SimpleBaseNode subclass computes (2.0's BaseNode itself no longer calls neuronal_charge);
    the membrane starts at v_reset in BaseNode, at 0 in SimpleBaseNode, so v_reset = 0 here."""
    Ours = type("OursSquareBase", (neuron.BaseNode,), {"neuronal_charge": _square_charge})
    Theirs = type("TheirsSquare", (sj_neuron.SimpleBaseNode,), {"neuronal_charge": _square_charge})
    ours, theirs = Ours(1.0, 0.0, surrogate.Sigmoid(), False), Theirs(1.0, 0.0, sj_surrogate.Sigmoid(), False)
    x_ours, x_theirs = _inputs(T, *SHAPE, scale=1.5)
    y_ours, y_theirs = _run(ours, x_ours, mode), _run(theirs, x_theirs, mode)
    assert y_theirs.sum() > 0
    _grads_match(y_ours, y_theirs, x_ours, x_theirs)


@pytest.mark.parametrize("name", ["IFNode", "LIFNode", "ParametricLIFNode", "QIFNode", "EIFNode", "IzhikevichNode",
                                  "KLIFNode", "HalfThresholdIFNode", "OTTTLIFNode", "SLTTLIFNode", "RAFNode",
                                  "TernaryIFNode", "TernaryLIFNode", "CUBALIFNode", "SimpleIFNode", "SimpleLIFNode",
                                  "ComplementaryLIFNode", "MaskedPSN", "SlidingPSN", "PSN", "GatedLIFNode",
                                  "NonSpikingIFNode", "NonSpikingLIFNode", "DSRIFNode", "DSRLIFNode", "ILCBaseNode",
                                  "ILCIFNode", "ILCLIFNode", "ILCCUBALIFNode", "ActivationAwareIFNode", "AdaptBaseNode",
                                  "NonSpikingBaseNode", "SimpleBaseNode", "STBIFNode", "ILIFNode", "NoisyBaseNode",
                                  "NoisyCUBALIFNode", "NoisyILCBaseNode", "NoisyILCCUBALIFNode",
                                  "NoisyNonSpikingBaseNode", "NoisyNonSpikingIFNode", "FewSpikeNode",
                                  "OutlierAwareThresholdNode", "HGNode", "FlexSN", "MPBNBaseNode", "MPBNLIFNode"])
def test_signature_matches_spikingjelly(name):
    """Every parameter of SpikingJelly's constructor exists here, in the same positional order with the same
    default (surrogates compared by class and alpha); spikeforge-only parameters are keyword-only."""
    import inspect

    ours = inspect.signature(getattr(neuron, name).__init__).parameters
    theirs = inspect.signature(getattr(sj_neuron, name).__init__).parameters
    positional = [p for p in ours.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert [p.name for p in positional] == list(theirs), name
    for p in positional:
        default = theirs[p.name].default
        if isinstance(default, sj_surrogate.SurrogateFunctionBase):
            # None means "the default surrogate" here; check which one the module ends up with
            continue
        assert p.default == default, (name, p.name, p.default, default)
    for p in ours.values():
        if p.name not in theirs and p.name != "self":
            assert p.kind is p.KEYWORD_ONLY, (name, p.name)


REQUIRED_ARGS = {"MaskedPSN": (2, 4), "SlidingPSN": (2,), "PSN": (4,), "GatedLIFNode": (4,),
                 "SimpleLIFNode": (2.0, True)}


@pytest.mark.parametrize("name", ["IFNode", "LIFNode", "ParametricLIFNode", "QIFNode", "EIFNode", "IzhikevichNode",
                                  "KLIFNode", "HalfThresholdIFNode", "OTTTLIFNode", "SLTTLIFNode", "RAFNode",
                                  "TernaryIFNode", "CUBALIFNode", "SimpleIFNode", "SimpleLIFNode",
                                  "ComplementaryLIFNode", "MaskedPSN", "SlidingPSN", "PSN", "GatedLIFNode"])
def test_default_surrogate_and_state_match_spikingjelly(name):
    args = REQUIRED_ARGS.get(name, ())
    ours, theirs = getattr(neuron, name)(*args), getattr(sj_neuron, name)(*args)
    assert type(ours.surrogate_function).__name__ == type(theirs.surrogate_function).__name__
    assert ours.surrogate_function.alpha == theirs.surrogate_function.alpha
    for attr in ("v", "w", "c", "u", "m", "step_mode", "tau", "v_threshold", "v_reset", "detach_reset",
                 "decay_input", "store_v_seq"):
        if hasattr(theirs, attr) and not isinstance(getattr(theirs, attr), torch.Tensor):
            assert getattr(ours, attr) == getattr(theirs, attr), (name, attr)


# ----------------------------------------------------------------------------------------- research neurons
@pytest.mark.parametrize("train_vth", [True, False])
@pytest.mark.parametrize("name,args", [("DSRIFNode", (T, 1.5, 0.5)), ("DSRLIFNode", (T, 0.12, 2.0, 0.05, 0.3))])
def test_dsr_neurons_match(name, args, train_vth):
    """float32 (SpikingJelly's DSR forward always emits float32 spikes)."""
    ours, theirs = getattr(neuron, name)(*args, train_vth), getattr(sj_neuron, name)(*args, train_vth)
    torch.manual_seed(4)
    x = torch.rand(T, *SHAPE) * 2 - 0.5
    if name == "DSRIFNode":  # rates below 0, inside [0, V_th] and above V_th
        x[:, 0] += 2.0
        x[:, 1] -= 1.0
    else:  # weighted rates on both sides of V_th·tau/dt = 4.8
        x = x * 6.0
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
    assert y_theirs.abs().sum() > 0
    torch.testing.assert_close(y_ours, y_theirs)
    weight = torch.linspace(-1.0, 2.0, y_ours.numel()).view_as(y_ours)
    (y_ours * weight).sum().backward()
    (y_theirs * weight).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad)
    assert x_theirs.grad.abs().sum() > 0
    if train_vth:
        assert theirs.v_threshold.grad != 0
        torch.testing.assert_close(ours.v_threshold.grad, theirs.v_threshold.grad)


@pytest.mark.parametrize("name,args", [("ILCIFNode", (2, 3)), ("ILCLIFNode", (2, 3, 0.6, 0.8)),
                                       ("ILCCUBALIFNode", (2, 3, 0.5, 0.75, 0.5))])
def test_ilc_neurons_match(name, args):
    torch.manual_seed(3)
    ours, theirs = getattr(neuron, name)(*args), getattr(sj_neuron, name)(*args)
    ours.load_state_dict(theirs.state_dict())
    ours.double(), theirs.double()
    x_ours, x_theirs = _inputs(T, 4, 6, scale=1.5)
    y_ours = ours(x_ours)
    y_theirs = theirs(x_theirs.clone())  # SpikingJelly adds the recurrent term into its input in place
    assert y_theirs.sum() > 0
    _grads_match(y_ours, y_theirs, x_ours, x_theirs, ours, theirs)


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_activation_aware_if_matches(per_channel, mode):
    vth = torch.tensor([0.5, 1.0, 1.5, 0.8]) if per_channel else 0.9
    off = torch.tensor([0.1, -0.2, 0.0, 0.3]) if per_channel else 0.1
    ours = neuron.ActivationAwareIFNode(vth, off, -1, None, surrogate.ATan(), False, "s", True)
    theirs = sj_neuron.ActivationAwareIFNode(vth, off, -1, None, sj_surrogate.ATan(), False, "s", True)
    ours.double(), theirs.double()
    x_ours, x_theirs = _inputs(T, *SHAPE)
    y_ours, y_theirs = _run(ours, x_ours, mode), _run(theirs, x_theirs, mode)
    assert y_theirs.sum() > 0
    torch.testing.assert_close(ours.v, theirs.v, rtol=1e-10, atol=1e-12)
    if mode == "m":
        torch.testing.assert_close(ours.v_seq, theirs.v_seq, rtol=1e-10, atol=1e-12)
    _grads_match(y_ours, y_theirs, x_ours, x_theirs)


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("sym", [False, True])
def test_stbif_matches(sym, mode):
    ours, theirs = neuron.STBIFNode(0.25, 8, sym), sj_neuron.STBIFNode(0.25, 8, sym)
    torch.manual_seed(5)
    x = torch.randn(T, *SHAPE)
    y_ours, y_theirs = _run(ours, x, mode), _run(theirs, x, mode)
    assert y_theirs.abs().sum() > 0
    torch.testing.assert_close(y_ours, y_theirs)
    for state in ("q", "acc_q", "cur_output"):
        torch.testing.assert_close(getattr(ours, state), getattr(theirs, state))
    torch.testing.assert_close(ours.accumulated, theirs.accumulated)


# ----------------------------------------------------------------------------------------------- noisy RL
def test_powerlaw_noise_matches_with_the_same_generator():
    import numpy as np

    for beta, size in ((0.0, [3, 16]), (1.0, [2, 4, 15]), (2.0, 10)):
        ours = neuron.powerlaw_psd_gaussian(beta, size, random_state=np.random.default_rng(7))
        theirs = sj_neuron.powerlaw_psd_gaussian(beta, size, random_state=np.random.default_rng(7))
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


NOISY = {
    "NoisyCUBALIFNode": ((6, 0.5, 0.75, True, 4, 0.5, 1.0, 0.3, 0.0), 6),
    "NoisyILCCUBALIFNode": ((2, 3, 0.5, 0.75, True, 4, 0.5, 1.0, 0.4, 0.0), 6),
    "NoisyNonSpikingIFNode": ((6, True, 4, 0.5, 1.0, "max-abs-mem"), 6),
}


@pytest.mark.parametrize("loaded", [False, True])
@pytest.mark.parametrize("name", sorted(NOISY))
def test_noisy_neurons_match(name, loaded):
    args, n = NOISY[name]
    torch.manual_seed(6)
    ours, theirs = getattr(neuron, name)(*args), getattr(sj_neuron, name)(*args)
    if list(theirs.state_dict()):
        ours.load_state_dict(theirs.state_dict())
    theirs.reset_noise(3)
    ours.reset_noise(3)
    for attr in ("eps_v_seq", "eps_s_seq", "eps_seq"):  # the same drawn noise in both
        if hasattr(theirs, attr):
            setattr(ours, attr, getattr(theirs, attr).clone())
    x_ours, x_theirs = (t.float() for t in _inputs(4, 2, n, scale=1.5))
    x_ours, x_theirs = x_ours.detach().requires_grad_(), x_theirs.detach().requires_grad_()
    if loaded:
        cn = torch.randn(2, 4, 2 * n if "NonSpiking" not in name else n)
        ours.load_colored_noise(cn)
        theirs.load_colored_noise(cn)
    for _ in range(2):  # two rollout steps (each call consumes one unless the noise is loaded)
        y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
    torch.testing.assert_close(y_ours, y_theirs)
    if not loaded:
        torch.testing.assert_close(ours.get_colored_noise(), theirs.get_colored_noise())
    weight = torch.linspace(-1.0, 2.0, y_ours.numel()).view_as(y_ours)
    (y_ours * weight).sum().backward()
    (y_theirs * weight).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad)
    params_theirs = dict(theirs.named_parameters())
    for pname, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, params_theirs[pname].grad)


# ------------------------------------------------------------------------------------------------ few-spike
def _tables(lib, K=4, shift=0.0):
    theta = [1.0 + shift, 0.5, 0.25, 0.125]
    return lib.FewSpikeTable(theta[:K], [1.0, 0.5, 0.25, 0.125][:K], [1.2, 0.6, 0.3, 0.15][:K])


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("name", ["FewSpikeNode", "OutlierAwareThresholdNode", "HGNode"])
def test_few_spike_neurons_match(name, mode):
    def build(lib, sg):
        if name == "FewSpikeNode":
            return lib.FewSpikeNode(_tables(lib), sg, mode)
        if name == "OutlierAwareThresholdNode":
            return lib.OutlierAwareThresholdNode(_tables(lib), _tables(lib, shift=1.0), 1.2, 3.0, sg, mode)
        return lib.HGNode([_tables(lib), _tables(lib, shift=0.5), _tables(lib, shift=1.5)], [0.5, 1.5], sg, mode)

    ours, theirs = build(neuron, surrogate.ATan()), build(sj_neuron, sj_surrogate.ATan())
    ours.double(), theirs.double()
    shape = (4, *SHAPE) if mode == "m" else SHAPE
    x_ours, x_theirs = _inputs(*shape, scale=1.5 if mode == "s" else 0.6)
    if name == "OutlierAwareThresholdNode":
        with torch.no_grad():
            x_ours.mul_(2.0).sub_(1.0)
            x_theirs.copy_(x_ours)
    y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
    assert y_theirs.abs().sum() > 0
    _grads_match(y_ours, y_theirs, x_ours, x_theirs)


# --------------------------------------------------------------------------------------------------- FlexSN
def _flex_core(x, v, w, decay):
    """A leaky neuron with an adaptation state; smooth firing so every gradient term is exercised."""
    h = decay * v + x - w
    spike = torch.sigmoid(4.0 * (h - 1.0))
    return spike, h * (1.0 - spike), 0.8 * w + 0.2 * spike


@pytest.mark.parametrize("store", [False, True])
@pytest.mark.parametrize("mode", ["s", "m"])
def test_flexsn_matches(mode, store):
    decay_ours = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))
    decay_theirs = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))
    ours = neuron.FlexSN(_flex_core, 2, (decay_ours,), mode, store)
    theirs = sj_neuron.FlexSN(_flex_core, 2, (decay_theirs,), mode, store)
    x_ours, x_theirs = _inputs(T, *SHAPE, scale=2.0)
    y_ours = ours(x_ours) if mode == "m" else torch.stack([ours(x) for x in x_ours])
    y_theirs = theirs(x_theirs) if mode == "m" else torch.stack([theirs(x) for x in x_theirs])
    for s_ours, s_theirs in zip(ours.states, theirs.states, strict=True):
        torch.testing.assert_close(s_ours, s_theirs, rtol=1e-10, atol=1e-12)
    if store and mode == "m":
        for s_ours, s_theirs in zip(ours.state_seqs, theirs.state_seqs, strict=True):
            torch.testing.assert_close(s_ours, s_theirs, rtol=1e-10, atol=1e-12)
    _grads_match(y_ours, y_theirs, x_ours, x_theirs, ours, theirs)


# ----------------------------------------------------------------------------------------------------- MPBN
MPBN_CASES = {
    "features-train": (dict(out_features=4), "train", None),
    "channels-eval": (dict(out_channels=3), "eval", None),
    "learnable-vth": (dict(out_features=4, learnable_vth=True), "train", None),
    "folded-residual-running": (dict(out_channels=3), "train", dict(normalize_residual=True, running_stats=True)),
    "folded-batch-stats": (dict(out_features=4), "train", dict(normalize_residual=False, running_stats=False)),
    "no-mpbn": (dict(out_features=4, mpbn=False), "train", None),
}


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("case", sorted(MPBN_CASES))
def test_mpbn_lif_matches(case, mode):
    kwargs, phase, fold = MPBN_CASES[case]
    torch.manual_seed(8)
    ours = neuron.MPBNLIFNode(2.0, False, 0.8, 0.0, surrogate.ATan(), **kwargs)
    theirs = sj_neuron.MPBNLIFNode(2.0, False, 0.8, 0.0, sj_surrogate.ATan(), **kwargs)
    shape = (T, 5, 3, 2, 2) if "out_channels" in kwargs else (T, 5, 4)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters, the same in both
        for m in (ours, theirs):
            if not isinstance(m.vbn, torch.nn.Identity):
                m.vbn.running_mean.copy_(torch.linspace(-0.2, 0.3, m.vbn.num_features))
                m.vbn.running_var.copy_(torch.linspace(0.5, 1.5, m.vbn.num_features))
                m.vbn.weight.copy_(torch.linspace(0.8, 1.2, m.vbn.num_features))
                m.vbn.bias.copy_(torch.linspace(0.0, 0.2, m.vbn.num_features))
            if kwargs.get("learnable_vth"):
                m.a.copy_(torch.linspace(-0.3, 0.2, 4))
    if fold is not None:
        ours.re_parameterize_v_threshold(**fold)
        theirs.re_parameterize_v_threshold(**fold)
    ours.train(phase == "train"), theirs.train(phase == "train")
    ours.double(), theirs.double()
    x_ours, x_theirs = _inputs(*shape, scale=2.0)
    y_ours, y_theirs = _run(ours, x_ours, mode), _run(theirs, x_theirs, mode)
    assert y_theirs.sum() > 0
    torch.testing.assert_close(ours.v, theirs.v, rtol=1e-9, atol=1e-12)
    for name, buf in theirs.named_buffers():
        torch.testing.assert_close(dict(ours.named_buffers())[name], buf, rtol=1e-9, atol=1e-12)
    _grads_match(y_ours, y_theirs, x_ours, x_theirs, ours, theirs)
