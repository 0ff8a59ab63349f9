"""Networks shared by the export tests: an LIF MLP, a conv SNN, lif_fc_mnist's net and a converted CNN."""

import torch
import torch.nn as nn

from spikeforge import functional, layer, neuron, surrogate
from spikeforge.ann2snn import Converter


def _scaled(net: nn.Module, gain: float, seed: int) -> nn.Module:
    """Re-draw every weight (and bias) with ``seed`` and multiply it by ``gain`` so that the neurons fire."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * gain / max(1, p[0].numel()) ** 0.5)
    return net


def lif_mlp(seed: int = 0) -> nn.Sequential:
    net = nn.Sequential(
        layer.Flatten(),
        layer.Linear(64, 32),
        neuron.LIFNode(tau=2.0),
        layer.Linear(32, 10),
        neuron.LIFNode(tau=3.0, decay_input=False, v_threshold=0.5),
    )
    functional.set_step_mode(net, "m")
    return _scaled(net, 3.0, seed)


def conv_snn(seed: int = 0, pool: str = "avg") -> nn.Sequential:
    pooling = layer.AvgPool2d(2) if pool == "avg" else layer.AvgPool2d(2, divisor_override=1)
    net = nn.Sequential(
        layer.Conv2d(1, 4, 3, padding=1),
        neuron.IFNode(),
        pooling,
        layer.Conv2d(4, 6, 3),
        neuron.LIFNode(tau=2.5),
        layer.Flatten(),
        layer.Linear(6 * 2 * 2, 5, bias=False),
        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()),
    )
    functional.set_step_mode(net, "m")
    return _scaled(net, 3.0, seed)


def lif_fc_mnist(seed: int = 0) -> nn.Sequential:
    """spikeforge.examples.lif_fc_mnist's dense net: Flatten → Linear(784, 10, bias=False) → LIFNode(tau=2, ATan)."""
    net = nn.Sequential(
        layer.Flatten(),
        layer.Linear(28 * 28, 10, bias=False),
        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()),
    )
    functional.set_step_mode(net, "m")
    return _scaled(net, 6.0, seed)


class TutorialCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 2 * 2, 4), nn.ReLU())

    def forward(self, x):
        return self.head(self.features(x))


def converted_cnn(seed: int = 0):
    """A CNN with BatchNorm converted by ``Converter(dataloader=..., mode='max')``: ConversionIFNode neurons."""
    torch.manual_seed(seed)
    ann = TutorialCNN()
    gen = torch.Generator().manual_seed(seed + 1)
    for m in ann.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    ann.eval()
    images = torch.rand(64, 1, 8, 8, generator=gen)
    loader = [(images[i:i + 16], torch.zeros(16, dtype=torch.long)) for i in range(0, 64, 16)]
    snn = Converter(dataloader=loader, mode="max", progress=False)(ann)
    snn.step_mode = "m"
    return snn, images


def run(net: nn.Module, x_seq: torch.Tensor) -> torch.Tensor:
    """The multi-step output of ``net`` from a fresh state."""
    functional.reset_net(net)
    with torch.no_grad():
        return net(x_seq)


def membranes(net: nn.Module) -> list[torch.Tensor]:
    """Every neuron's membrane, in the order the neurons appear in ``net.modules()``."""
    from spikeforge.export._common import neuron_spec

    return [m.v for m in net.modules() if neuron_spec(m) is not None]
