"""Networks and helpers shared by the ann2snn tests."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from spikeforge import functional
from spikeforge.ann2snn import Converter


def randomise_bn(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters; returns ``model.eval()``."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
    return model.eval()


def loader(x: torch.Tensor, batch: int = 32):
    return [(x[i:i + batch], torch.zeros(len(x[i:i + batch]), dtype=torch.long)) for i in range(0, len(x), batch)]


def convert(model, x, **kw):
    kw.setdefault("momentum", None)  # whole-data max: no calibration sample is clipped
    return Converter(loader(x), progress=False, **kw)(model)


def rate(snn, x, steps):
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
