"""Layers (step modes, containers, tdBN), encoders and monitors, plus the published snippets."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from spikeforge import LIFSpike, encoding, functional, layer, monitor, neuron, surrogate, tdBatchNorm, tdLayer


def test_stateless_layers_multi_step_equal_per_step():
    torch.manual_seed(0)
    x_seq = torch.randn(4, 2, 3, 8, 8)
    for single, multi in [
        (nn.Conv2d(3, 5, 3, padding=1), layer.Conv2d(3, 5, 3, padding=1, step_mode="m")),
        (nn.MaxPool2d(2), layer.MaxPool2d(2, step_mode="m")),
        (nn.AvgPool2d(2), layer.AvgPool2d(2, step_mode="m")),
        (nn.AdaptiveAvgPool2d(1), layer.AdaptiveAvgPool2d(1, step_mode="m")),
        (nn.Flatten(), layer.Flatten(step_mode="m")),
    ]:
        multi.load_state_dict(single.state_dict())
        expected = torch.stack([single(x) for x in x_seq])
        torch.testing.assert_close(multi(x_seq), expected)
    lin = layer.Linear(6, 3, step_mode="m")
    x = torch.randn(5, 2, 6)
    torch.testing.assert_close(lin(x), torch.stack([nn.functional.linear(xi, lin.weight, lin.bias) for xi in x]))


def test_batchnorm_multi_step_uses_statistics_over_time_and_batch():
    bn = layer.BatchNorm2d(3, step_mode="m")
    x = torch.randn(4, 2, 3, 5, 5) * 3 + 1
    y = bn(x)
    flat = x.transpose(0, 2).reshape(3, -1)
    mean, var = flat.mean(1).view(1, 1, 3, 1, 1), flat.var(1, unbiased=False).view(1, 1, 3, 1, 1)
    expected = (x - mean) / torch.sqrt(var + 1e-5)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)


def test_td_batchnorm_scales_by_alpha_vth_and_matches_stbp_statistics():
    bn = tdBatchNorm(3, alpha=0.5, v_th=0.4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    x = torch.randn(2, 4, 3, 5, 5)  # [T, N, C, H, W]
    y = bn(x)
    dims = (0, 1, 3, 4)
    mean, var = x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)
    gamma = bn.weight.view(1, 1, 3, 1, 1) * 0.5 * 0.4
    expected = gamma * (x - mean) / torch.sqrt(var + 1e-5) + bn.bias.view(1, 1, 3, 1, 1)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    n = x.numel() / 3
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * var.flatten() * n / (n - 1), atol=1e-5, rtol=1e-5)
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    # STBP's time-last layout gives the same numbers
    bn2 = tdBatchNorm(3, alpha=0.5, v_th=0.4, time_dim=-1)
    bn2.load_state_dict(bn.state_dict())
    bn2.running_var.fill_(1.0), bn2.running_mean.zero_()
    torch.testing.assert_close(bn2(x.movedim(0, -1)).movedim(-1, 0), y)


def test_spikingjelly_threshold_dependent_bn_initialises_weight():
    bn = layer.ThresholdDependentBatchNorm2d(alpha=1.0, v_th=0.5, num_features=4)
    assert torch.all(bn.weight == 0.5)
    assert bn(torch.randn(3, 2, 4, 6, 6)).shape == (3, 2, 4, 6, 6)
    with pytest.raises(ValueError, match="T, N, C"):
        bn(torch.randn(2, 4, 6, 6))


def test_td_layer_applies_layer_per_step_with_stbp_key_names():
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    td = tdLayer(conv, tdBatchNorm(4))
    assert set(td.state_dict()) == {"layer.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                                    "bn.num_batches_tracked"}
    x = torch.randn(3, 2, 1, 6, 6)
    td.eval()
    expected = td.bn(torch.stack([conv(xi) for xi in x]))
    torch.testing.assert_close(td(x), expected)


def test_dropout_uses_one_mask_for_all_steps_until_reset():
    drop = layer.Dropout(0.5, step_mode="m")
    out = drop(torch.ones(6, 4, 50))
    assert torch.equal(out[0], out[5]) and (out[0] == 0).any()
    out2 = drop(torch.ones(6, 4, 50))
    assert torch.equal(out, out2)  # mask kept until reset
    functional.reset_net(nn.Sequential(drop))
    assert drop.mask is None
    drop2d = layer.Dropout2d(0.5, step_mode="s")
    a, b = drop2d(torch.ones(2, 8, 3, 3)), drop2d(torch.ones(2, 8, 3, 3))
    assert torch.equal(a, b) and torch.all(a.amax((2, 3)) == a.amin((2, 3)))
    drop.eval()
    assert torch.equal(drop(torch.ones(2, 3)), torch.ones(2, 3))


def test_containers():
    lin = nn.Linear(5, 3)
    seq = layer.SeqToANNContainer(lin, nn.ReLU())
    x = torch.randn(4, 2, 5)
    torch.testing.assert_close(seq(x), torch.relu(lin(x)))
    node = neuron.IFNode()
    multi = layer.MultiStepContainer(node)
    out = multi(torch.rand(5, 2, 3) * 2)
    reference = neuron.IFNode(step_mode="m")
    functional.reset_net(multi)
    assert torch.equal(multi(torch.ones(3, 1) * 0.6), reference(torch.ones(3, 1) * 0.6))
    assert out.shape == (5, 2, 3)


def test_poisson_encoder_rate_and_bad_input():
    torch.manual_seed(0)
    x = torch.tensor([0.0, 0.25, 0.5, 1.0])
    enc = encoding.PoissonEncoder()
    rate = torch.stack([enc(x) for _ in range(4000)]).mean(0)
    assert rate[0] == 0 and rate[3] == 1
    torch.testing.assert_close(rate[1:3], x[1:3], atol=0.03, rtol=0)
    seq = enc.encode_sequence(x, 4000)
    assert seq.shape == (4000, 4)
    torch.testing.assert_close(seq.mean(0)[1:3], x[1:3], atol=0.03, rtol=0)
    with pytest.raises(ValueError, match="NaN"):
        enc(torch.tensor([float("nan")]))
    with pytest.raises(TypeError, match="floating-point"):
        enc(torch.tensor([1, 2]))


def test_latency_encoder_spike_times():
    enc = encoding.LatencyEncoder(T=5, step_mode="m")
    x = torch.tensor([1.0, 0.5, 0.0])
    spikes = enc(x.expand(5, 3))  # 'm' mode: [T', ...] in, the next T' steps out (SpikingJelly)
    assert spikes.shape == (5, 3) and torch.all(spikes.sum(0) == 1)
    assert torch.equal(spikes, enc.encode_sequence(x))
    assert spikes.argmax(0).tolist() == [0, 2, 4]  # round((T-1)(1-x))
    single = encoding.LatencyEncoder(T=5)
    steps = torch.stack([single(x) for _ in range(5)])
    assert torch.equal(steps, spikes)
    log = encoding.LatencyEncoder(T=5, enc_function="log", step_mode="m")
    assert log.encode_sequence(x).argmax(0).tolist()[0] == 0
    with pytest.raises(ValueError, match="enc_function"):
        encoding.LatencyEncoder(T=5, enc_function="exp")


def test_repeat_encoder():
    x = torch.rand(2, 3)
    out = encoding.RepeatEncoder(4)(x)
    assert out.shape == (4, 2, 3) and torch.equal(out[3], x)


def test_monitors_record_outputs_membranes_and_rates():
    net = nn.Sequential(layer.Linear(4, 6), neuron.LIFNode(store_v_seq=True), layer.Linear(6, 2), neuron.IFNode())
    functional.set_step_mode(net, "m")
    out_mon = monitor.OutputMonitor(net, neuron.BaseNode)
    v_mon = monitor.AttributeMonitor("v_seq", pre_forward=False, net=net, instance=neuron.LIFNode)
    x = torch.rand(5, 3, 4) * 4
    net(x)
    assert out_mon.monitored_layers == ["1", "3"]
    assert len(out_mon["1"]) == 1 and out_mon["1"][0].shape == (5, 3, 6)
    assert v_mon["1"][0].shape == (5, 3, 6)
    rates = monitor.firing_rates(out_mon)
    assert rates["1"] == pytest.approx(out_mon["1"][0].mean().item())
    out_mon.clear_recorded_data()
    assert len(out_mon) == 0
    out_mon.remove_hooks()
    net(x)
    assert len(out_mon) == 0
    with pytest.warns(UserWarning, match="instance"):  # SpikingJelly accepts it silently; spikeforge warns
        monitor.OutputMonitor(net, nn.Conv2d)


def test_published_lif_fc_mnist_snippet_runs_and_learns():
    """The SpingJelly tutorial loop, as written, after `from spikeforge import ...`."""
    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Flatten(),
        layer.Linear(28 * 28, 10, bias=False),
        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()),
    )
    encoder = encoding.PoissonEncoder()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    img = torch.rand(16, 1, 28, 28)
    label = torch.randint(0, 10, (16,))
    label_onehot = nn.functional.one_hot(label, 10).float()
    losses = []
    for _ in range(15):
        out_fr = 0.0
        for _t in range(8):
            out_fr += net(encoder(img))
        out_fr = out_fr / 8
        loss = nn.functional.mse_loss(out_fr, label_onehot)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        functional.reset_net(net)
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_published_stbp_snippet_runs():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
            self.bn1 = tdBatchNorm(8)
            self.conv1_s = tdLayer(self.conv1, self.bn1)
            self.fc = nn.Linear(8 * 4 * 4, 10)
            self.fc_s = tdLayer(self.fc)
            self.pool = tdLayer(nn.AvgPool2d(2))
            self.spike = LIFSpike()

        def forward(self, x):
            x = self.spike(self.conv1_s(x))
            x = self.spike(self.pool(x))
            x = x.flatten(2)
            x = self.spike(self.fc_s(x))
            return x.sum(0) / x.shape[0]

    net = Net()
    x = torch.rand(1, 2, 1, 8, 8).repeat(4, 1, 1, 1, 1)  # direct encoding, T = 4
    out = net(x)
    out.sum().backward()
    assert out.shape == (2, 10) and net.conv1.weight.grad is not None
    assert {"conv1.weight", "conv1_s.layer.weight", "conv1_s.bn.running_var"} <= set(net.state_dict())


@pytest.mark.parametrize("ref_cls, cls, shape, kwargs", [
    (nn.MaxPool2d, layer.MaxPool2d, (3, 4, 9, 10), dict(kernel_size=2)),
    (nn.MaxPool2d, layer.MaxPool2d, (3, 4, 9, 10), dict(kernel_size=3, stride=1, padding=1)),  # overlapping
    (nn.MaxPool1d, layer.MaxPool1d, (3, 4, 11), dict(kernel_size=3, stride=2, ceil_mode=True)),
    (nn.MaxPool3d, layer.MaxPool3d, (2, 3, 5, 6, 7), dict(kernel_size=2, dilation=2)),
])
def test_max_pool_saves_only_indices_and_keeps_the_gradient(ref_cls, cls, shape, kwargs):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    saved_bytes = []

    def pack(t):
        saved_bytes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = cls(**kwargs)(x)
    expected = ref_cls(**kwargs)(x_ref)
    assert torch.equal(out, expected)
    assert sum(saved_bytes) == out.numel() * 4  # int32 indices only, no copy of the input
    g = torch.randn_like(out)
    (out * g).sum().backward()
    (expected * g).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-6, rtol=0)
