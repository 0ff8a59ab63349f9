"""Spikes saved as bits: exact round trip, the layers found from the neuron description, identical gradients."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from spikeforge import functional, layer, neuron, surrogate
from spikeforge.memory import binary_inputs, bit_spikes, bits, pack_bits, packed_nbytes, remove_bit_spikes, unpack_bits


@pytest.mark.parametrize("numel", [1, 7, 8, 9, 64, 1001])
def test_pack_round_trip(numel):
    gen = torch.Generator().manual_seed(numel)
    x = (torch.rand(numel, generator=gen) < 0.3).double().view(-1)
    packed = pack_bits(x)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_nbytes(numel) == (numel + 7) // 8
    assert torch.equal(unpack_bits(packed, x.shape, x.dtype), x)
    # element 8i + k is bit k of byte i: hand-checked bytes
    assert pack_bits(torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 1])).item() == 0b10000001
    assert pack_bits(torch.tensor([0.0, 1, 1, 0, 0, 0, 0, 0, 1])).tolist() == [0b00000110, 1]
    assert torch.equal(unpack_bits(packed, (numel - numel // 16 * 8,), x.dtype, start=numel // 16 * 8),
                       x[numel // 16 * 8:])
    scaled = unpack_bits(packed, x.shape, torch.float32, torch.tensor(2.5))
    assert torch.equal(scaled, x.float() * 2.5)


def conv_net(dropout=False, smooth=False):
    torch.manual_seed(0)
    sg = surrogate.Sigmoid(alpha=4.0, spiking=not smooth)
    return nn.Sequential(
        layer.SeqToANNContainer(layer.Conv2d(1, 4, 3, padding=1, bias=False), layer.BatchNorm2d(4)),
        neuron.LIFNode(step_mode="m", surrogate_function=sg),
        *([layer.Dropout(0.25, step_mode="m")] if dropout else []),
        layer.SeqToANNContainer(layer.MaxPool2d(2), layer.Conv2d(4, 6, 3, padding=1), layer.BatchNorm2d(6)),
        neuron.IFNode(step_mode="m", surrogate_function=sg),
        layer.SeqToANNContainer(layer.AvgPool2d(2), layer.Flatten(), layer.Linear(6 * 2 * 2, 5)),
        neuron.LIFNode(step_mode="m", surrogate_function=sg),
        layer.Flatten(step_mode="m"),
        layer.Linear(5, 3, step_mode="m"),
    ).double()


def _grads(net, x, seed=3):
    functional.reset_net(net)
    torch.manual_seed(seed)
    x = x.clone().requires_grad_(True)
    out = net(x)
    (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()] + [x.grad.clone()]
    net.zero_grad()
    functional.reset_net(net)
    return out.detach(), grads


def test_found_from_the_spec():
    net = conv_net()
    found = binary_inputs(net)
    pool, conv2 = net[2][0], net[2][1]
    assert set(found) == {pool, conv2, net[7]}  # behind neurons; not the first conv, not after AvgPool
    assert all(v is None for v in found.values())
    smooth = conv_net(smooth=True)
    assert binary_inputs(smooth) == {}  # spiking=False surrogates emit graded values: ordinary path


@pytest.mark.parametrize("dropout", [False, True])
def test_gradients_identical(dropout):
    net = conv_net(dropout)
    packed_net = copy.deepcopy(net)
    changed = bit_spikes(packed_net)
    assert len(changed) == 3
    if dropout:
        found = binary_inputs(packed_net)
        assert found[packed_net[3][0]] is packed_net[2] and found[packed_net[3][1]] is packed_net[2]
    assert [k for k, _ in packed_net.state_dict().items()] == [k for k, _ in net.state_dict().items()]
    x = torch.rand(5, 2, 1, 8, 8, dtype=torch.float64) * 3
    out_a, grads_a = _grads(net, x)
    out_b, grads_b = _grads(packed_net, x)
    assert torch.equal(out_a, out_b)
    for a, b in zip(grads_a, grads_b):
        assert torch.equal(a, b)
    remove_bit_spikes(packed_net)
    assert all(type(m) in (layer.MaxPool2d, layer.Conv2d, layer.Linear) for m in changed)


def test_saved_as_bits(monkeypatch):
    """The spike inputs really are stored packed: every element of them goes through pack_bits once."""
    net = conv_net()
    bit_spikes(net)
    packed = []
    original = bits.pack_bits

    def counting(t):
        packed.append(t.numel())
        return original(t)

    monkeypatch.setattr(bits, "pack_bits", counting)
    T, N = 3, 2
    _grads(net, torch.rand(T, N, 1, 8, 8, dtype=torch.float64) * 3)
    assert sorted(packed) == sorted([T * N * 4 * 8 * 8, T * N * 4 * 4 * 4, T * N * 5])


def test_no_grad_and_unknown_producers_keep_the_plain_path():
    net = nn.Sequential(layer.Linear(4, 4, step_mode="m"), layer.BatchNorm1d(4, step_mode="m"),
                        layer.Linear(4, 2, step_mode="m"))
    assert bit_spikes(net) == []
    net = conv_net()
    bit_spikes(net)
    with torch.no_grad():
        functional.reset_net(net)
        out = net(torch.rand(2, 2, 1, 8, 8, dtype=torch.float64))
    assert out.shape == (2, 2, 3)


def test_torch_and_numba_paths_agree(monkeypatch):
    """Without numba the torch ops give the same bytes, values and pooling gradient."""
    x = (torch.rand(3, 4, 6, 6, generator=torch.Generator().manual_seed(1)) < 0.4).float() * 2.0
    fast_packed = pack_bits(x)
    fast_values = unpack_bits(fast_packed, x.shape, x.dtype, torch.tensor(2.0))
    pool = layer.MaxPool2d(2)
    bit_pool = copy.deepcopy(pool)
    bit_spikes(nn.Sequential(neuron.IFNode(), bit_pool))
    g = torch.randn(3, 4, 3, 3)
    grads = []
    for i, module in enumerate((pool, bit_pool, bit_pool)):
        if i == 2:
            monkeypatch.setattr(bits._fast, "numba", None)  # the second bit-pool run: torch only
        xr = x.clone().requires_grad_(True)
        module(xr).backward(g)
        grads.append(xr.grad)
    assert torch.equal(pack_bits(x), fast_packed)
    assert torch.equal(unpack_bits(fast_packed, x.shape, x.dtype, torch.tensor(2.0)), fast_values)
    assert torch.equal(fast_values, x)
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])
