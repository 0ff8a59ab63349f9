"""ANN -> SNN conversion: BN folding, IF rate coding, graph conversion, spiking max-pool, errors, evaluation."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from spikeforge import functional
from spikeforge.ann2snn import (
    ConversionIFNode,
    Converter,
    IFActivation,
    MembraneReadout,
    SpikingMaxPool,
    UnsupportedNodeError,
    evaluate,
    fold_batchnorm,
    plot_accuracy_vs_T,
    trace,
)
from spikeforge.neuron import IFNode


def _randomise_bn(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
    return model.eval()


def _loader(x: torch.Tensor, batch: int = 32):
    return [(x[i:i + batch], torch.zeros(len(x[i:i + batch]), dtype=torch.long)) for i in range(0, len(x), batch)]


def _convert(model, x, **kw):
    kw.setdefault("momentum", None)  # whole-data max: no calibration sample is clipped
    return Converter(_loader(x), progress=False, **kw)(model)


def _rate(snn, x, steps):
    functional.reset_net(snn)
    return snn.run_static(x, steps).mean(0)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(2, 6, 3, padding=1)
        self.conv1 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()  # called at two places: each call site needs its own neurons
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        x = F.relu(self.conv0(x))
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        out = self.relu(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.head(out)


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding=1)
        self.b = nn.Conv2d(2, 3, 1)
        self.bn = nn.BatchNorm2d(7)
        self.fc = nn.Linear(7 * 4 * 4, 5)

    def forward(self, x):
        y = torch.cat([torch.relu(self.a(x)), self.b(x).clamp(min=0)], dim=1)
        y = self.bn(y).relu()  # lone BN: its input is a concatenation
        y = F.avg_pool2d(y, 2)
        return self.fc(y.view(y.size(0), -1))


class MaxPoolNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 2 * 2, 3)

    def forward(self, x):
        x = self.pool(nn.functional.relu6(self.conv1(x)))
        x = F.max_pool2d(F.hardtanh(self.conv2(x), 0.0, 2.0), 2)
        return self.fc(torch.flatten(x, 1))


# --------------------------------------------------------------------------------------- BN folding
@pytest.mark.parametrize("fuse", [True, False])
def test_batchnorm_folding_is_exact(fuse):
    torch.manual_seed(0)
    models = [
        nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 4, 3, bias=False),
                      nn.BatchNorm2d(4)),
        nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.BatchNorm1d(7)),
        Concat(),
    ]
    inputs = [torch.randn(6, 3, 8, 8), torch.randn(6, 3, 2, 2), torch.randn(6, 2, 8, 8)]
    for model, x in zip(models, inputs):
        model = _randomise_bn(model)
        folded = fold_batchnorm(trace(model), fuse=fuse)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
        with torch.no_grad():
            torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


def test_folded_weights_match_formula():
    conv, bn = nn.Conv2d(1, 2, 1), _randomise_bn(nn.BatchNorm2d(2))
    folded = fold_batchnorm(trace(nn.Sequential(conv, bn)))
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(folded.get_submodule("0").weight, conv.weight * s.view(-1, 1, 1, 1))
    torch.testing.assert_close(folded.get_submodule("0").bias, (conv.bias - bn.running_mean) * s + bn.bias)


# ------------------------------------------------------------------------------------ IF rate coding
@pytest.mark.parametrize("steps", [16, 128, 1024])
def test_if_rate_tends_to_clipped_relu(steps):
    z = torch.linspace(-0.2, 1.2, 57)
    neuron = IFNode(v_reset=None, step_mode="m")
    rate = neuron(z.expand(steps, -1)).mean(0)
    # soft reset loses no charge, so the count is floor(t z) for z in [0, 1]: error below 1/T
    assert (rate - z.clamp(0, 1)).abs().max().item() <= 1.0 / steps + 1e-6


def test_conversion_if_node_options_bound_the_count():
    z = torch.linspace(-0.2, 1.2, 57) + 0.003  # keeps t*z away from integers, where rounding could flip
    steps = 10
    for half in (False, True):
        neuron = ConversionIFNode(half_threshold=half, step_mode="m")
        counts = neuron(z.expand(steps, -1)).sum(0)
        total = steps * z.clamp(0, 1)
        expected = torch.floor(total + (0.5 if half else 0.0)).clamp(0, steps)
        torch.testing.assert_close(counts, expected)


def test_signed_spikes_take_back_over_firing():
    # +1 then -1 repeatedly: the plain IF fires on the first step and never recovers; the signed neuron
    # cancels that spike, so its net count tracks the (zero) accumulated input.
    x = torch.tensor([1.0, -1.0] * 4).view(-1, 1)
    plain = ConversionIFNode(step_mode="m")(x).sum()
    signed = ConversionIFNode(signed=True, step_mode="m")(x)
    assert plain.item() == 1.0
    assert signed.sum().item() == 0.0
    assert set(signed.flatten().tolist()) <= {-1.0, 0.0, 1.0}


def test_if_activation_scales_in_and_out():
    block = IFActivation(torch.tensor(2.0), IFNode(v_reset=None))
    out = torch.stack([block(torch.full((3,), 1.5)) for _ in range(8)])
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    torch.testing.assert_close(out.mean(0), torch.full((3,), 1.5))


# ------------------------------------------------------------------------- stateful spiking blocks
def test_spiking_maxpool_is_exact_on_accumulated_input():
    torch.manual_seed(0)
    pool = SpikingMaxPool(nn.MaxPool2d(2), step_mode="m")
    pool.seq_len = 12
    spikes = (torch.rand(12, 3, 2, 4, 4) < 0.4).float() * 0.7
    out = pool(spikes.flatten(0, 1)).view(12, 3, 2, 2, 2)
    cumulative_in = spikes.cumsum(0)
    expected = torch.stack([F.max_pool2d(c, 2) for c in cumulative_in])
    torch.testing.assert_close(out.cumsum(0), expected)
    assert torch.minimum(out.abs(), (out - 0.7).abs()).max() < 1e-5  # still (scaled) spikes


def test_membrane_readout_outputs_clipped_accumulated_input():
    torch.manual_seed(0)
    x = torch.randn(9, 5) * 2
    readout = MembraneReadout(clip=1.5, step_mode="m")
    readout.seq_len = 9
    out = readout(x)
    t = torch.arange(1, 10).view(-1, 1).float()
    expected = torch.minimum(x.cumsum(0).clamp_min(0), 1.5 * t)
    torch.testing.assert_close(out.cumsum(0), expected)


# ------------------------------------------------------------------------------- whole conversions
def _assert_rate_converges(model, x, **kw):
    with torch.no_grad():
        ref = model(x)
        snn = _convert(model, x, **kw)
        errors = [(_rate(snn, x, t) - ref).abs().max().item() for t in (16, 128, 1024)]
    scale = ref.abs().max().item()
    assert errors[2] < errors[0], errors
    assert errors[2] < 0.05 * scale, (errors, scale)
    return snn


def test_mlp_output_rate_approaches_ann():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 16), nn.ReLU(),
                        nn.Linear(16, 4), nn.ReLU()).eval()
    _assert_rate_converges(mlp, torch.rand(64, 10))


@pytest.mark.parametrize("options", [{}, {"half_threshold": True}, {"channel_wise": True},
                                     {"signed_spikes": True, "readout": "membrane"}])
def test_cnn_output_rate_approaches_ann(options):
    torch.manual_seed(0)
    cnn = _randomise_bn(nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
                                      nn.Conv2d(6, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
                                      nn.Flatten(), nn.Linear(6, 5), nn.ReLU()))
    _assert_rate_converges(cnn, torch.rand(48, 1, 10, 10), **options)


def test_residual_graph_converts_and_runs():
    torch.manual_seed(0)
    model = _randomise_bn(Residual())
    snn = _assert_rate_converges(model, torch.rand(32, 2, 6, 6))
    neurons = [m for m in snn.modules() if isinstance(m, IFActivation)]
    assert len(neurons) == 3  # F.relu + two call sites of the shared nn.ReLU


def test_concat_graph_converts_and_runs():
    torch.manual_seed(0)
    _assert_rate_converges(_randomise_bn(Concat()), torch.rand(32, 2, 8, 8))


def test_maxpool_graph_converts_and_runs():
    torch.manual_seed(0)
    model = MaxPoolNet().eval()
    x = torch.rand(32, 1, 8, 8)
    snn = _assert_rate_converges(model, x)
    assert sum(isinstance(m, SpikingMaxPool) for m in snn.modules()) == 2
    scales = [m.scale.item() for m in snn.modules() if isinstance(m, IFActivation)]
    assert scales[0] <= 6.0 and scales[1] <= 2.0  # the clip of ReLU6 / Hardtanh(0, 2) caps the threshold


def test_single_step_multi_step_and_static_agree():
    torch.manual_seed(0)
    snn = _convert(_randomise_bn(Residual()), torch.rand(32, 2, 6, 6), half_threshold=True)
    x = torch.rand(5, 2, 6, 6)
    functional.reset_net(snn)
    single = torch.stack([snn(x) for _ in range(7)])
    functional.reset_net(snn)
    functional.set_step_mode(snn, "m")
    multi = torch.cat([snn(x.expand(3, *x.shape)), snn(x.expand(4, *x.shape))])
    functional.reset_net(snn)
    static = snn.run_static(x, 7)
    torch.testing.assert_close(multi, single)
    torch.testing.assert_close(static, single)


def test_modes_set_the_scale():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU()).eval()
    x = torch.randn(200, 4)
    act = model(x).detach().flatten()
    for mode, expected in [("max", act.max()), (0.5, act.max() * 0.5),
                           ("99%", act.kthvalue(math.ceil(0.99 * act.numel())).values)]:
        snn = Converter([x], mode=mode, progress=False)(model)
        block = next(m for m in snn.modules() if isinstance(m, IFActivation))
        torch.testing.assert_close(block.scale, expected)


def test_momentum_averages_batch_statistics():
    model = nn.Sequential(nn.ReLU())
    batches = [torch.full((2, 3), 1.0), torch.full((2, 3), 3.0)]
    snn = Converter(batches, mode="max", momentum=0.1, progress=False)(model)
    scale = next(m for m in snn.modules() if isinstance(m, IFActivation)).scale
    torch.testing.assert_close(scale, torch.tensor(0.9 * 1.0 + 0.1 * 3.0))


# ------------------------------------------------------------------------------------------- errors
class _Mul(nn.Module):
    def forward(self, x):
        return torch.relu(x) * x


class _Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return torch.sigmoid(self.fc(x)).relu()


@pytest.mark.parametrize("model, name", [
    (nn.Sequential(nn.Linear(3, 3), nn.GELU()), "'1'"),
    (_Sigmoid(), "'sigmoid'"),
    (_Mul(), "'mul'"),
    (nn.Sequential(nn.Linear(3, 3), nn.Hardtanh()), "'1'"),
    (nn.Sequential(nn.Linear(3, 3), nn.LeakyReLU()), "'1'"),
])
def test_unsupported_nodes_raise_with_their_name(model, name):
    with pytest.raises(UnsupportedNodeError, match=name) as info:
        Converter([torch.randn(4, 3)], progress=False)(model)
    assert "after" in str(info.value)  # the message says where the node sits


def test_clamp_with_negative_floor_raises():
    class Clamp(nn.Module):
        def forward(self, x):
            return x.clamp(min=-1.0)

    with pytest.raises(UnsupportedNodeError, match="clamp"):
        Converter([torch.randn(4, 3)], progress=False)(Clamp())


@pytest.mark.parametrize("kwargs, arg", [
    ({"mode": "median"}, "mode"), ({"mode": 1.5}, "mode"), ({"mode": "150%"}, "mode"),
    ({"momentum": 2.0}, "momentum"), ({"readout": "voltage"}, "readout"), ({"dataloader": None}, "dataloader"),
])
def test_bad_arguments_name_the_argument(kwargs, arg):
    kwargs = {"dataloader": [torch.randn(2, 3)], **kwargs}
    with pytest.raises(ValueError, match=arg):
        Converter(**kwargs)


# --------------------------------------------------------------------------------------- evaluation
def test_evaluate_matches_a_manual_single_step_loop():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3), nn.ReLU()).eval()
    x, y = torch.rand(40, 6), torch.randint(0, 3, (40,))
    snn = _convert(model, x)
    loader = [(x[:25], y[:25]), (x[25:], y[25:])]
    result = evaluate(snn, loader, [3, 1, 7], max_merged_batch=50)  # chunks of 2 steps cross T=3 and T=7
    assert list(result) == [1, 3, 7]
    for steps in (1, 3, 7):
        correct = 0
        for xb, yb in loader:
            functional.reset_net(snn)
            total = sum(snn(xb) for _ in range(steps))
            correct += (total.argmax(1) == yb).sum().item()
        assert result[steps] == pytest.approx(100.0 * correct / 40)
    with pytest.raises(ValueError, match="T_list"):
        evaluate(snn, loader, [0, 4])


def test_plot_accuracy_vs_t_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_accuracy_vs_T({"max": {8: 90.0, 16: 95.0}, "99.9%": {8: 93.0, 16: 97.0}}, tmp_path / "acc.png",
                              ann_accuracy=98.0)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_fused_neuron_matches_core_ifnode_between_scalers():
    torch.manual_seed(0)
    model = _randomise_bn(Residual())
    x = torch.rand(16, 2, 6, 6)
    fused = _convert(model, x, neuron="fused")
    core = _convert(model, x, neuron="core")
    assert any(isinstance(m, IFNode) for m in core.modules())
    assert not any(isinstance(m, IFNode) for m in fused.modules())
    torch.testing.assert_close(_rate(fused, x, 32), _rate(core, x, 32), atol=1e-5, rtol=1e-5)


def test_channel_wise_thresholds_follow_each_channel():
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU()).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, 2.0, 4.0]).view(3, 1, 1, 1))
        model[0].bias.zero_()
    x = torch.rand(8, 1, 4, 4)
    snn = _convert(model, x, channel_wise=True)
    block = next(m for m in snn.modules() if isinstance(m, IFActivation))
    torch.testing.assert_close(block.scale.flatten(), x.max() * torch.tensor([1.0, 2.0, 4.0]))


@pytest.mark.parametrize("half, signed", [(False, False), (True, False), (True, True)])
def test_numba_and_torch_neuron_loops_agree(half, signed):
    pytest.importorskip("numba")
    torch.manual_seed(0)
    theta = torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1)
    x_seq = torch.randn(12, 4, 3, 5)
    frame = torch.randn(4, 3, 5)
    outs = {}
    for backend in ("torch", "numba"):
        neuron = ConversionIFNode(theta, half_threshold=half, signed=signed, emit_threshold=True,
                                  step_mode="m", backend=backend)
        with torch.no_grad():
            first = neuron(x_seq)
            static = neuron.static_forward(frame, 7)  # state carries over from the first call
            neuron.step_mode = "s"
            single = neuron(frame)
        outs[backend] = (first, static, single, neuron.v)
    for a, b in zip(outs["torch"], outs["numba"]):
        torch.testing.assert_close(a, b)
