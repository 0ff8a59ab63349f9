"""The integer fake-quant model: its equations by hand, BatchNorm folding, and spike-exact agreement with the
exported integer network (MNISTNet 8/4 bit, per tensor and per channel; a small STBP ResNet with residuals)."""

from __future__ import annotations

import pytest
import torch

from spikeforge import quantize
from spikeforge.layer import tdBatchNorm, tdLayer
from spikeforge.models import create_model
from spikeforge.models.stbp import STBPResNet18
from spikeforge.neuron import LIFSpike
from spikeforge.quantize.integer import NeuronQuant, fold_batchnorm_into

from .helpers import MNIST_RANGE, mnist_batch, scaled_mnistnet


def test_leak_fraction():
    assert quantize.leak_fraction(0.25, 8) == (1, 2, True)   # a right shift by 2
    assert quantize.leak_fraction(0.75, 8) == (3, 2, True)
    assert quantize.leak_fraction(0.3, 8) == (77, 8, False)  # round(0.3 * 256)
    assert quantize.leak_fraction(0.0, 8) == (0, 0, True) and quantize.leak_fraction(1.0, 8) == (1, 0, True)


def test_integer_neuron_by_hand():
    lif = LIFSpike(tau=0.25, v_th=0.4)
    # after a 2x2 pool (grid 4) with F = 2: units of 1/16, threshold floor(0.4 * 16) = 6
    q = NeuronQuant("n", lif, lif.spec, [], 4.0, frac_bits=2, leak_mult=1, leak_shift=2, membrane_bits=5)
    assert float(q.threshold()) == 6.0
    x = torch.tensor([[0.25, 0.25, 1.0, -1.0], [0.5, 0.25, 1.0, -1.0], [0.0, 0.25, 1.0, -0.25]]).view(3, 1, 4)
    with torch.no_grad():
        spikes = q.forward(x)
    # column 0: U = 4, then floor(4/4) + 8 = 9 > 6 fires, then reset: 0 + 0
    # column 1: 4, 1 + 4 = 5, floor(5/4) + 4 = 5: never fires
    # column 2: 16 saturates at 15 (5-bit membrane) and fires every step (reset each time)
    # column 3: -16, floor(-16/4) - 16 = -20 -> -16 (saturated), floor(-16/4) - 4 = -8
    assert spikes.view(3, 4).tolist() == [[0, 0, 1, 0], [1, 0, 1, 0], [0, 0, 1, 0]]
    strict_tie = NeuronQuant("n", lif, lif.spec.replace(v_threshold=0.5), [], 4.0, 2, 1, 2, 16)
    tie = NeuronQuant("n", lif, lif.spec.replace(v_threshold=0.5, fire_on_tie=True), [], 4.0, 2, 1, 2, 16)
    assert float(strict_tie.threshold()) == 8.0 and float(tie.threshold()) == 7.0  # U > 8 vs U >= 8


def test_tdbn_folding_matches_eval_output():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 6, 3, padding=1, bias=False)
    bn = tdBatchNorm(6, alpha=2 ** -0.5, v_th=0.4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.2, 0.2)
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 4, 3, 8, 8)
    expected = tdLayer(conv, bn.eval())(x)
    fold_batchnorm_into(conv, bn)
    assert list(bn.state_dict()) == [] and conv.bias is not None
    torch.testing.assert_close(tdLayer(conv, bn)(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bits, per_channel", [(8, False), (4, False), (4, True)])
def test_mnistnet_integer_export_spikes_identical(bits, per_channel):
    model = scaled_mnistnet()
    quantize.prepare_qat(model, bits, per_channel, integer=True, input_range=MNIST_RANGE)
    x, y = mnist_batch(24)
    x = torch.cat([x, 4.0 * torch.randn(4, 1, 28, 28)])  # also inputs outside the quantiser's range
    net = quantize.export_integer(model)
    result = quantize.compare_spikes(model, net, x, torch.cat([y, y[:4]]), batch_size=16)
    assert result["mismatched_positions"] == 0 and result["output_counts_identical"]
    assert result["spikes_fake"] > 0.05 * result["spike_positions"]  # the layers do fire
    assert all(result["spikes_fake"] > 0 for _ in [0]) and result["fake_quant_acc"] == result["integer_acc"]
    assert net.run(x).dtype == torch.int64 and net.run(x).shape == (28, 10)
    # the model now computes with integer weights, thresholds and leak
    plan = model.integer_plan
    thresholds = [float(q.threshold().max()) for q in plan.neurons()]
    assert all(t == int(t) for t in thresholds)
    assert plan.neurons()[1].leak_mult == 1 and plan.neurons()[1].leak_shift == 2


def test_training_path_trains_and_agrees_with_the_exact_path():
    model = scaled_mnistnet()
    quantize.prepare_qat(model, 4, integer=True, input_range=MNIST_RANGE)
    x, y = mnist_batch(16)
    out = model(x)
    torch.nn.functional.cross_entropy(out, y).backward()
    assert model.conv1.weight.grad.abs().sum() > 0 and model.fc1.bias.grad.abs().sum() > 0
    with torch.no_grad():
        exact = model(x)
    assert (out.detach() != exact).float().mean() < 0.02  # float32 vs float64 roundings only


def test_residual_network_with_batchnorm_exports_exactly():
    torch.manual_seed(1)
    model = STBPResNet18(num_blocks=(1, 2, 1))  # downsample shortcuts, and an identity one in layer2.1
    with torch.no_grad():  # BatchNorm statistics of a "trained" network, so that the layers fire
        for m in model.modules():
            if isinstance(m, tdBatchNorm):
                m.weight.uniform_(2.0, 3.0), m.bias.uniform_(0.0, 0.3), m.running_var.uniform_(0.02, 0.05)
    model.eval()
    quantize.prepare_qat(model, 8, per_channel=True, integer=True, input_range=2.5, input_size=(3, 8, 8))
    assert all(len(bn.state_dict()) == 0 for bn in (model.bn1, model.layer1[0].bn2))  # folded
    net = quantize.export_integer(model)
    ops = [n["op"] for n in net.nodes]
    assert ops.count("global_sumpool") == 1 and ops.count("identity") == 1
    result = quantize.compare_spikes(model, net, torch.randn(2, 3, 8, 8))
    assert result["mismatched_positions"] == 0 and result["output_counts_identical"]
    assert all(result["per_layer"][n] == 0 for n in ("layer2.1.lif2", "lif_fc1")) and result["spikes_fake"] > 0


def test_preparation_errors_are_named():
    with pytest.raises(ValueError, match="input_range"):
        quantize.prepare_qat(create_model("stbp_mnistnet"), 8, integer=True)
    model = quantize.prepare_qat(create_model("stbp_mnistnet"), 8, integer=True, input_range=3.0)
    with pytest.raises(ValueError, match="already prepared"):
        quantize.prepare_qat(model, 8, integer=True, input_range=3.0)
    with pytest.raises(ValueError, match="not integer-prepared"):
        quantize.export_integer(quantize.prepare_qat(create_model("stbp_mnistnet"), 8))
    with pytest.raises(ValueError, match="frac_bits gives no value for neuron 'conv1_lif'"):
        quantize.prepare_qat(create_model("stbp_mnistnet"), 8, integer=True, input_range=3.0, frac_bits={})
    again = quantize.prepare_qat(create_model("stbp_mnistnet"), 8, integer=True, input_range=3.0,
                                 frac_bits=model.integer_plan.frac_bits())
    assert again.integer_plan.frac_bits() == model.integer_plan.frac_bits()
