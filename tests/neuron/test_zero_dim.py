"""A neuron fed 0-d tensors in single-step mode (SpikingJelly's recurrent-container docstring example)."""

import torch

from spikeforge import layer, neuron


def test_lif_on_zero_dim_input_matches_the_hand_trace():
    node = neuron.LIFNode(tau=2.0)
    s0 = node(torch.tensor(1.5))  # H = 0 + (1.5 - 0) / 2 = 0.75 < 1
    assert s0.shape == () and s0.item() == 0.0 and node.v.shape == ()
    assert node.v.item() == 0.75
    s1 = node(torch.tensor(0.9))  # H = 0.75 + (0.9 - 0.75) / 2 = 0.825
    assert s1.item() == 0.0 and abs(node.v.item() - 0.825) < 1e-7
    s2 = node(torch.tensor(1.4))  # H = 0.825 + (1.4 - 0.825) / 2 = 1.1125 >= 1: spike, hard reset to 0
    assert s2.item() == 1.0 and node.v.item() == 0.0


def test_element_wise_recurrent_container_docstring_example():
    # IF with soft reset, its own spike fed back: 1.5 at t = 0 -> fires; then v = 0.5 + 1 every step -> fires.
    net = layer.ElementWiseRecurrentContainer(neuron.IFNode(v_reset=None), element_wise_function=lambda x, y: x + y)
    x = torch.zeros(6)
    x[0] = 1.5
    out = torch.stack([net(x[t]) for t in range(6)])
    assert torch.equal(out, torch.ones(6))
