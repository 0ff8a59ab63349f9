"""ANN -> SNN conversion of a residual CNN and a max-pooling CNN on Fashion-MNIST.

Trains (or loads) the two ANNs, converts each with robust normalisation and with the low-latency options,
and prints ANN accuracy and SNN accuracy at T in {16, 32, 64}. The residual network exercises graph
conversion (residual additions through ``torch.fx``); the max-pooling one the spiking max-pool
(:class:`spikeforge.ann2snn.SpikingMaxPool`, exact on accumulated inputs).

    python -m spikeforge.examples.ann2snn_fashion --weights-dir /tmp/ann2snn_fashion --epochs 3
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from spikeforge import ann2snn
from spikeforge.examples.ann2snn_mnist import ann_accuracy, print_table, train_ann

DEFAULT_T = (16, 32, 64)
CONFIGS = {
    "99.9%": dict(mode="99.9%"),
    "99.9% +half": dict(mode="99.9%", half_threshold=True),
    "99.9% +half+signed": dict(mode="99.9%", half_threshold=True, signed_spikes=True),
    "99.99% +half+signed": dict(mode="99.99%", half_threshold=True, signed_spikes=True),
}


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


MODELS = {"resnet": SmallResNet, "maxpool": MaxPoolCNN}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="folder with the Fashion-MNIST .gz files "
                                                     "(default: ../shared/data/fashion-mnist)")
    parser.add_argument("--weights-dir", default=None, help="cache of trained ANN weights (<model>.pt)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--T", nargs="+", type=int, default=list(DEFAULT_T))
    parser.add_argument("--configs", nargs="+", default=["99.9%", "99.9% +half+signed"], choices=list(CONFIGS))
    parser.add_argument("--calib-batches", type=int, default=100, help="training batches of 100 to calibrate on")
    parser.add_argument("--test-limit", type=int, default=None)
    args = parser.parse_args(argv)

    from spikeforge.datasets import FashionMNIST

    train = FashionMNIST(root=args.data, train=True).as_tensors(torch.float32)
    test = FashionMNIST(root=args.data, train=False).as_tensors(torch.float32)
    if args.test_limit:
        test = (test[0][: args.test_limit], test[1][: args.test_limit])
    calib = DataLoader(TensorDataset(*train), batch_size=100, shuffle=False)
    test_loader = DataLoader(TensorDataset(*test), batch_size=500)
    results = {}
    for name in args.models:
        torch.manual_seed(args.seed)
        model = MODELS[name]()
        path = Path(args.weights_dir) / f"fashion_{name}.pt" if args.weights_dir else None
        if path is not None and path.is_file():
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            print(f"loaded {path}")
        else:
            print(f"training {name} for {args.epochs} epochs", flush=True)
            model = train_ann(model, train, test, args.epochs, args.batch_size, args.lr, args.seed)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), f"{path}.tmp")
                os.replace(f"{path}.tmp", path)
        model.eval()
        ann_acc = ann_accuracy(model, test)
        rows = {}
        for label in args.configs:
            start = time.perf_counter()
            snn = ann2snn.Converter(calib, max_batches=args.calib_batches, progress=False, **CONFIGS[label])(model)
            rows[label] = ann2snn.evaluate(snn, test_loader, args.T)
            print(f"{name} {label}: " + ", ".join(f"T={t} {a:.2f}%" for t, a in rows[label].items())
                  + f" ({time.perf_counter() - start:.0f} s)", flush=True)
        print(f"\n== {name} ({type(model).__name__}) ==")
        print_table(rows, args.T, ann_acc)
        results[name] = {"ann": ann_acc, "snn": rows}
    return results


if __name__ == "__main__":
    main()
