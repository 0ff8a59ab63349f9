"""Node classification: what converts into what, and what is refused with UnsupportedNodeError."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from spikeforge.ann2snn import Converter, UnsupportedNodeError, trace
from spikeforge.ann2snn.ops import _classify


class _Mul(nn.Module):
    def forward(self, x):
        return torch.relu(x) * x


class _Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return torch.sigmoid(self.fc(x)).relu()


@pytest.mark.parametrize("model, name", [
    (nn.Sequential(nn.Linear(3, 3), nn.GELU()), "'1'"),
    (_Sigmoid(), "'sigmoid'"),
    (_Mul(), "'mul'"),
    (nn.Sequential(nn.Linear(3, 3), nn.Hardtanh()), "'1'"),
    (nn.Sequential(nn.Linear(3, 3), nn.LeakyReLU()), "'1'"),
])
def test_unsupported_nodes_raise_with_their_name(model, name):
    with pytest.raises(UnsupportedNodeError, match=name) as info:
        Converter([torch.randn(4, 3)], progress=False)(model)
    assert "after" in str(info.value)  # the message says where the node sits


def test_clamp_with_negative_floor_raises():
    class Clamp(nn.Module):
        def forward(self, x):
            return x.clamp(min=-1.0)

    with pytest.raises(UnsupportedNodeError, match="clamp"):
        Converter([torch.randn(4, 3)], progress=False)(Clamp())


class _Kinds(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.bn = nn.BatchNorm2d(2)
        self.relu6 = nn.ReLU6()
        self.drop = nn.Dropout(0.1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        y = self.relu6(self.bn(self.conv(x)))
        y = F.hardtanh(y, 0.0, 3.0) + y.clamp(0, 2) + torch.clamp_min(y, 0) + F.relu(y)
        y = self.pool(self.drop(y)) * 0.5
        return F.max_pool2d(y, 2).mean(dim=(2, 3))


def test_classify_kinds_and_clips():
    gm = trace(_Kinds())
    modules = dict(gm.named_modules())
    kinds = {n.name: _classify(n, modules) for n in gm.graph.nodes}
    assert kinds["bn"] == ("bn",) and kinds["drop"] == ("dropout",)
    assert kinds["pool"] == ("maxpool",) and kinds["max_pool2d"] == ("maxpool",)
    assert kinds["relu6"] == ("act", 6.0) and kinds["hardtanh"] == ("act", 3.0)
    assert kinds["clamp"] == ("act", 2.0) and kinds["clamp_min"] == ("act", None) and kinds["relu"] == ("act", None)
    assert kinds["conv"] == kinds["mul"] == kinds["mean"] == kinds["x"] == kinds["output"] == ("pass",)


@pytest.mark.parametrize("forward, reason", [
    (lambda x: x.mean(), "all dimensions"),
    (lambda x: x.sum(dim=0), "dim 0"),
    (lambda x: x / x, "two signals"),
    (lambda x: 2.0 / torch.relu(x), "division by a signal"),
    (lambda x: F.max_pool2d(x, 2, return_indices=True)[0], "max_pool2d_with_indices"),  # dispatched at trace
])
def test_classify_refuses_with_a_reason(forward, reason):
    class Net(nn.Module):
        def forward(self, x):
            return forward(x)

    gm = trace(Net())
    modules = dict(gm.named_modules())
    with pytest.raises(UnsupportedNodeError, match=reason):
        for node in gm.graph.nodes:
            _classify(node, modules)


def test_maxpool_module_with_indices_is_refused():
    gm = trace(nn.Sequential(nn.MaxPool2d(2, return_indices=True)))
    node = next(n for n in gm.graph.nodes if n.op == "call_module")
    with pytest.raises(UnsupportedNodeError, match="return_indices"):
        _classify(node, dict(gm.named_modules()))
