"""spikeforge.layer against SpikingJelly 2.0's ``activation_based.layer``.

CI (no SpikingJelly): defaults and positional order, and hand-computed traces of the stateful layers
(SynapseFilter, Delay, recurrent containers, NeuNorm, BNTT, ...). With SpikingJelly importable: every public
constructor's parameter names, order and defaults, and outputs/gradients of both libraries on the same input
with the same initial parameters, in one process.
"""

import inspect
import math

import pytest
import torch
import torch.nn as nn

from spikeforge import functional, layer, neuron

# ---- defaults and positional order (CI) ------------------------------------------------------------------------


def test_dropout_defaults_match_spikingjelly():
    assert layer.Dropout().p == 0.5
    assert layer.Dropout2d().p == 0.2


WRAPPED = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "MaxPool1d",
           "MaxPool2d", "MaxPool3d", "MaxUnpool1d", "MaxUnpool2d", "MaxUnpool3d", "AvgPool1d", "AvgPool2d",
           "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "BatchNorm1d", "BatchNorm2d",
           "BatchNorm3d", "GroupNorm", "Upsample", "Linear", "Flatten"]


@pytest.mark.parametrize("name", WRAPPED)
def test_step_mode_follows_torch_positional_arguments(name):
    cls = getattr(layer, name)
    torch_params = [p for p in inspect.signature(getattr(nn, name).__init__).parameters.values()
                    if p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("self", "device", "dtype")]
    ours = [p for p in inspect.signature(cls).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert [p.name for p in ours] == [p.name for p in torch_params] + ["step_mode"]


def test_positional_step_mode_is_honoured():
    conv = layer.Conv2d(1, 2, 3, 1, 0, 1, 1, True, "zeros", "m")
    assert conv.step_mode == "m" and conv.padding_mode == "zeros"
    assert layer.MaxPool2d(2, 2, 0, 1, False, False, "m").step_mode == "m"
    assert layer.BatchNorm2d(3, 1e-5, 0.1, True, True, "m").step_mode == "m"
    assert layer.Upsample(None, 2.0, "nearest", None, None, "m").step_mode == "m"
    with pytest.raises(TypeError, match="both by position and by keyword"):
        layer.AdaptiveAvgPool2d(1, "m", step_mode="s")
    with pytest.raises(TypeError, match="at most"):
        layer.AdaptiveAvgPool2d(1, "m", "extra")
    x = torch.rand(4, 2, 1, 5, 5)
    assert conv(x).shape == (4, 2, 2, 3, 3)


# ---- hand-computed behaviour (CI) ------------------------------------------------------------------------------


def test_synapse_filter_by_hand():
    # τ = 2: I[t] = I[t−1] − (1 − S[t])·I[t−1]/2 + S[t]
    spikes = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])
    expected = torch.tensor([1.0, 0.5, 0.25, 1.25, 2.25])
    syn = layer.SynapseFilter(tau=2.0)
    torch.testing.assert_close(torch.stack([syn(s) for s in spikes]), expected)
    syn.reset()
    syn.step_mode = "m"
    torch.testing.assert_close(syn(spikes.view(5, 1)).view(5), expected)
    learnable = layer.SynapseFilter(tau=2.0, learnable=True, step_mode="m")
    torch.testing.assert_close(learnable.w.sigmoid(), torch.tensor(0.5))  # 1/τ at initialisation
    out = learnable(spikes.view(5, 1))
    torch.testing.assert_close(out.detach().view(5), expected)
    out.sum().backward()
    assert learnable.w.grad is not None and learnable.w.grad != 0
    with pytest.raises(ValueError, match="tau"):
        layer.SynapseFilter(tau=1.0)


def test_delay_by_hand_single_and_chunked():
    x = torch.arange(1.0, 7.0).view(6, 1)
    expected = torch.tensor([0.0, 0.0, 1.0, 2.0, 3.0, 4.0]).view(6, 1)
    d = layer.Delay(2)
    torch.testing.assert_close(torch.stack([d(xt) for xt in x]), expected)
    d = layer.Delay(2, step_mode="m")
    torch.testing.assert_close(torch.cat([d(x[:1]), d(x[1:4]), d(x[4:])]), expected)
    d.reset()
    xg = x.clone().requires_grad_(True)
    d(xg).sum().backward()
    torch.testing.assert_close(xg.grad, torch.tensor([1.0, 1, 1, 1, 0, 0]).view(6, 1))
    assert layer.Delay(0, step_mode="m")(x) is x
    with pytest.raises(ValueError, match="delay_steps"):
        layer.Delay(-1)


def test_element_wise_recurrent_container_by_hand():
    # y[t] = IF(y[t−1] + x[t]); IF: v += input, spike at v >= 1 then hard reset to 0
    x = torch.full((5, 1), 0.6)
    net = layer.ElementWiseRecurrentContainer(neuron.IFNode(), lambda y, x: y + x, step_mode="m")
    # t0: v=0.6 → 0; t1: v=1.2 → 1 (v=0); t2: in 1.6 → 1; t3: 1.6 → 1; t4: 1.6 → 1
    torch.testing.assert_close(net(x), torch.tensor([[0.0], [1.0], [1.0], [1.0], [1.0]]))
    functional.reset_net(net)
    assert net.y is None
    # identity sub-module, decaying feedback: y[t] = 0.5·y[t−1] + x[t]
    lin = layer.ElementWiseRecurrentContainer(nn.Identity(), lambda y, x: 0.5 * y + x)
    outs = [lin(torch.tensor([v])) for v in (1.0, 0.0, 2.0)]
    torch.testing.assert_close(torch.cat(outs), torch.tensor([1.0, 0.5, 2.25]))
    with pytest.raises(ValueError, match="single-step"):
        layer.ElementWiseRecurrentContainer(neuron.IFNode(step_mode="m"), torch.add)


def test_linear_recurrent_container_by_hand():
    torch.manual_seed(0)
    rc = layer.LinearRecurrentContainer(nn.Identity(), in_features=2, out_features=2, step_mode="m")
    x = torch.randn(4, 3, 2)
    y_prev = torch.zeros(3, 2)
    expected = []
    for t in range(4):
        y_prev = torch.cat([x[t], y_prev], dim=-1) @ rc.rc.weight.T + rc.rc.bias
        expected.append(y_prev)
    torch.testing.assert_close(rc(x), torch.stack(expected))
    assert rc.rc.weight.shape == (2, 4)
    with pytest.raises(ValueError, match="reset_net"):
        rc(torch.randn(1, 5, 2))  # the state has batch 3


def test_step_mode_container():
    torch.manual_seed(1)
    x = torch.rand(4, 2, 3)
    stateful = layer.StepModeContainer(True, "m", nn.Linear(3, 3), neuron.IFNode())
    single = nn.Sequential(stateful[0], neuron.IFNode())
    torch.testing.assert_close(stateful(x), torch.stack([single(xt) for xt in x]))
    stateless = layer.StepModeContainer(False, "m", nn.Linear(3, 2))
    torch.testing.assert_close(stateless(x), stateless[0](x))
    stateless.step_mode = "s"
    torch.testing.assert_close(stateless(x[0]), stateless[0](x[0]))
    with pytest.raises(ValueError, match="step_mode='s'"):
        layer.StepModeContainer(True, "m", neuron.IFNode(step_mode="m"))


def test_time_last_containers():
    torch.manual_seed(2)
    x = torch.rand(2, 3, 5)  # [N, C, T]
    fc = nn.Linear(3, 4)
    expected = torch.stack([fc(x[..., t]) for t in range(5)], dim=-1)
    torch.testing.assert_close(layer.TLastSeqToANNContainer(fc)(x), expected)
    torch.testing.assert_close(layer.TLastMultiStepContainer(fc)(x), expected)


def test_voting_layer_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
    torch.testing.assert_close(layer.VotingLayer(3)(x), torch.tensor([[2.0, 5.0]]))
    seq = torch.stack([x, 2 * x])
    torch.testing.assert_close(layer.VotingLayer(3, step_mode="m")(seq), torch.tensor([[[2.0, 5.0]], [[4.0, 10.0]]]))


def test_max_unpool_multi_step_round_trip():
    torch.manual_seed(3)
    x = torch.rand(3, 2, 1, 4, 4)
    pool = layer.MaxPool2d(2, return_indices=True, step_mode="m")
    y, idx = pool(x)
    assert y.shape == idx.shape == (3, 2, 1, 2, 2)
    up = layer.MaxUnpool2d(2, step_mode="m")(y, idx)
    ref = torch.stack([nn.MaxUnpool2d(2)(*nn.MaxPool2d(2, return_indices=True)(xt)) for xt in x])
    torch.testing.assert_close(up, ref)


def test_weight_standardisation_by_hand():
    lin = layer.WSLinear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]]))
    w = lin.get_weight()
    # row 0: mean 2, unbiased var 1 → (w − 2)/√(1·3 + 1e-4)
    torch.testing.assert_close(w[0], (torch.tensor([1.0, 2.0, 3.0]) - 2) / math.sqrt(3 + 1e-4))
    torch.testing.assert_close(w.mean(dim=1), torch.zeros(2))
    conv = layer.WSConv2d(2, 3, 3, padding=1, step_mode="m")
    x = torch.rand(2, 1, 2, 5, 5)
    ref = nn.functional.conv2d(x.flatten(0, 1), conv.get_weight(), conv.bias, padding=1).unflatten(0, (2, 1))
    torch.testing.assert_close(conv(x), ref)


def test_neunorm_by_hand():
    nn_layer = layer.NeuNorm(2, 1, 1, k=0.5)
    with torch.no_grad():
        nn_layer.w.fill_(1.0)
    s = torch.tensor([[[[1.0]], [[1.0]]]])  # [N=1, C=2, 1, 1]
    # x = 0.5·x + (0.5/4)·Σ_c s = 0.25 at t0, 0.375 at t1; y = s − w·x
    torch.testing.assert_close(nn_layer(s), s - 0.25)
    torch.testing.assert_close(nn_layer(s), s - 0.375)


def test_batch_norm_through_time_and_temporal_effective_bn():
    torch.manual_seed(4)
    x = torch.randn(3, 4, 2, 5, 5)
    bntt = layer.BatchNormThroughTime2d(3, 2, step_mode="m")
    y = bntt(x)
    for t in range(3):  # each step has its own BN, no bias
        assert bntt.bn_list[t].bias is None
        ref = nn.functional.batch_norm(x[t], None, None, bntt.bn_list[t].weight, None, True)
        torch.testing.assert_close(y[t], ref)
    with pytest.raises(ValueError, match="reset"):
        bntt(x[:1])
    functional.reset_net(bntt)
    bntt(x[:1])
    tebn = layer.TemporalEffectiveBatchNorm2d(3, 2)
    with torch.no_grad():
        tebn.scale.copy_(torch.tensor([1.0, 2.0, 3.0]))
    ref = nn.functional.batch_norm(x.flatten(0, 1), None, None, tebn.weight, tebn.bias, True).unflatten(0, (3, 4))
    torch.testing.assert_close(tebn(x), ref * torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1, 1))
    td3 = layer.ThresholdDependentBatchNorm3d(alpha=1.0, v_th=0.5, num_features=2)
    torch.testing.assert_close(td3.weight.detach(), torch.full((2,), 0.5))
    assert td3(torch.randn(2, 3, 2, 2, 2, 2)).shape == (2, 3, 2, 2, 2, 2)


def test_spike_count_slots_by_hand():
    counts = torch.tensor([[2.0], [0.0]])  # [T=2, N=1]
    slots = layer.SpikeCountToBinary(3, always_convert=True)(counts.requires_grad_(True))
    torch.testing.assert_close(slots.detach().view(-1), torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0]))
    slots.sum().backward()
    torch.testing.assert_close(counts.grad, torch.ones(2, 1))  # three slots of 1/3 each
    summed = layer.TemporalBinSum(4, always_convert=True)(torch.arange(6.0).view(6, 1))
    torch.testing.assert_close(summed, torch.tensor([[6.0], [9.0]]))  # 0+1+2+3, 4+5+(0+0)
    train = layer.TemporalBinSum(4)
    x = torch.rand(5, 1)
    assert train(x) is x  # identity in training mode by default


def test_dropout_masks_shared_over_time():
    torch.manual_seed(5)
    d = layer.Dropout2d(0.5, step_mode="m")
    y = d(torch.ones(3, 4, 6, 2, 2))
    assert torch.equal(y[0], y[1]) and torch.equal(y[1], y[2])
    per_channel = y[0].flatten(2)
    assert torch.all(per_channel.amax(-1) == per_channel.amin(-1))  # whole channels dropped
    d3 = layer.Dropout2d(step_mode="s")(torch.ones(2, 5, 7))  # [N, C, L] is channel dropout too
    assert torch.all(d3.amax(-1) == d3.amin(-1))
    dc = layer.DropConnectLinear(3, 2, p=0.0, activation=None)
    x = torch.rand(4, 3)
    torch.testing.assert_close(dc(x), nn.functional.linear(x, dc.weight, dc.bias))
    inv = layer.DropConnectLinear(3, 2, p=0.5, invariant=True, step_mode="m")
    y = inv(torch.rand(2, 4, 3))
    assert y.shape == (2, 4, 2) and inv.dropped_w.shape == (4, 2, 3)
    inv.eval()
    assert inv(torch.zeros(4, 3)).shape == (4, 2)  # σ = 0 is fine at inference


def test_attention_shapes_and_gates():
    torch.manual_seed(6)
    x = torch.rand(4, 2, 3, 5, 5)
    ta = layer.TemporalWiseAttention(4, reduction=2, dimension=4)
    y = ta(x)
    ratio = (y / x).flatten(2)  # one gate per (t, n)
    assert torch.allclose(ratio.amax(-1), ratio.amin(-1)) and ((ratio > 0) & (ratio < 1)).all()
    ma = layer.MultiDimensionalAttention(4, 3, reduction_t=2, reduction_c=1)
    assert ma(x).shape == x.shape
    with pytest.raises(ValueError, match="reduction"):
        layer.TemporalWiseAttention(2, reduction=4)


def test_print_shape_module_logs(caplog):
    with caplog.at_level("DEBUG", logger="spikeforge.layer"):
        x = torch.rand(2, 3)
        assert layer.PrintShapeModule("here")(x) is x
    assert "here shape=(2, 3)" in caplog.text


def test_grad_with_trace_by_hand():
    # value from the spikes, weight gradient from the trace: dL/dW = g ⊗ trace for y = W·s
    fc = nn.Linear(3, 2, bias=False)
    spike = torch.tensor([[1.0, 0.0, 1.0]])
    trace = torch.tensor([[1.5, 0.5, 1.0]])
    y = layer.GradwithTrace(fc)([spike, trace])
    torch.testing.assert_close(y, spike @ fc.weight.T)
    g = torch.tensor([[1.0, -2.0]])
    (y * g).sum().backward()
    torch.testing.assert_close(fc.weight.grad, g.T @ trace)
    pooled = layer.SpikeTraceOp(nn.Flatten())([spike.view(1, 3, 1), trace.view(1, 3, 1)])
    torch.testing.assert_close(pooled[1], trace)
    x = torch.rand(2, 3, requires_grad=True)
    z = layer.ReplaceforGrad.apply(x, x.detach() * 0 + 5.0)
    z.sum().backward()
    torch.testing.assert_close(z.detach(), torch.full((2, 3), 5.0))
    torch.testing.assert_close(x.grad, torch.ones(2, 3))


def test_ottt_sequential_routes_spike_and_trace():
    if not hasattr(neuron, "OTTTLIFNode"):
        pytest.skip("spikeforge.neuron.OTTTLIFNode is not available")
    torch.manual_seed(18)
    net = layer.OTTTSequential(nn.Linear(4, 5), neuron.OTTTLIFNode(), nn.Flatten(), nn.Linear(5, 2),
                               neuron.OTTTLIFNode())
    x = torch.rand(3, 4) * 3
    for _ in range(3):
        out = net(x)
    assert isinstance(out, list) and len(out) == 2
    net.eval()
    functional.reset_net(net)
    assert isinstance(net(x), torch.Tensor)


# ---- against SpikingJelly 2.0 in the same process ------------------------------------------------------------


@pytest.fixture(scope="module")
def sjl():
    return pytest.importorskip("spikingjelly.activation_based.layer")


# SpikingJelly 2.0 public layer classes spikeforge does not provide (yet), with the reason
NOT_PROVIDED: set[str] = set()


def _sj_public(sjl):
    names = []
    for name in dir(sjl):
        obj = getattr(sjl, name)
        if not name.startswith("_") and inspect.isclass(obj) and obj.__module__.startswith("spikingjelly"):
            names.append(name)
    return names


def test_every_spikingjelly_layer_exists_or_is_listed(sjl):
    missing = {name for name in _sj_public(sjl) if not hasattr(layer, name)}
    assert missing <= NOT_PROVIDED, sorted(missing - NOT_PROVIDED)


def _params(cls):
    out = []
    for p in inspect.signature(cls).parameters.values():
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY):
            out.append((p.name, p.default))
        elif p.kind is p.VAR_POSITIONAL:
            out.append(("*" + p.name, None))
    return out


def test_constructor_signatures_match_spikingjelly(sjl):
    compared = 0
    for name in _sj_public(sjl):
        if name in NOT_PROVIDED:
            continue
        theirs, ours = _params(getattr(sjl, name)), _params(getattr(layer, name))
        if name == "DropConnectLinear":  # the default activation is a ReLU instance in both
            theirs = [(n, type(d) if isinstance(d, nn.Module) else d) for n, d in theirs]
            ours = [(n, type(d) if isinstance(d, nn.Module) else d) for n, d in ours]
        assert ours == theirs, name
        compared += 1
    assert compared >= 50


def _same_init(sj_cls, sf_cls, *args, **kwargs):
    torch.manual_seed(11)
    a = sj_cls(*args, **kwargs)
    torch.manual_seed(11)
    b = sf_cls(*args, **kwargs)
    b.load_state_dict(a.state_dict())
    return a, b


def _compare(a, b, x, steps=1, reset=None):
    """Same input (fresh leaf per library) → same output and same input/parameter gradients."""
    xa, xb = x.clone().requires_grad_(x.is_floating_point()), x.clone().requires_grad_(x.is_floating_point())
    ya = torch.stack([a(xa) for _ in range(steps)]) if steps > 1 else a(xa)
    yb = torch.stack([b(xb) for _ in range(steps)]) if steps > 1 else b(xb)
    torch.testing.assert_close(yb, ya)
    g = torch.rand_like(ya)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    if xa.requires_grad and xa.grad is not None:
        torch.testing.assert_close(xb.grad, xa.grad)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb
        if pa.grad is not None:
            torch.testing.assert_close(pb.grad, pa.grad, msg=na)


STATEFUL_CASES = [
    ("SynapseFilter", dict(tau=3.0), (5, 2, 4), "spikes"),
    ("SynapseFilter", dict(tau=3.0, learnable=True), (5, 2, 4), "spikes"),
    ("Delay", dict(delay_steps=2), (5, 2, 3), "float"),
    ("NeuNorm", dict(in_channels=2, height=3, width=3, k=0.8), (4, 2, 2, 3, 3), "spikes"),
    ("BatchNormThroughTime2d", dict(T=4, num_features=2), (4, 3, 2, 3, 3), "float"),
    ("BatchNormThroughTime1d", dict(T=4, num_features=2), (4, 3, 2), "float"),
]


@pytest.mark.parametrize("name,kwargs,shape,kind", STATEFUL_CASES)
@pytest.mark.parametrize("mode", ["s", "m"])
def test_stateful_layers_match_spikingjelly(sjl, name, kwargs, shape, kind, mode):
    a, b = _same_init(getattr(sjl, name), getattr(layer, name), **kwargs, step_mode=mode)
    torch.manual_seed(12)
    x = (torch.rand(shape) > 0.5).float() if kind == "spikes" else torch.randn(shape)
    if mode == "m":
        _compare(a, b, x)
    else:
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya = torch.stack([a(xt) for xt in xa])
        yb = torch.stack([b(xt) for xt in xb])
        torch.testing.assert_close(yb, ya)
        ya.square().sum().backward()
        yb.square().sum().backward()
        torch.testing.assert_close(xb.grad, xa.grad)


def test_recurrent_containers_match_spikingjelly(sjl):
    sjn = pytest.importorskip("spikingjelly.activation_based.neuron")
    torch.manual_seed(13)
    x = torch.rand(6, 3, 4)
    a = sjl.ElementWiseRecurrentContainer(sjn.IFNode(), lambda y, x: 0.5 * y + x, step_mode="m")
    b = layer.ElementWiseRecurrentContainer(neuron.IFNode(), lambda y, x: 0.5 * y + x, step_mode="m")
    _compare(a, b, x)
    a, b = _same_init(sjl.LinearRecurrentContainer, layer.LinearRecurrentContainer, nn.Identity(), 4, 4,
                      step_mode="m")
    a.sub_module, b.sub_module = sjn.LIFNode(), neuron.LIFNode()
    _compare(a, b, x)
    a = sjl.StepModeContainer(True, "m", nn.Linear(4, 4), sjn.IFNode())
    b = layer.StepModeContainer(True, "m", nn.Linear(4, 4), neuron.IFNode())
    b.load_state_dict(a.state_dict())
    _compare(a, b, x)


STATELESS_CASES = [
    ("WSConv2d", (2, 3, 3), dict(padding=1, step_mode="m"), (2, 3, 2, 5, 5)),
    ("WSLinear", (4, 3), dict(step_mode="m"), (2, 3, 4)),
    ("VotingLayer", (3,), dict(step_mode="m"), (2, 3, 7)),
    ("TemporalWiseAttention", (4, 2, 4), {}, (4, 2, 3, 5, 5)),
    ("TemporalWiseAttention", (4, 2, 2), {}, (4, 2, 6)),
    ("MultiDimensionalAttention", (4, 3, 2, 1), dict(kernel_size=7), (4, 2, 3, 6, 6)),
    ("TemporalEffectiveBatchNorm2d", (4, 3), {}, (4, 2, 3, 3, 3)),
    ("ThresholdDependentBatchNorm3d", (1.0, 0.5, 2), {}, (2, 3, 2, 2, 2, 2)),
    ("ConvTranspose1d", (2, 3, 3), dict(stride=2, step_mode="m"), (2, 3, 2, 5)),
    ("ConvTranspose3d", (2, 1, 2), dict(step_mode="m"), (2, 1, 2, 3, 3, 3)),
    ("SpikeCountToBinary", (3,), dict(always_convert=True), (2, 3, 4)),
    ("TemporalBinSum", (3,), dict(always_convert=True), (7, 3, 4)),
]


@pytest.mark.parametrize("name,args,kwargs,shape", STATELESS_CASES)
def test_stateless_layers_match_spikingjelly(sjl, name, args, kwargs, shape):
    a, b = _same_init(getattr(sjl, name), getattr(layer, name), *args, **kwargs)
    torch.manual_seed(14)
    x = torch.rand(shape)
    if name == "SpikeCountToBinary":
        x = torch.randint(0, 4, shape).float()
    elif name == "MultiDimensionalAttention":
        x = (x > 0.5).float()  # spikes: ties in the max pools, so the max gradient routing must agree too
    _compare(a, b, x)


def test_time_last_and_unpool_match_spikingjelly(sjl):
    torch.manual_seed(15)
    fc = nn.Linear(3, 4)
    x = torch.rand(2, 3, 5)
    _compare(sjl.TLastSeqToANNContainer(fc), layer.TLastSeqToANNContainer(fc), x)
    _compare(sjl.TLastMultiStepContainer(fc), layer.TLastMultiStepContainer(fc), x)
    x = torch.rand(3, 2, 1, 4, 4)
    y, idx = sjl.MaxPool2d(2, return_indices=True, step_mode="m")(x)
    yb, idxb = layer.MaxPool2d(2, return_indices=True, step_mode="m")(x)
    torch.testing.assert_close(yb, y)
    assert torch.equal(idxb, idx)
    torch.testing.assert_close(layer.MaxUnpool2d(2, step_mode="m")(yb, idxb),
                               sjl.MaxUnpool2d(2, step_mode="m")(y, idx))


def test_drop_connect_matches_spikingjelly_with_the_same_random_stream(sjl):
    a, b = _same_init(sjl.DropConnectLinear, layer.DropConnectLinear, 4, 3, p=0.3, invariant=True, step_mode="m")
    x = torch.rand(3, 2, 4)
    torch.manual_seed(16)
    ya = a(x)
    torch.manual_seed(16)
    yb = b(x)
    torch.testing.assert_close(yb, ya)


@pytest.mark.parametrize("name,shape", [("SpikingSelfAttention", (4, 2, 8, 16)), ("TokenQKAttention", (3, 2, 8, 5)),
                                        ("ChannelQKAttention", (3, 2, 8, 5)),
                                        ("SpikeDrivenSelfAttention", (3, 2, 8, 3, 3))])
def test_spiking_attention_blocks_match_spikingjelly(sjl, name, shape):
    # neuron keyword arguments go to every neuron (a low threshold, so that every LIF layer fires)
    a, b = _same_init(getattr(sjl, name), getattr(layer, name), 8, num_heads=2, v_threshold=0.25)
    assert b.attn_lif.v_threshold == 0.25
    with torch.no_grad():  # and larger BN gains
        for m in a.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(2.0, 4.0)
    b.load_state_dict(a.state_dict())
    torch.manual_seed(17)
    x = (torch.rand(shape) > 0.5).float()
    _compare(a, b, x)
    functional.reset_net(b)
    y = b(x) - (x if name == "SpikeDrivenSelfAttention" else 0)
    assert y.abs().sum() > 0


def test_spiking_attention_blocks_by_hand_shapes():
    x = torch.rand(2, 2, 8, 4)
    for cls in (layer.SpikingSelfAttention, layer.TokenQKAttention, layer.ChannelQKAttention):
        block = cls(8, num_heads=2)
        assert block(x).shape == x.shape
        assert isinstance(block.proj_lif, neuron.LIFNode) and block.proj_lif.step_mode == "m"
        assert block.attn_lif.v_threshold == 0.5
    sdsa = layer.SpikeDrivenSelfAttention(8, 4, spiking_neuron=neuron.IFNode)
    assert isinstance(sdsa.q_lif, neuron.IFNode)
    assert sdsa(torch.rand(2, 1, 8, 2, 2)).shape == (2, 1, 8, 2, 2)
    with pytest.raises(ValueError, match="divisible"):
        layer.SpikingSelfAttention(6, num_heads=4)


def test_ottt_sequential_matches_spikingjelly(sjl):
    if not hasattr(neuron, "OTTTLIFNode"):
        pytest.skip("spikeforge.neuron.OTTTLIFNode is not available")
    sjn = pytest.importorskip("spikingjelly.activation_based.neuron")
    torch.manual_seed(19)
    a = sjl.OTTTSequential(nn.Linear(4, 6), sjn.OTTTLIFNode(), nn.Flatten(), nn.Linear(6, 3), sjn.OTTTLIFNode())
    b = layer.OTTTSequential(nn.Linear(4, 6), neuron.OTTTLIFNode(), nn.Flatten(), nn.Linear(6, 3),
                             neuron.OTTTLIFNode())
    b.load_state_dict(a.state_dict())
    x = torch.rand(5, 2, 4) * 3
    for xt in x:  # online: a backward per step, gradients accumulate
        ya, yb = a(xt), b(xt)
        torch.testing.assert_close(yb[0], ya[0])
        torch.testing.assert_close(yb[1], ya[1])
        ya[0].sum().backward()
        yb[0].sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pb.grad, pa.grad, msg=name)
    assert b[0].weight.grad.abs().sum() > 0
