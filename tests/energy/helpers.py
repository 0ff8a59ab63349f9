"""The hand-countable network of the energy tests.

    x [T=4, N=2, 3] -> Linear(3, 2, bias=False) -> IF -> Linear(2, 2, bias=False) -> IF

W1 = [[1, 0, 0], [0, 0.5, 0]] (third input column unused), W2 = identity. IF: V_th = 1, hard reset to 0.

Sample 0, x = [1, 1, 0] at every step: currents [1, 0.5]
    neuron a: charge 1 -> fires at every step                    -> 1 1 1 1 (4 spikes)
    neuron b: charge 0.5, 1.0 (fire, reset), 0.5, 1.0 (fire)     -> 0 1 0 1 (2 spikes)
Sample 1, x = [0, 1, 0]: currents [0, 0.5]
    neuron a: never fires                                        -> 0 0 0 0
    neuron b: as above                                           -> 0 1 0 1 (2 spikes)
Spikes into layer 2: 4 + 2 + 0 + 2 = 8 of T·N·2 = 16 elements -> firing rate 8/16 = 0.5.
"""

import torch
import torch.nn as nn

from spikeforge import functional, layer, neuron

T, N = 4, 2
STATIC_X = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]).expand(T, N, 3).clone()
SPIKES_A = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])   # sample 0, [T, 2]: neuron a, b


def changing_x() -> torch.Tensor:
    """STATIC_X with the unused third input changing over time: same spikes, but the input is not static."""
    x = STATIC_X.clone()
    x[:, :, 2] = torch.arange(T, dtype=torch.float32).view(T, 1) * 0.25
    return x


def hand_net(first_neuron: nn.Module | None = None, step_mode: str = "m") -> nn.Sequential:
    net = nn.Sequential(
        layer.Linear(3, 2, bias=False),
        first_neuron if first_neuron is not None else neuron.IFNode(backend="reference"),
        layer.Linear(2, 2, bias=False),
        neuron.IFNode(backend="reference"),
    )
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]]))
        net[2].weight.copy_(torch.eye(2))
    functional.set_step_mode(net, step_mode)
    return net
