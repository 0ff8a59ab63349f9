"""Checkpointing through time: gradients, outputs and the carried state equal plain BPTT's."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from spikeforge import functional, layer, neuron
from spikeforge.errors import UsageError
from spikeforge.memory import bit_spikes, checkpoint_time, chunk_bounds, remove_checkpoint_time


def time_local_net():
    torch.manual_seed(0)
    net = nn.Sequential(
        layer.SeqToANNContainer(layer.Conv2d(1, 4, 3, padding=1)),
        neuron.LIFNode(tau=2.0, step_mode="m"),
        layer.Dropout(0.3, step_mode="m"),
        layer.SeqToANNContainer(layer.MaxPool2d(2), layer.Conv2d(4, 4, 3, padding=1)),
        neuron.ParametricLIFNode(step_mode="m", v_reset=None),
        layer.SeqToANNContainer(layer.Flatten(), layer.Linear(4 * 4 * 4, 3)),
        neuron.IFNode(step_mode="m"),
    ).double()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(4.0)
                m.bias.add_(0.3)
    return net


def run(net, x, seed=7):
    torch.manual_seed(seed)  # the dropout mask
    x = x.clone().requires_grad_(True)
    out = net(x)
    (out * torch.arange(1.0, out.shape[-1] + 1, dtype=out.dtype)).sum().backward()
    state = [m.v.detach().clone() for m in net.modules() if isinstance(m, neuron.BaseNode)]
    grads = [p.grad.clone() for p in net.parameters()] + [x.grad.clone()]
    net.zero_grad()
    functional.reset_net(net)
    return out.detach(), grads, state


def test_chunk_bounds():
    assert chunk_bounds(7, chunk_size=3) == [(0, 3), (3, 6), (6, 7)]
    assert chunk_bounds(8, segments=3) == [(0, 3), (3, 6), (6, 8)]
    with pytest.raises(UsageError):
        chunk_bounds(8)


@pytest.mark.parametrize("kwargs", [dict(chunk_size=1), dict(chunk_size=3), dict(segments=2)])
def test_equals_plain_bptt(kwargs):
    x = torch.rand(7, 2, 1, 8, 8, dtype=torch.float64) * 2.5
    plain = time_local_net()
    chunked = checkpoint_time(copy.deepcopy(plain), **kwargs)
    out_a, grads_a, state_a = run(plain, x)
    out_b, grads_b, state_b = run(chunked, x)
    assert torch.equal(out_a, out_b)
    assert out_a.abs().sum() > 0  # the net fires, the comparison is not vacuous
    for a, b in zip(state_a + grads_a, state_b + grads_b):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert [k for k in chunked.state_dict()] == [k for k in plain.state_dict()]
    remove_checkpoint_time(chunked)
    assert type(chunked) is nn.Sequential


def test_through_depth_blocks():
    """segments=1 on each block: checkpointing through depth, the state carried through each block's call."""
    x = torch.rand(5, 2, 1, 8, 8, dtype=torch.float64) * 2.5
    plain = time_local_net()
    blocks = copy.deepcopy(plain)
    for i in (0, 3, 5):
        checkpoint_time(blocks[i], segments=1)
    checkpoint_time(blocks[1], segments=1)  # a neuron alone
    out_a, grads_a, state_a = run(plain, x)
    out_b, grads_b, state_b = run(blocks, x)
    assert torch.equal(out_a, out_b)
    for a, b in zip(state_a + grads_a, state_b + grads_b):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_with_bit_spikes_and_in_eval():
    x = torch.rand(6, 2, 1, 8, 8, dtype=torch.float64) * 2.5
    plain = time_local_net()
    both = copy.deepcopy(plain)
    bit_spikes(both)
    checkpoint_time(both, 2)
    _, grads_a, _ = run(plain, x)
    _, grads_b, _ = run(both, x)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), both.eval()(x))


def bn_net():
    torch.manual_seed(1)
    return nn.Sequential(layer.SeqToANNContainer(layer.Linear(5, 6), layer.BatchNorm1d(6)),
                         neuron.LIFNode(step_mode="m"), layer.Linear(6, 2, step_mode="m")).double()


def test_batch_norm_refused_unless_per_chunk():
    with pytest.raises(UsageError, match="BatchNorm"):
        checkpoint_time(bn_net(), 2)
    x = torch.randn(6, 4, 5, dtype=torch.float64) + 0.5
    # per_chunk: the reference is the plain net called on each chunk in turn, its graph kept through the state
    reference = bn_net()
    chunked = checkpoint_time(bn_net(), 2, batch_norm="per_chunk")
    xr = x.clone().requires_grad_(True)
    out_r = torch.cat([reference(xr[t:t + 2]) for t in range(0, 6, 2)])
    (out_r * 1.5).sum().backward()
    xc = x.clone().requires_grad_(True)
    (chunked(xc) * 1.5).sum().backward()
    for a, b in zip(list(reference.parameters()) + [xr], list(chunked.parameters()) + [xc]):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)
    bn_r, bn_c = reference[0][1], chunked[0][1]  # the recomputation did not update the running statistics again
    assert int(bn_c.num_batches_tracked) == 3 == int(bn_r.num_batches_tracked)
    torch.testing.assert_close(bn_r.running_mean, bn_c.running_mean, rtol=1e-12, atol=1e-12)


def test_bad_arguments():
    with pytest.raises(UsageError, match="chunk_size"):
        checkpoint_time(time_local_net(), 0)
    with pytest.raises(UsageError, match="exactly one"):
        checkpoint_time(time_local_net())
