"""The conversion examples' ANNs train on the engine exactly as the hand-written loop they replaced."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from spikeforge.ann2snn.tutorial_nets import (
    MaxPoolCNN,
    TutorialCNN,
    ann_accuracy,
    format_accuracy_table,
    train_ann,
    trained_model,
)


def _data():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(200, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (200,), generator=gen)
    return (x[:160], y[:160]), (x[160:], y[160:])


def _plain_loop(model, train, epochs, batch_size, lr, seed):
    """Adam, cosine LR stepped every iteration, cross-entropy, shuffled DataLoader: written out by hand."""
    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(*train), batch_size=batch_size, shuffle=True)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs * len(loader))
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            optimiser.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimiser.step()
            scheduler.step()
    return model.eval()


@pytest.mark.parametrize("cls", [TutorialCNN, MaxPoolCNN])  # MaxPoolCNN's dropout draws random numbers too
def test_train_ann_equals_the_plain_loop(cls):
    train, test = _data()
    torch.manual_seed(7)
    a = cls()
    torch.manual_seed(7)
    b = cls()
    lines = []
    train_ann(a, train, test, epochs=2, batch_size=32, lr=2e-3, seed=0, log=lines.append)
    _plain_loop(b, train, epochs=2, batch_size=32, lr=2e-3, seed=0)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2: test accuracy ")
    assert f"{ann_accuracy(a, test):.2f}%" in lines[1]


def test_trained_model_caches_weights_atomically(tmp_path):
    train, test = _data()
    weights = tmp_path / "w" / "cnn.pt"
    logs = []
    model = trained_model(TutorialCNN(), weights, train, test, 1, 64, 2e-3, 0, log=logs.append)
    assert weights.is_file() and [p.name for p in weights.parent.iterdir()] == ["cnn.pt"]
    again = trained_model(TutorialCNN(), weights, train, test, 1, 64, 2e-3, 0, log=logs.append)
    assert logs[-1] == f"loaded ANN weights from {weights}"
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])


def test_accuracy_table_layout():
    text = format_accuracy_table({"max": {8: 50.0, 16: 75.5}, "99.9%": {8: 60.25, 16: 80.0}}, [8, 16], 98.9)
    # label column: longest label + 2 = 7 characters; one 8-character column per T
    assert text.splitlines() == ["", "ANN    98.90%", "mode / T       8      16",
                                 "max       50.00   75.50", "99.9%     60.25   80.00"]
