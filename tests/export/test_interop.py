"""NIR round trips through Norse and snnTorch (skipped unless both are installed, e.g. in the peers' venv).

What is asserted is what bench/nir_interop.py measures: with float weights the peers reproduce spikeforge's
spikes exactly; with integer weights they reproduce spikeforge's import with NIR's strict ``>`` (the whole
difference is the tie rule); graphs they export import into spikeforge with their spikes.
"""

import contextlib
import io
import warnings

import pytest
import torch
import torch.nn as nn

from spikeforge import functional, layer, neuron
from spikeforge.export import from_nir, to_nir

norse = pytest.importorskip("norse.torch")
snn = pytest.importorskip("snntorch")
pytest.importorskip("nir")
from snntorch.export_nir import export_to_nir  # noqa: E402
from snntorch.import_nir import import_from_nir  # noqa: E402

T, N = 12, 4


def _fill(net, integer, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if integer:
                p.copy_(torch.randint(-1, 2, p.shape, generator=gen).float())
            else:
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * 3.0 / max(1, p[0].numel()) ** 0.5)
    return net


def _mlp(integer):
    net = nn.Sequential(layer.Flatten(), layer.Linear(64, 16), neuron.LIFNode(tau=2.0), layer.Linear(16, 6),
                        neuron.LIFNode(tau=2.0))
    functional.set_step_mode(net, "m")
    return _fill(net, integer, 1)


def _conv(integer):
    net = nn.Sequential(layer.Conv2d(1, 4, 3, padding=1), neuron.LIFNode(tau=2.0),
                        layer.AvgPool2d(2, divisor_override=1),
                        layer.Conv2d(4, 6, 3), neuron.LIFNode(tau=2.0), layer.Flatten(), layer.Linear(24, 5),
                        neuron.LIFNode(tau=2.0))
    functional.set_step_mode(net, "m")
    return _fill(net, integer, 2)


def _x(integer):
    x = torch.rand(T, N, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    return (x > 0.6).float() if integer else 2 * x


def _run(net, x):
    functional.reset_net(net)
    with torch.no_grad():
        return net(x)


def _peer_steps(module, x):
    """One sample at a time: the peers' NIR Flatten keeps NIR's batch-less start_dim and flattens the batch."""
    outs = []
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        for n in range(x.shape[1]):
            for m in module.modules():
                if hasattr(m, "reset_mem"):
                    m.reset_mem()
            state, steps = None, []
            for t in range(x.shape[0]):
                out = module(x[t, n]) if state is None else module(x[t, n], state)
                out, state = out if isinstance(out, tuple) else (out, None)
                steps.append(out)
            outs.append(torch.stack(steps))
    return torch.stack(outs, dim=1)


def _import(peer, graph):
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return norse.from_nir(graph, dt=1e-4) if peer == "norse" else import_from_nir(graph)


@pytest.mark.parametrize("peer", ["norse", "snntorch"])
@pytest.mark.parametrize("build", [_mlp, _conv], ids=["mlp", "conv"])
@pytest.mark.parametrize("integer", [False, True], ids=["float", "integer"])
def test_peers_run_spikeforge_graphs(peer, build, integer):
    net, x = build(integer), _x(integer)
    graph = to_nir(net, x)
    ours = _run(net, x)
    theirs = _peer_steps(_import(peer, graph), x).reshape(ours.shape)
    assert ours.sum() > 0
    if not integer:
        assert torch.equal(theirs, ours)
    strict = _run(from_nir(graph, fire_on_tie=False), x)
    assert torch.equal(theirs, strict)  # the peers fire on v > v_threshold, as NIR defines


@pytest.mark.parametrize("integer", [False, True], ids=["float", "integer"])
def test_snntorch_graphs_import_into_spikeforge(integer):
    kw = dict(reset_mechanism="zero", reset_delay=False, init_hidden=True)
    net = nn.Sequential(nn.Linear(64, 16), snn.Leaky(beta=torch.full((16,), 0.9), threshold=torch.ones(16), **kw),
                        nn.Linear(16, 6), snn.Leaky(beta=torch.full((6,), 0.9), threshold=torch.ones(6), **kw))
    _fill(net, integer, 4)
    x = _x(integer).flatten(2)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = export_to_nir(net, x[0, 0])  # snnTorch's exporter needs an unbatched sample
    theirs = _peer_steps(net, x)
    assert theirs.sum() > 0
    assert torch.equal(_run(from_nir(graph), x), theirs)


def test_norse_graphs_import_into_spikeforge():
    model = norse.SequentialState(nn.Linear(64, 16), norse.LIFBoxCell(), nn.Linear(16, 6), norse.LIFBoxCell())
    _fill(model, False, 5)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    x = _x(False).flatten(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = norse.to_nir(model, x[0, :1])
    with torch.no_grad():
        state, steps = None, []
        for t in range(T):
            out, state = model(x[t], state)
            steps.append(out)
    theirs = torch.stack(steps)
    assert theirs.sum() > 0
    # Norse 1.1 writes tau = dt/tau_mem_inv (dt·tau_mem, not tau_mem): read at dt² it gives Norse's decay back
    assert torch.equal(_run(from_nir(graph, dt=1e-3 ** 2), x), theirs)
