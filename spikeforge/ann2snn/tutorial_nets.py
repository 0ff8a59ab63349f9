"""The ANNs of the conversion examples and benchmarks, and how they are trained (on the training engine).

* :class:`TutorialCNN` — SpikingJelly's ann2snn tutorial network for MNIST;
* :class:`SmallResNet` (two :class:`BasicBlock` residual blocks) and :class:`MaxPoolCNN` — the Fashion-MNIST
  networks that exercise graph conversion and the spiking max-pool;
* :func:`train_ann` — Adam, cosine LR per iteration, cross-entropy, on :class:`spikeforge.training.Trainer`;
  :func:`trained_model` loads cached weights or trains and caches them (written atomically);
* :func:`ann_accuracy` and :func:`format_accuracy_table` for the reports.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["TutorialCNN", "BasicBlock", "SmallResNet", "MaxPoolCNN", "FASHION_MODELS", "train_ann", "ann_accuracy",
           "trained_model", "format_accuracy_table"]


class TutorialCNN(nn.Module):
    """SpikingJelly's ann2snn tutorial network (28x28 input -> 32 features -> 10 classes)."""

    def __init__(self):
        super().__init__()
        layers = []
        for c_in in (1, 32, 32):
            layers += [nn.Conv2d(c_in, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2, 2)]
        self.network = nn.Sequential(*layers, nn.Flatten(), nn.Linear(32, 10), nn.ReLU())
        # Cross-entropy on ReLU outputs pushes wrong classes below zero, and an output unit that is negative
        # for every input never recovers (a dead class). Starting the output biases at 2 prevents that.
        nn.init.constant_(self.network[-2].bias, 2.0)

    def forward(self, x):
        return self.network(x)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, plus the input, then ReLU (He et al. 2016)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x)


class SmallResNet(nn.Module):
    """Stem (28 -> 14), residual block at 16 channels, strided conv to 32 channels (7x7), residual block, head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.AvgPool2d(2))
        self.block1 = BasicBlock(16)
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32),
                                  nn.ReLU())
        self.block2 = BasicBlock(32)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x):
        return self.head(self.block2(self.down(self.block1(self.stem(x)))))


class MaxPoolCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool2 x2 (28 -> 14 -> 7), Dropout, Linear."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(32 * 7 * 7, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


FASHION_MODELS = {"resnet": SmallResNet, "maxpool": MaxPoolCNN}


def _print_now(line: str) -> None:
    print(line, flush=True)


def train_ann(model: nn.Module, train, test, epochs: int, batch_size: int, lr: float, seed: int,
              log: Callable[[str], None] = _print_now) -> nn.Module:
    """Adam with a per-iteration cosine LR (over all ``epochs``), cross-entropy, shuffled batches; one line per
    epoch with the test accuracy. ``train`` / ``test`` are ``(images, labels)`` tensors. Returns the model in
    eval mode."""
    from spikeforge.training import CrossEntropyLoss, TorchSchedule, Trainer

    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(*train), batch_size=batch_size, shuffle=True)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs * len(loader))

    def epoch_line(record: dict, seconds: float) -> None:
        log(f"epoch {record['epoch'] + 1}/{epochs}: test accuracy {100.0 * record['test_acc']:.2f}% "
            f"({seconds:.0f} s)")

    trainer = Trainer(model, optimiser, CrossEntropyLoss(), schedule=TorchSchedule(scheduler, "iteration"),
                      batch_size=batch_size, eval_batch_size=1000, progress=False, epoch_log=epoch_line)
    trainer.fit(loader, test, epochs=epochs)
    return model.eval()


@torch.no_grad()
def ann_accuracy(model: nn.Module, data, batch_size: int = 1000) -> float:
    """Test accuracy in percent of ``model`` (eval mode) on ``(images, labels)``."""
    model.eval()
    x, y = data
    correct = sum((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                  for i in range(0, len(y), batch_size))
    return 100.0 * correct / len(y)


def trained_model(model: nn.Module, weights: str | os.PathLike | None, train, test, epochs: int, batch_size: int,
                  lr: float, seed: int, log: Callable[[str], None] = _print_now) -> nn.Module:
    """``model`` with the weights in ``weights`` when that file exists; else trained (:func:`train_ann`) and,
    with ``weights`` given, saved there atomically. Files are read with ``weights_only=True``."""
    from spikeforge.training import load_checkpoint, save_checkpoint

    if weights and Path(weights).is_file():
        model.load_state_dict(load_checkpoint(weights))
        log(f"loaded ANN weights from {weights}")
        return model.eval()
    model = train_ann(model, train, test, epochs, batch_size, lr, seed, log=log)
    if weights:
        save_checkpoint(model.state_dict(), weights)
        log(f"saved ANN weights to {weights}")
    return model


def format_accuracy_table(rows: dict[str, dict[int, float]], steps, ann_acc: float) -> str:
    """The ANN accuracy, then one line per conversion setting with its accuracy (%) at every T."""
    width = max(len(k) for k in rows) + 2
    lines = ["", f"{'ANN':<{width}}{ann_acc:.2f}%", f"{'mode / T':<{width}}" + "".join(f"{t:>8}" for t in steps)]
    for label, accs in rows.items():
        lines.append(f"{label:<{width}}" + "".join(f"{accs[t]:>8.2f}" for t in steps))
    return "\n".join(lines)
