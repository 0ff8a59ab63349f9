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
