"""Weight fake quantisation: the STBP reference's formula, per channel, the STE, prepare_qat on any model."""

from __future__ import annotations

import pytest
import torch
from stbp.helpers import needs_vectors, run_counting_spikes, time_first, vectors
from torch import nn

from spikeforge import layer, neuron, quantize
from spikeforge.models import create_model


def reference_formula(w: torch.Tensor, b: int) -> torch.Tensor:
    # main.py quantize_tensor(tensor, bitwidth, channel_level=False) + rescale, as quoted in the facts file
    s = (2 ** (b - 1) - 1) / w.abs().max()
    y = s * w
    y = (y.round() - y).detach() + y
    return y / s


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantize_tensor_is_the_reference_formula(bits):
    torch.manual_seed(bits)
    w = torch.randn(64, 3, 5, 5) * 0.2
    q = quantize.quantize_tensor(w, bits)
    assert torch.equal(q.view(torch.int32), reference_formula(w, bits).view(torch.int32))  # -0.0 vs +0.0 too
    codes = q * quantize.weight_scale(w, bits)
    qmax = 2 ** (bits - 1) - 1
    assert torch.allclose(codes, codes.round(), atol=1e-3) and codes.abs().max().round() == qmax


@needs_vectors
@pytest.mark.parametrize("bits", [8, 4])
def test_public_quantised_mnistnet(bits):
    entry, q = vectors()["MNISTNet"], vectors()["quant"][bits]
    for name in q["quantized_modules"]:
        w = entry["state_dict"][f"{name}.weight"]
        assert torch.equal(quantize.quantize_tensor(w, bits).view(torch.int32),
                           q["state_dict"][f"{name}.weight"].view(torch.int32)), name
        assert float(quantize.weight_scale(w, bits)) == q["scale"][name]
    model = create_model("stbp_mnistnet", pretrained=entry["state_dict"]).eval()
    quantize.prepare_qat(model, bits)
    out, counts = run_counting_spikes(model, time_first(entry["input"]))
    torch.testing.assert_close(out, q["output_eval"], atol=1e-5, rtol=0)
    assert counts == [c["spikes"] for c in q["lif_spike_counts"]]
    assert torch.equal(model.fc1.weight, entry["state_dict"]["fc1.weight"])  # the float master is untouched


def test_per_channel_and_zero_weights():
    w = torch.tensor([[0.5, -0.25, 0.1], [0.0, 0.0, 0.0], [-2.0, 1.0, 0.3]])
    q = quantize.quantize_tensor(w, 4, per_channel=True)
    s = quantize.weight_scale(w, 4, per_channel=True)
    assert s.shape == (3, 1) and torch.equal(s.view(-1), torch.tensor([14.0, 1.0, 3.5]))
    assert torch.equal(q[1], torch.zeros(3)) and torch.equal((q * s).round(), torch.tensor(
        [[7.0, -4.0, 1.0], [0.0, 0.0, 0.0], [-7.0, 4.0, 1.0]]))  # -3.5 -> -4 (half to even), 1.05 -> 1
    assert torch.equal(quantize.quantize_tensor(torch.zeros(4), 8), torch.zeros(4))


def test_straight_through_gradient():
    w = torch.randn(10, 10, requires_grad=True)
    (quantize.quantize_tensor(w, 4) * torch.arange(10.0)).sum().backward()
    torch.testing.assert_close(w.grad, torch.arange(10.0).expand(10, 10))


def test_prepare_qat_on_any_model_keeps_a_float_master_copy():
    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(1, 4, 3, step_mode="m"), layer.Flatten(step_mode="m"),
                        layer.Linear(4 * 6 * 6, 3, step_mode="m"), neuron.LIFNode(step_mode="m"))
    keys = list(net.state_dict())
    x = torch.rand(2, 5, 1, 8, 8)
    quantize.prepare_qat(net, bits=3, per_channel=True)
    assert list(net.state_dict()) == keys and quantize.is_fake_quant(net[0]) and quantize.is_fake_quant(net[2])
    expected = nn.functional.linear(
        nn.functional.conv2d(x.flatten(0, 1), quantize.quantize_tensor(net[0].weight, 3, True), net[0].bias
                             ).flatten(1), quantize.quantize_tensor(net[2].weight, 3, True), net[2].bias)
    torch.testing.assert_close(net[2](net[1](net[0](x))), expected.view(2, 5, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    net(x).sum().backward()
    opt.step()
    w = net[2].weight.detach()
    codes = w * quantize.weight_scale(w, 3, True)
    assert not torch.allclose(codes, codes.round())  # the parameter itself is never rounded
    with pytest.raises(ValueError, match="already fake-quantised"):
        quantize.prepare_qat(net, bits=3)
    for bad in (1, 17):
        with pytest.raises(ValueError, match="between 2 and 16"):
            quantize.prepare_qat(create_model("stbp_mnistnet"), bits=bad)
    with pytest.raises(TypeError, match="integer number of bits"):
        quantize.prepare_qat(create_model("stbp_mnistnet"), bits=4.5)
    with pytest.raises(TypeError, match="integer_graph"):
        quantize.prepare_qat(net, bits=4, integer=True, input_range=1.0)
