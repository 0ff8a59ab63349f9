"""evaluate (accuracy at several T from one simulation) and plot_accuracy_vs_T."""

import pytest
import torch
import torch.nn as nn

from spikeforge import functional
from spikeforge.ann2snn import evaluate, plot_accuracy_vs_T

from .helpers import convert


def test_evaluate_matches_a_manual_single_step_loop():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3), nn.ReLU()).eval()
    x, y = torch.rand(40, 6), torch.randint(0, 3, (40,))
    snn = convert(model, x)
    loader = [(x[:25], y[:25]), (x[25:], y[25:])]
    result = evaluate(snn, loader, [3, 1, 7], max_merged_batch=50)  # chunks of 2 steps cross T=3 and T=7
    assert list(result) == [1, 3, 7]
    for steps in (1, 3, 7):
        correct = 0
        for xb, yb in loader:
            functional.reset_net(snn)
            total = sum(snn(xb) for _ in range(steps))
            correct += (total.argmax(1) == yb).sum().item()
        assert result[steps] == pytest.approx(100.0 * correct / 40)
    with pytest.raises(ValueError, match="T_list"):
        evaluate(snn, loader, [0, 4])


def test_plot_accuracy_vs_t_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_accuracy_vs_T({"max": {8: 90.0, 16: 95.0}, "99.9%": {8: 93.0, 16: 97.0}}, tmp_path / "acc.png",
                              ann_accuracy=98.0)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _tutorial_like():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(8, 8, 3),
                         nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 2 * 2, 4), nn.ReLU()).eval()


def test_static_prefix_is_computed_once_and_changes_nothing():
    model = _tutorial_like()
    x = torch.rand(12, 1, 14, 14)
    snn = convert(model, x)
    prefix, suffix = snn.static_split()
    prefix_modules = {type(m).__name__ for m in prefix.modules()}
    assert "Conv2d" in prefix_modules and "IFActivation" not in prefix_modules   # the first conv is hoisted
    with torch.no_grad():
        functional.reset_net(snn)
        stepped = torch.stack([snn(x) for _ in range(9)])
        functional.reset_net(snn)
        values = snn.run_prefix(x)
        split = torch.cat([snn.run_suffix(values, n) for n in (1, 3, 5)])
        functional.reset_net(snn)
        static = snn.run_static(x, 9)
    assert torch.equal(split, stepped) and torch.equal(static, stepped)
    calls = []
    hook = snn.net.get_submodule("0").register_forward_hook(lambda *a: calls.append(1))
    y = torch.randint(0, 4, (12,))
    evaluate(snn, [(x, y), (x, y)], [4, 9])
    hook.remove()
    assert len(calls) == 2   # once per batch, not once per step


def test_a_network_without_static_layers_has_no_split():
    class Spiky(nn.Module):   # the activation comes first: nothing to hoist
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 3)

        def forward(self, x):
            return torch.relu(self.fc(torch.relu(x)))

    x = torch.rand(8, 5)
    snn = convert(Spiky().eval(), x)
    assert snn.static_split() is None
    result = evaluate(snn, [(x, torch.zeros(8, dtype=torch.long))], [3])
    assert set(result) == {3}
