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
