"""The spiking blocks a conversion produces: IF rate coding, ConversionIFNode options, max-pool, read-out."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from spikeforge.ann2snn import ConversionIFNode, IFActivation, MembraneReadout, SpikingMaxPool
from spikeforge.neuron import IFNode


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


@pytest.mark.parametrize("half, signed", [(False, False), (True, False), (True, True)])
def test_numba_and_torch_neuron_loops_agree(half, signed):
    pytest.importorskip("numba")
    torch.manual_seed(0)
    theta = torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1)
    x_seq = torch.randn(12, 4, 3, 5)
    frame = torch.randn(4, 3, 5)
    outs = {}
    for backend in ("reference", "cpu"):  # the in-place PyTorch loop and the fused numba kernel
        neuron = ConversionIFNode(theta, half_threshold=half, signed=signed, emit_threshold=True,
                                  step_mode="m", backend=backend)
        with torch.no_grad():
            first = neuron(x_seq)
            static = neuron.static_forward(frame, 7)  # state carries over from the first call
            neuron.step_mode = "s"
            single = neuron(frame)
        outs[backend] = (first, static, single, neuron.v)
    for a, b in zip(outs["reference"], outs["cpu"]):
        torch.testing.assert_close(a, b)
