"""SpikingJelly 2.0 tutorial-style cases for monitors, encoders, surrogates and functional, in both libraries.

Each case is written once against a library namespace and run with SpikingJelly's and with spikeforge's modules
(same seeds, same weights); the script prints the largest absolute difference of everything the case returns.

* monitor_tutorial: the monitor tutorial (OutputMonitor with and without a function, mon[0], mon['1'],
  disable/enable, AttributeMonitor('v_seq'), InputMonitor, GradOutputMonitor) and a firing-rate regulariser built
  from the records (its weight gradient);
* encoders: Poisson / Latency ('s' and 'm') / WeightedPhase / PopSpikeEncoderDeterministic on one input;
* custom_surrogate: LIF/IF neurons with SpikingJelly surrogates the fused kernels do not implement (LeakyKReLU,
  S2NN, QPseudoSpike) and with a user SurrogateFunctionBase subclass: spikes and input gradients;
* functional: if/lif/plif_multi_step called positionally, TET loss, delay, first_spike_index.

Run (needs the peer venv with spikingjelly==2.0.0):
    PYTHONPATH=. /work/peer-venv/bin/python bench/sj_compat_a.py
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn


def _libs():
    from spikingjelly.activation_based import encoding as sj_encoding
    from spikingjelly.activation_based import functional as sj_functional
    from spikingjelly.activation_based import layer as sj_layer
    from spikingjelly.activation_based import monitor as sj_monitor
    from spikingjelly.activation_based import neuron as sj_neuron
    from spikingjelly.activation_based import surrogate as sj_surrogate

    import spikeforge as sf

    names = ("encoding", "functional", "layer", "monitor", "neuron", "surrogate")
    sj = dict(zip(names, (sj_encoding, sj_functional, sj_layer, sj_monitor, sj_neuron, sj_surrogate)))
    return sj, {name: getattr(sf, name) for name in names}


def monitor_tutorial(lib):
    layer, neuron, functional, monitor = lib["layer"], lib["neuron"], lib["functional"], lib["monitor"]
    torch.manual_seed(0)
    net = nn.Sequential(layer.Linear(8, 4), neuron.IFNode(store_v_seq=True), layer.Linear(4, 2),
                        neuron.IFNode(store_v_seq=True))
    for p in net.parameters():
        p.data.abs_()
    functional.set_step_mode(net, "m")
    out = []
    spikes = monitor.OutputMonitor(net, neuron.IFNode)
    x_seq = torch.rand(4, 1, 8)
    with torch.no_grad():
        net(x_seq)
    out += [spikes[0], *spikes["1"]]
    spikes.clear_recorded_data()
    spikes.remove_hooks()
    functional.reset_net(net)
    rate = monitor.OutputMonitor(net, neuron.IFNode, lambda s: s.flatten(1).mean(1))
    rate.disable()
    net(x_seq)
    functional.reset_net(net)
    rate.enable()
    v_seq = monitor.AttributeMonitor("v_seq", pre_forward=False, net=net, instance=neuron.IFNode)
    inputs = monitor.InputMonitor(net, neuron.IFNode)
    grads = monitor.GradOutputMonitor(net, neuron.IFNode)
    net(x_seq).sum().backward()
    out += [*rate.records, *v_seq.records, *inputs.records, *grads.records]
    net.zero_grad()
    functional.reset_net(net)
    reg = monitor.OutputMonitor(net, neuron.IFNode)
    net(x_seq * 2)
    sum(r.mean() for r in reg.records).backward()
    out.append(net[0].weight.grad)
    return [t.detach() for t in out]


def encoders(lib):
    encoding = lib["encoding"]
    torch.manual_seed(1)
    x = torch.rand(3, 5) * 0.96
    out = []
    torch.manual_seed(2)
    out.append(torch.stack([encoding.PoissonEncoder()(x) for _ in range(4)]))
    lat = encoding.LatencyEncoder(6)
    out.append(torch.stack([lat(x) for _ in range(8)]))
    out.append(encoding.LatencyEncoder(6, "log", "m")(x.expand(9, 3, 5)))
    wp = encoding.WeightedPhaseEncoder(5)
    out.append(torch.stack([wp(x) for _ in range(5)]))
    torch.manual_seed(3)
    pop = encoding.PopSpikeEncoderDeterministic(5, 4, 6, (-1.0, 1.0), 0.3)
    obs = (x * 2 - 1).requires_grad_(True)
    y = pop(obs)
    y.sum().backward()
    return out + [y.detach(), obs.grad, pop.mean.grad]


def custom_surrogate(lib):
    neuron, surrogate = lib["neuron"], lib["surrogate"]

    class Mine(surrogate.SurrogateFunctionBase):
        def __init__(self, alpha=2.0, spiking=True):
            super().__init__(spiking=spiking, alpha=alpha)

        @staticmethod
        def spiking_function(x, alpha):
            return surrogate.atan.apply(x, alpha * 0.5)

        @staticmethod
        def primitive_function(x, alpha):
            return torch.atan(math.pi / 2 * alpha * 0.5 * x) / math.pi + 0.5

    out = []
    for cls in ("LIFNode", "IFNode"):
        for sg in (surrogate.LeakyKReLU(0.1, 1.0), surrogate.S2NN(), surrogate.QPseudoSpike(), Mine()):
            torch.manual_seed(4)
            x = (torch.rand(8, 4, 16) * 2.5).requires_grad_(True)
            node = getattr(neuron, cls)(surrogate_function=sg, step_mode="m")
            s = node(x)
            (s * torch.linspace(0.2, 1.8, 16)).sum().backward()
            out += [s.detach(), x.grad]
    return out


def functional_calls(lib):
    functional, surrogate = lib["functional"], lib["surrogate"]
    torch.manual_seed(5)
    x = (torch.rand(7, 3, 4) * 1.8).requires_grad_(True)
    w = torch.tensor(-0.2, requires_grad=True)
    out = []
    for name, args in (("if_multi_step", (1.0, None)), ("lif_multi_step", (3.0, False, 1.0, 0.0)),
                       ("plif_multi_step", (w, True, 1.0, 0.0))):
        s, v, v_seq = getattr(functional, name)(x, torch.zeros(3, 4), *args, surrogate.Sigmoid(), False, True)
        (gx,) = torch.autograd.grad(s.sum() + v_seq.sum(), x)
        out += [s.detach(), v.detach(), v_seq.detach(), gx]
    logits = torch.randn(4, 3, 10)
    out.append(functional.temporal_efficient_training_cross_entropy(logits, torch.tensor([1, 5, 9])))
    out.append(functional.delay(logits, 2))
    out.append(functional.first_spike_index((logits > 0.5).float()).float())
    return out


def main():
    logging.getLogger("spikeforge").setLevel(logging.WARNING)
    sj, ours = _libs()
    print(f"{'case':<18} {'tensors':>7} {'max |spikeforge - SpikingJelly|':>32} {'relative to max |SJ|':>22}")
    for case in (monitor_tutorial, encoders, custom_surrogate, functional_calls):
        a, b = case(ours), case(sj)
        assert len(a) == len(b)
        diff = max((x.float() - y.float()).abs().max().item() for x, y in zip(a, b, strict=True))
        rel = max(((x.float() - y.float()).abs().max() / y.float().abs().max().clamp_min(1e-12)).item()
                  for x, y in zip(a, b, strict=True))
        print(f"{case.__name__:<18} {len(a):>7} {diff:>32.3g} {rel:>22.3g}")


if __name__ == "__main__":
    main()
