"""spikeforge.monitor against SpikingJelly 2.0's monitor (the monitor tutorial's calls).

CI: records keep the graph (a firing-rate regulariser built from them back-propagates, ``detach=True`` stops
it), ``mon[0]`` / ``mon[name]``, enable/disable, clear, remove_hooks, close and the context manager, the gradient
monitors against gradients taken by hand with ``retain_grad``. Peer venv: the same network in both libraries,
every record compared.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn

from spikeforge import functional, layer, monitor, neuron

logging.getLogger("spikeforge").setLevel(logging.WARNING)


def _net(lib_layer=layer, lib_neuron=neuron, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(lib_layer.Linear(4, 5), lib_neuron.IFNode(), lib_layer.Linear(5, 3), lib_neuron.IFNode())
    return net


def _x(T=6):
    torch.manual_seed(7)
    return torch.rand(T, 2, 4) * 3


def test_records_keep_the_graph_and_a_rate_regulariser_trains():
    net = _net()
    functional.set_step_mode(net, "m")
    mon = monitor.OutputMonitor(net, neuron.IFNode)
    out = net(_x())
    assert mon.monitored_layers == ["1", "3"] and len(mon.records) == 2
    assert torch.equal(mon[0], mon["1"][0]) and mon[1] is mon.records[1] and mon[-1] is mon["3"][0]
    assert mon.records[0].requires_grad
    reg = sum(r.mean() for r in mon.records)
    reg.backward()
    grad_from_records = net[0].weight.grad.clone()
    assert grad_from_records.abs().sum() > 0
    # the same regulariser computed from the outputs directly gives the same gradient
    net.zero_grad()
    functional.reset_net(net)
    h = net[1](net[0](_x()))
    (h.mean() + net[3](net[2](h)).mean()).backward()
    torch.testing.assert_close(net[0].weight.grad, grad_from_records)
    assert out.shape == (6, 2, 3)


def test_detach_true_records_without_graph():
    net = _net()
    functional.set_step_mode(net, "m")
    mon = monitor.OutputMonitor(net, neuron.IFNode, detach=True)
    inp = monitor.InputMonitor(net, nn.Linear, detach=True)
    v_mon = monitor.AttributeMonitor("v", False, net, neuron.IFNode, detach=True)
    net(_x())
    assert not any(r.requires_grad for r in mon.records + inp.records + v_mon.records)
    v_plain = monitor.AttributeMonitor("v", False, net, neuron.IFNode)
    functional.reset_net(net)
    net(_x())
    assert v_plain[0].requires_grad and torch.equal(v_plain[0].detach(), v_mon[0])


def test_indexing_enable_clear_remove_close_and_context_manager():
    net = _net()
    mon = monitor.OutputMonitor(net, neuron.IFNode, function_on_output=lambda s: s.sum().item())
    x = _x()
    for t in range(3):
        net(x[t])
    assert len(mon) == 6 and mon["1"] == [mon[0], mon[2], mon[4]] and mon.name_records_index["3"] == [1, 3, 5]
    with pytest.raises(KeyError, match="not monitored"):
        mon["0"]
    with pytest.raises(ValueError):
        mon[1.5]
    mon.disable()
    net(x[3])
    assert len(mon) == 6 and not mon.is_enable()
    mon.enable()
    mon.clear_recorded_data()
    assert mon.records == [] and mon.name_records_index == {"1": [], "3": []}
    net(x[4])
    assert len(mon) == 2
    mon.remove_hooks()
    net(x[5])
    assert len(mon) == 2
    with monitor.InputMonitor(net, nn.Linear, function_on_input=lambda v: v.shape) as inp:
        net(x[0])
        assert inp["0"] == [torch.Size([2, 4])] and inp["2"] == [torch.Size([2, 5])]
    net(x[0])
    assert len(inp) == 2 and not inp.is_enable() and inp.hooks == []
    whole = monitor.OutputMonitor(net)  # instance=None: modules of type(net), i.e. the net itself
    net(x[0])
    assert whole.monitored_layers == [""] and whole[0].shape == (2, 3)
    with pytest.warns(UserWarning, match="nothing will be recorded"):
        monitor.OutputMonitor(net, nn.Conv2d)


def test_gradient_monitors_match_retain_grad():
    net = _net()
    functional.set_step_mode(net, "m")
    g_out = monitor.GradOutputMonitor(net, neuron.IFNode)
    g_in = monitor.GradInputMonitor(net, neuron.IFNode, function_on_grad_input=lambda g: g * 1.0)
    x = _x()
    h1 = net[0](x)
    h1.retain_grad()
    s1 = net[1](h1)
    s1.retain_grad()
    h2 = net[2](s1)
    h2.retain_grad()
    s2 = net[3](h2)
    s2.retain_grad()
    (s2 * torch.arange(1.0, 4.0)).sum().backward()
    # backward order: the last neuron first
    assert g_out.monitored_layers == ["1", "3"] and g_out.name_records_index == {"1": [1], "3": [0]}
    torch.testing.assert_close(g_out["3"][0], s2.grad)
    torch.testing.assert_close(g_out["1"][0], s1.grad)
    torch.testing.assert_close(g_in["3"][0], h2.grad)
    torch.testing.assert_close(g_in["1"][0], h1.grad)
    assert g_in["1"][0].abs().sum() > 0


def test_firing_rates_of_records_with_graph():
    net = _net()
    functional.set_step_mode(net, "m")
    mon = monitor.OutputMonitor(net, neuron.IFNode)
    net(_x())
    rates = monitor.firing_rates(mon)
    assert rates["1"] == pytest.approx(float(mon["1"][0].detach().mean()))
    assert monitor.layer_firing_rates(mon) == pytest.approx(rates)


# ----------------------------------------------------------------------------------- against SpikingJelly
def _sj_pair(step_mode="m"):
    pytest.importorskip("spikingjelly.activation_based")
    from spikingjelly.activation_based import functional as sj_functional
    from spikingjelly.activation_based import layer as sj_layer
    from spikingjelly.activation_based import neuron as sj_neuron

    ours, theirs = _net(), _net(sj_layer, sj_neuron)
    theirs.load_state_dict(ours.state_dict())
    functional.set_step_mode(ours, step_mode)
    sj_functional.set_step_mode(theirs, step_mode)
    return ours, theirs, sj_neuron


def _sj_monitor():
    from spikingjelly.activation_based import monitor as sj_monitor

    return sj_monitor


@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_sj_output_input_attribute_monitors_same_records(step_mode):
    ours, theirs, sj_neuron = _sj_pair(step_mode)
    sj_monitor = _sj_monitor()
    mons = [(monitor.OutputMonitor(ours, neuron.IFNode), sj_monitor.OutputMonitor(theirs, sj_neuron.IFNode)),
            (monitor.InputMonitor(ours, nn.Linear), sj_monitor.InputMonitor(theirs, nn.Linear)),
            (monitor.AttributeMonitor("v", False, ours, neuron.IFNode),
             sj_monitor.AttributeMonitor("v", False, theirs, sj_neuron.IFNode)),
            (monitor.OutputMonitor(ours), sj_monitor.OutputMonitor(theirs))]
    x = _x()
    if step_mode == "m":
        losses = [ours(x).sum(), theirs(x).sum()]
    else:
        losses = [sum(ours(x[t]).sum() for t in range(3)), sum(theirs(x[t]).sum() for t in range(3))]
    for a, b in mons:
        assert a.monitored_layers == b.monitored_layers and a.name_records_index == b.name_records_index
        assert len(a.records) == len(b.records) > 0
        for i in range(len(a.records)):
            torch.testing.assert_close(a[i], b[i], rtol=1e-6, atol=1e-6)
            assert a[i].requires_grad == b[i].requires_grad
        for name in a.monitored_layers:
            assert len(a[name]) == len(b[name])
    reg_ours = sum(r.mean() for r in mons[0][0].records)
    reg_theirs = sum(r.mean() for r in mons[0][1].records)
    g_ours = torch.autograd.grad(reg_ours, ours[0].weight)[0]
    g_theirs = torch.autograd.grad(reg_theirs, theirs[0].weight)[0]
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-5, atol=1e-6)
    assert losses[0].item() == pytest.approx(losses[1].item())


def test_sj_gradient_monitors_same_records():
    ours, theirs, sj_neuron = _sj_pair("m")
    sj_monitor = _sj_monitor()
    pairs = [(monitor.GradOutputMonitor(ours, neuron.IFNode), sj_monitor.GradOutputMonitor(theirs, sj_neuron.IFNode)),
             (monitor.GradInputMonitor(ours, neuron.IFNode), sj_monitor.GradInputMonitor(theirs, sj_neuron.IFNode)),
             (monitor.GradInputMonitor(ours, nn.Linear), sj_monitor.GradInputMonitor(theirs, nn.Linear))]
    x = _x().requires_grad_(True)
    (ours(x) * torch.arange(1.0, 4.0)).sum().backward()
    (theirs(x) * torch.arange(1.0, 4.0)).sum().backward()
    for a, b in pairs:
        assert a.name_records_index == b.name_records_index and len(a.records) == len(b.records) > 0
        for i in range(len(a.records)):
            torch.testing.assert_close(a[i], b[i], rtol=1e-5, atol=1e-6)
