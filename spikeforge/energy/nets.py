"""The networks the ``spikeforge energy`` command builds by name besides the zoo.

``lif_fc_mnist``: Flatten -> Linear(784, 10, bias=False) -> LIFNode(tau=2, ATan), multi-step, Poisson-coded
input: the network of ``python -m spikeforge.examples.lif_fc_mnist``, with the same state_dict keys
(``layer.1.weight``), so that example's checkpoints (``{"model": state_dict, ...}``, or ``"net"`` as SpikingJelly
saves them) load into it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .. import functional, layer, neuron, surrogate

__all__ = ["LIFFCMNIST", "build_lif_fc_mnist", "load_state_dict_file", "WeightsFileError"]


class WeightsFileError(ValueError):
    """A weights file that is missing, unreadable, or does not fit the model."""


class LIFFCMNIST(nn.Module):
    """Flatten -> Linear(784, 10, bias=False) -> LIFNode(tau, ATan) on Poisson spikes ``[T, N, 1, 28, 28]``."""

    def __init__(self, tau: float = 2.0):
        super().__init__()
        self.layer = nn.Sequential(
            layer.Flatten(),
            layer.Linear(28 * 28, 10, bias=False),
            neuron.LIFNode(tau=tau, surrogate_function=surrogate.ATan()),
        )
        functional.set_step_mode(self, "m")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.layer(x_seq)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict from a file holding a bare state_dict or ``{"model" (or "net"): state_dict, ...}``, read with
    ``torch.load(weights_only=True)``."""
    from ..errors import load_plain

    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"weights file not found: {path}")
    # one loader for every user file: names the file and the fault, never suggests weights_only=False
    obj = load_plain(path, what="weights file", error=WeightsFileError)
    state = None
    if isinstance(obj, dict):
        # a training checkpoint keeps the weights under one key ("model"; SpikingJelly's examples use "net")
        state = next((obj[key] for key in ("model", "net", "state_dict") if isinstance(obj.get(key), dict)), obj)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFileError(f"{path} holds no state_dict (expected a state_dict or {{'model' or 'net': "
                               "state_dict, ...}})")
    if all(k.startswith("module.") for k in state):   # saved from a DistributedDataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def build_lif_fc_mnist(weights: str | os.PathLike | None = None, tau: float = 2.0) -> LIFFCMNIST:
    net = LIFFCMNIST(tau)
    if weights is not None:
        state = load_state_dict_file(weights)
        expected = net.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
        if missing or unexpected or wrong:
            raise WeightsFileError(f"{weights} does not fit lif_fc_mnist: missing {missing}, "
                                   f"unexpected {unexpected[:5]}, wrong shape {wrong}")
        net.load_state_dict(state)
    return net
