"""spikeforge.functional against SpikingJelly 2.0's functional (the plain helpers and the neuron calls).

CI: the *_multi_step calls with SpikingJelly's positional order equal our keyword calls and a hand trace; the
helpers by their definitions (delay, first spike, one-hot, TET = mean over t of the per-step cross-entropy,
chunked = whole forward, kernel matrices, set_step_mode leaving container children alone). Peer venv: each name
called with the same arguments in both libraries.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn

from spikeforge import functional, layer, neuron, surrogate

logging.getLogger("spikeforge").setLevel(logging.WARNING)


def test_multi_step_positional_order_equals_keywords_and_a_hand_trace():
    x = torch.tensor([[0.6], [0.6], [0.3], [1.2]], dtype=torch.float64, requires_grad=True)
    v0 = torch.zeros(1, dtype=torch.float64)
    pos = functional.if_multi_step(x, v0, 1.0, 0.0, surrogate.ATan(), False, True)
    kw = functional.if_multi_step(x, v_init=v0, v_threshold=1.0, v_reset=0.0, surrogate_function=surrogate.ATan(),
                                  store_v_seq=True)
    # IF: H = 0.6, 1.2 (fire, reset 0), 0.3, 1.5 (fire)
    assert pos[0].flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    assert pos[2].flatten().tolist() == pytest.approx([0.6, 0.0, 0.3, 0.0])
    for a, b in zip(pos, kw):
        assert torch.equal(a, b)
    lif_pos = functional.lif_multi_step(x, v0, 4.0, False, 1.0, None, surrogate.Sigmoid(), True, False)
    lif_kw = functional.lif_multi_step(x, v0, tau=4.0, decay_input=False, v_reset=None, detach_reset=True)
    assert lif_pos[2] is None and torch.equal(lif_pos[0], lif_kw[0]) and torch.equal(lif_pos[1], lif_kw[1])
    w = torch.tensor(0.0, requires_grad=True)
    plif = functional.plif_multi_step(x, v0, w, True, 1.0, 0.0, surrogate.Sigmoid(), False, True)
    lif = functional.lif_multi_step(x, v0, 2.0, True, 1.0, 0.0, surrogate.Sigmoid(), False, True)  # sigmoid(0)=1/2
    for a, b in zip(plif, lif):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="neuron_storage"):
        functional.if_multi_step(x, v0, neuron_storage=torch.float16)
    s, v = functional.if_step(torch.tensor(1.2), torch.tensor(0.0), 1.0, None, surrogate.Sigmoid())
    assert s.shape == () and float(s) == 1.0 and float(v) == pytest.approx(0.2)
    s, v = functional.lif_step(torch.full((2,), 1.5), torch.zeros(2), 2.0, True, 1.0, 0.0, surrogate.Sigmoid())
    assert s.tolist() == [0.0, 0.0] and v.tolist() == [0.75, 0.75]
    h = functional.lif_charge(torch.ones(2), torch.full((2,), 0.5), 2.0, False, None)
    assert h.tolist() == [1.25, 1.25]
    spike = torch.tensor([1.0, 0.0], requires_grad=True)
    assert functional.voltage_reset(torch.tensor([1.3, 0.4]), spike, 1.0, None, False).tolist() == pytest.approx(
        [0.3, 0.4])
    assert functional.voltage_reset(torch.tensor([1.3, 0.4]), spike, 1.0, -0.1, True).tolist() == pytest.approx(
        [-0.1, 0.4])


def test_forward_helpers():
    x_seq = torch.randn(6, 2, 3)
    lin = nn.Linear(3, 4)
    torch.testing.assert_close(functional.multi_step_forward(x_seq, [lin, nn.ReLU()]), torch.relu(lin(x_seq)))
    torch.testing.assert_close(functional.seq_to_ann_forward(x_seq, lin), lin(x_seq))
    a, b = functional.seq_to_ann_forward((x_seq, x_seq * 2), lambda p, q: (p + q, p - q))
    torch.testing.assert_close(a, 3 * x_seq)
    torch.testing.assert_close(b, -x_seq)
    t_last = x_seq.permute(1, 2, 0)
    torch.testing.assert_close(functional.t_last_multi_step_forward(t_last, torch.tanh), torch.tanh(t_last))
    torch.testing.assert_close(functional.t_last_seq_to_ann_forward(t_last, lin), lin(x_seq).permute(1, 2, 0))
    node = neuron.LIFNode(step_mode="m")
    whole = node(x_seq * 3)
    node.reset()
    chunked = functional.chunk_multi_step_forward(4, x_seq * 3, node)
    assert torch.equal(whole, chunked)


def test_plain_helpers_by_definition():
    x = torch.arange(1.0, 6.0).reshape(5, 1)
    assert functional.delay(x, 2).flatten().tolist() == [0, 0, 1, 2, 3]
    assert functional.delay(x, 0) is x and functional.delay(x, 9).abs().sum() == 0
    queue, outs = (), []
    for t in range(5):
        y, queue = functional.delay_step(x[t], queue, 2)
        outs.append(float(y))
    assert outs == [0, 0, 1, 2, 3]
    spikes = torch.tensor([[0, 1, 1, 0, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 1.0]])
    assert functional.first_spike_index(spikes).int().tolist() == [[0, 1, 0, 0, 0], [0] * 5, [1, 0, 0, 0, 0]]
    oh = functional.redundant_one_hot(torch.tensor([0, 2]), 3, 2)
    assert oh.tolist() == [[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]] and oh.dtype == torch.get_default_dtype()
    torch.manual_seed(0)
    out, target = torch.randn(4, 3, 5), torch.tensor([0, 4, 2])
    tet = functional.temporal_efficient_training_cross_entropy(out, target)
    by_hand = sum(nn.functional.cross_entropy(out[t], target) for t in range(4)) / 4
    torch.testing.assert_close(tet, by_hand)
    soft = nn.functional.one_hot(target, 5).float()
    torch.testing.assert_close(functional.temporal_efficient_training_cross_entropy(out, soft), by_hand)
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(functional.kernel_dot_product(a, b), a @ b.T)
    gauss = functional.kernel_dot_product(a, b, "gaussian", 1.5)
    torch.testing.assert_close(gauss[1, 2], torch.exp(-((a[1] - b[2]) ** 2).sum() / (2 * 1.5 ** 2)))
    torch.testing.assert_close(functional.kernel_dot_product(a, b, "polynomial", 2), (a @ b.T) ** 2)
    with pytest.raises(ValueError, match="sigma"):
        functional.kernel_dot_product(a, b, "gaussian", 0.0)
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([[1, 0], [1, 0], [0, 1]])
    assert float(functional.spike_similar_loss(s, labels)) == pytest.approx(0.0, abs=1e-12)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(4, 5))
    torch.manual_seed(1)
    functional.kaiming_normal_conv_linear_weight(net)
    w = net[1].weight
    std = (2.0 / (1 + 5)) ** 0.5 / 4 ** 0.5  # gain sqrt(2/(1+a²)), a = sqrt(5), fan_in 4
    assert w.std().item() == pytest.approx(std, rel=0.5)
    z = torch.ones(2, 3, 4)
    out, state = functional.neunorm_step(z, torch.zeros(2, 1, 4), torch.ones(3, 4), 0.5, 0.1)
    torch.testing.assert_close(state, torch.full((2, 1, 4), 0.3))  # 0.1 · (sum over 3 channels of 1)
    assert out[0, 0, 0].item() == pytest.approx(0.7)


def test_set_step_mode_leaves_container_children_and_reset_net_reaches_any_reset():
    inner = neuron.IFNode()
    net = nn.Sequential(layer.Linear(3, 3), layer.MultiStepContainer(inner), neuron.LIFNode())
    functional.set_step_mode(net, "m")
    assert net[0].step_mode == "m" and net[2].step_mode == "m" and inner.step_mode == "s"
    out = net(torch.rand(4, 2, 3) * 3)
    assert out.shape == (4, 2, 3)

    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.n = 5

        def reset(self):
            self.n = 0

    c = Counter()
    functional.reset_net(nn.Sequential(c))
    assert c.n == 0 and functional.collect_reset_modules(nn.Sequential(c, inner)) == (c, inner)
    functional.invalidate_reset_cache(net)


def test_learning_rules_reachable_from_functional():
    from spikeforge.learning import rules

    assert functional.stdp_linear_step is rules.stdp_linear_step
    with pytest.raises(AttributeError):
        functional.no_such_name  # noqa: B018


# ----------------------------------------------------------------------------------- against SpikingJelly
def _sj():
    pytest.importorskip("spikingjelly.activation_based")
    from spikingjelly.activation_based import functional as sj_functional
    from spikingjelly.activation_based import surrogate as sj_surrogate

    return sj_functional, sj_surrogate


@pytest.mark.parametrize("v_reset", [0.0, None])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_sj_multi_step_positional_calls(v_reset, detach_reset):
    sj_functional, sj_surrogate = _sj()
    torch.manual_seed(0)
    x = (torch.rand(7, 3, 4) * 1.8).requires_grad_(True)
    w = torch.tensor(-0.3, requires_grad=True)
    calls = [("if_multi_step", (1.0, v_reset)), ("lif_multi_step", (3.0, False, 1.0, v_reset)),
             ("plif_multi_step", (w, True, 1.0, v_reset))]
    for name, args in calls:
        results = []
        for fn, sg in ((functional, surrogate), (sj_functional, sj_surrogate)):
            out = getattr(fn, name)(x, torch.zeros(3, 4), *args, sg.ATan(), detach_reset, True)
            loss = out[0].sum() + out[1].sum() + 0.1 * out[2].sum()
            grads = torch.autograd.grad(loss, [x, w] if name == "plif_multi_step" else [x])
            results.append((out, grads))
        (o1, g1), (o2, g2) = results
        for a, b in zip(o1, o2):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for name, args in [("if_step", (1.0, 0.0)), ("lif_step", (2.0, True, 1.0, None)),
                       ("plif_step", (w, False, 1.0, 0.0))]:
        for xx, vv in ((torch.tensor(1.3), torch.tensor(0.2)), (torch.rand(3) * 2, torch.zeros(3))):
            a = getattr(functional, name)(xx, vv, *args, surrogate.Sigmoid())
            b = getattr(sj_functional, name)(xx, vv, *args, sj_surrogate.Sigmoid())
            assert a[0].shape == b[0].shape and a[1].shape == b[1].shape
            torch.testing.assert_close(a[0], b[0]) and torch.testing.assert_close(a[1], b[1])
    xx, vv = torch.rand(5), torch.rand(5)
    for decay_input in (True, False):
        for vr in (0.0, None, -0.2):
            torch.testing.assert_close(functional.lif_charge(xx, vv, 2.5, decay_input, vr),
                                       sj_functional.lif_charge(xx, vv, 2.5, decay_input, vr))
            spike = (torch.rand(5) > 0.5).float()
            torch.testing.assert_close(functional.voltage_reset(vv, spike, 1.0, vr, False),
                                       sj_functional.voltage_reset(vv, spike, 1.0, vr, False))


def test_sj_plain_helpers_same_results():
    sj_functional, _ = _sj()
    torch.manual_seed(0)
    x_seq = torch.randn(6, 2, 5)
    for d in (0, 2, 6, 9):
        assert torch.equal(functional.delay(x_seq, d), sj_functional.delay(x_seq, d))
    q1 = q2 = ()
    for t in range(6):
        y1, q1 = functional.delay_step(x_seq[t], q1, 3)
        y2, q2 = sj_functional.delay_step(x_seq[t], q2, 3)
        assert torch.equal(y1, y2) and len(q1) == len(q2)
    spikes = (torch.rand(3, 4, 8) > 0.6).float()
    assert torch.equal(functional.first_spike_index(spikes), sj_functional.first_spike_index(spikes))
    labels = torch.tensor([1, 0, 3])
    assert torch.equal(functional.redundant_one_hot(labels, 4, 3), sj_functional.redundant_one_hot(labels, 4, 3))
    for out, target in ((torch.randn(4, 3, 5), torch.tensor([0, 4, 2])),
                        (torch.randn(4, 3, 5, 2), torch.randint(0, 5, (3, 2)))):
        torch.testing.assert_close(functional.temporal_efficient_training_cross_entropy(out, target),
                                   sj_functional.temporal_efficient_training_cross_entropy(out, target))
    a, b = torch.rand(4, 6), torch.rand(4, 6)
    for kernel, args in (("linear", ()), ("polynomial", (3,)), ("sigmoid", (0.5,)), ("gaussian", (1.2,))):
        torch.testing.assert_close(functional.kernel_dot_product(a, b, kernel, *args),
                                   sj_functional.kernel_dot_product(a, b, kernel, *args))
    s = (torch.rand(4, 3, 2) > 0.5).float()
    lab = nn.functional.one_hot(torch.tensor([0, 1, 0, 2]), 3)
    for loss_type in ("mse", "l1"):
        torch.testing.assert_close(functional.spike_similar_loss(s, lab, "linear", loss_type),
                                   sj_functional.spike_similar_loss(s, lab, "linear", loss_type))
    torch.testing.assert_close(functional.spike_similar_loss(s, lab, "sigmoid", "bce", 0.7),
                               sj_functional.spike_similar_loss(s, lab, "sigmoid", "bce", 0.7))
    nets = [nn.Sequential(nn.Conv1d(2, 3, 3), nn.Conv2d(2, 3, 3), nn.Conv3d(1, 2, 2), nn.Linear(4, 5))
            for _ in range(2)]
    torch.manual_seed(2)
    functional.kaiming_normal_conv_linear_weight(nets[0])
    torch.manual_seed(2)
    sj_functional.kaiming_normal_conv_linear_weight(nets[1])
    for (name, p), q in zip(nets[0].named_parameters(), nets[1].parameters()):
        if name.endswith("weight"):  # the biases are left as built
            assert torch.equal(p, q), name
    z, st, wt = torch.rand(2, 3, 4), torch.rand(2, 1, 4), torch.rand(3, 4)
    for a, b in zip(functional.neunorm_step(z, st, wt, 0.9, 0.2), sj_functional.neunorm_step(z, st, wt, 0.9, 0.2)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(functional.synapse_filter_step(z, st, 0.5),
                               sj_functional.synapse_filter_step(z, st, 0.5))


def test_sj_forward_helpers_same_results():
    sj_functional, _ = _sj()
    from spikingjelly.activation_based import neuron as sj_neuron

    x_seq = torch.randn(6, 2, 3)
    lin = nn.Linear(3, 4)
    torch.testing.assert_close(functional.multi_step_forward(x_seq, [lin, nn.ReLU()]),
                               sj_functional.multi_step_forward(x_seq, [lin, nn.ReLU()]))
    torch.testing.assert_close(functional.seq_to_ann_forward(x_seq, lin), sj_functional.seq_to_ann_forward(x_seq, lin))
    t_last = x_seq.permute(1, 2, 0)
    torch.testing.assert_close(functional.t_last_multi_step_forward(t_last, torch.sigmoid),
                               sj_functional.t_last_multi_step_forward(t_last, torch.sigmoid))
    torch.testing.assert_close(functional.t_last_seq_to_ann_forward(t_last, lin),
                               sj_functional.t_last_seq_to_ann_forward(t_last, lin))
    ours, theirs = neuron.LIFNode(step_mode="m"), sj_neuron.LIFNode(step_mode="m")
    assert torch.equal(functional.chunk_multi_step_forward(4, x_seq * 3, ours),
                       sj_functional.chunk_multi_step_forward(4, x_seq * 3, theirs))


def test_sj_set_step_mode_same_modes():
    sj_functional, _ = _sj()
    from spikingjelly.activation_based import layer as sj_layer
    from spikingjelly.activation_based import neuron as sj_neuron

    def build(lib_layer, lib_neuron):
        return nn.Sequential(lib_layer.Linear(3, 3), lib_layer.MultiStepContainer(lib_neuron.IFNode()),
                             lib_layer.SeqToANNContainer(lib_layer.Linear(3, 3)),
                             lib_layer.StepModeContainer(True, "s", lib_neuron.IFNode()), lib_neuron.LIFNode())

    ours, theirs = build(layer, neuron), build(sj_layer, sj_neuron)
    functional.set_step_mode(ours, "m")
    sj_functional.set_step_mode(theirs, "m")
    modes = [[(type(m).__name__, m.step_mode) for m in net.modules() if hasattr(m, "step_mode")]
             for net in (ours, theirs)]
    assert modes[0] == modes[1]
