"""SpikingJelly 2.0 tutorial-style cases for layers and learning, run in both libraries in one process.

Each case builds the same network in SpikingJelly and in spikeforge (spikeforge's copy gets SpikingJelly's initial
weights), feeds both the same data and prints the largest absolute difference of outputs / weights. Cases:

* stdp_gd: the STDP tutorial — Conv2d/Linear synapses learned by STDP (``on_grad=True``) and the rest by gradient
  descent, two optimisers, reset per batch, multi-step;
* recurrent: the recurrent-connection tutorial — ``LinearRecurrentContainer`` and ``ElementWiseRecurrentContainer``
  around IF neurons, trained a few steps;
* stateful_synapse: the stateful-synapse tutorial — ``SynapseFilter(tau=2, learnable=True)`` after IF neurons.

Run (needs the peer venv with spikingjelly==2.0.0):
    PYTHONPATH=. /work/peer-venv/bin/python bench/sj_compat_b.py
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _libs():
    from spikingjelly.activation_based import functional as sj_f
    from spikingjelly.activation_based import layer as sj_layer
    from spikingjelly.activation_based import learning as sj_learning
    from spikingjelly.activation_based import neuron as sj_neuron
    from spikingjelly.activation_based import surrogate as sj_surrogate

    import spikeforge as sf
    import spikeforge.learning  # noqa: F401 - a sub-package imported on demand

    sj = dict(layer=sj_layer, neuron=sj_neuron, functional=sj_f, learning=sj_learning, surrogate=sj_surrogate)
    ours = dict(layer=sf.layer, neuron=sf.neuron, functional=sf.functional, learning=sf.learning,
                surrogate=sf.surrogate)
    return sj, ours


def _max_diff(a: nn.Module, b: nn.Module) -> float:
    return max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters(), strict=True))


def stdp_gd(lib, state=None, iters=4):
    layer, neuron, functional, learning = lib["layer"], lib["neuron"], lib["functional"], lib["learning"]
    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Conv2d(1, 4, 3, padding=1, bias=False), neuron.IFNode(), layer.MaxPool2d(2, 2),
        layer.Conv2d(4, 4, 3, padding=1, bias=False), neuron.IFNode(), layer.MaxPool2d(2, 2),
        layer.Flatten(), layer.Linear(4 * 2 * 2, 10, bias=False), neuron.IFNode(),
    )
    functional.set_step_mode(net, "m")
    if state is not None:
        net.load_state_dict(state)
    stdp_types = (layer.Conv2d,)
    learners, stdp_params = [], []
    for i, m in enumerate(net):
        if isinstance(m, stdp_types):
            learners.append(learning.STDPLearner("m", m, net[i + 1], 2.0, 2.0, lambda w: w.clamp(-1, 1),
                                                 lambda w: w.clamp(-1, 1)))
            stdp_params.append(m.weight)
    gd_params = [p for p in net.parameters() if all(p is not q for q in stdp_params)]
    opt_gd = torch.optim.Adam(gd_params, lr=0.01)
    opt_stdp = torch.optim.SGD(stdp_params, lr=0.01, momentum=0.0)
    g = torch.Generator().manual_seed(1)
    for _ in range(iters):
        x = (torch.rand(4, 8, 1, 8, 8, generator=g) > 0.6).float()
        y = torch.randint(0, 10, (8,), generator=g)
        opt_gd.zero_grad()
        opt_stdp.zero_grad()
        loss = F.cross_entropy(net(x).mean(0), y)
        loss.backward()
        opt_stdp.zero_grad()
        for learner in learners:
            learner.step(on_grad=True)
        opt_gd.step()
        opt_stdp.step()
        functional.reset_net(net)
        for learner in learners:
            learner.reset()
    return net


def recurrent(lib, state=None, iters=3):
    layer, neuron, functional = lib["layer"], lib["neuron"], lib["functional"]
    sg = lib["surrogate"]
    torch.manual_seed(2)
    net = nn.Sequential(
        layer.Linear(6, 8),
        layer.LinearRecurrentContainer(neuron.IFNode(surrogate_function=sg.ATan(), detach_reset=True), 8, 8),
        layer.Linear(8, 8),
        layer.ElementWiseRecurrentContainer(neuron.IFNode(surrogate_function=sg.ATan(), detach_reset=True),
                                            lambda y, x: x + y),
        layer.Linear(8, 3),
    )
    functional.set_step_mode(net, "m")
    if state is not None:
        net.load_state_dict(state)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(3)
    out = None
    for _ in range(iters):
        x = torch.rand(5, 4, 6, generator=g)
        y = torch.randint(0, 3, (4,), generator=g)
        opt.zero_grad()
        out = net(x)
        F.cross_entropy(out.mean(0), y).backward()
        opt.step()
        functional.reset_net(net)
    return net


def stateful_synapse(lib, state=None, iters=3):
    layer, neuron, functional = lib["layer"], lib["neuron"], lib["functional"]
    sg = lib["surrogate"]
    torch.manual_seed(4)
    net = nn.Sequential(
        layer.Linear(6, 8), neuron.IFNode(surrogate_function=sg.ATan(), detach_reset=True),
        layer.SynapseFilter(tau=2.0, learnable=True), layer.Linear(8, 3),
    )
    functional.set_step_mode(net, "m")
    if state is not None:
        net.load_state_dict(state)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(5)
    for _ in range(iters):
        x = torch.rand(6, 4, 6, generator=g) * 2
        y = torch.randint(0, 3, (4,), generator=g)
        opt.zero_grad()
        F.cross_entropy(net(x).mean(0), y).backward()
        opt.step()
        functional.reset_net(net)
    return net


def main() -> None:
    sj, ours = _libs()
    for case in (stdp_gd, recurrent, stateful_synapse):
        torch.manual_seed(123)
        init = case(sj, iters=0).state_dict()  # SpikingJelly's initial weights, given to both
        a = case(sj, state=init)
        b = case(ours, state=init)
        moved = max((pa - init[n]).abs().max().item() for n, pa in a.named_parameters())
        print(f"{case.__name__:18s} max |W_sj - W_sf| after training = {_max_diff(a, b):.3e} "
              f"(weights moved by up to {moved:.3e})")


if __name__ == "__main__":
    main()
