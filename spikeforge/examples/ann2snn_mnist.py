"""ANN -> SNN conversion of SpikingJelly's tutorial CNN on MNIST.

Trains (or loads) Conv(1,32,3)-BN-ReLU-AvgPool2 x3 -> Flatten -> Linear(32,10) -> ReLU, converts it with the
modes max, 99.9%, 1/2 .. 1/5, prints the accuracy table for T in {8, 16, 32, 50, 100, 200} and writes the
accuracy-vs-T plot. ``--options`` adds rows for the low-latency options (half-threshold start, channel-wise
normalisation, signed spikes, membrane read-out), alone and combined.

    python -m spikeforge.examples.ann2snn_mnist --epochs 4 --weights /tmp/mnist_cnn.pt --plot ann2snn_mnist.png
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

DEFAULT_T = (8, 16, 32, 50, 100, 200)
DEFAULT_MODES = ("max", "99.9%", "1/2", "1/3", "1/4", "1/5")
OPTION_SETS = {
    "half-threshold": dict(half_threshold=True),
    "channel-wise": dict(channel_wise=True),
    "signed": dict(signed_spikes=True),
    "membrane": dict(readout="membrane"),
    "half+membrane": dict(half_threshold=True, readout="membrane"),
    "half+signed+membrane": dict(half_threshold=True, signed_spikes=True, readout="membrane"),
    "all": dict(half_threshold=True, signed_spikes=True, readout="membrane", channel_wise=True),
}


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


def parse_mode(text: str):
    """'max', '99.9%' or a fraction written '1/2' or '0.5'."""
    if text.lower() == "max" or text.endswith("%"):
        return text
    if "/" in text:
        num, den = text.split("/")
        return float(num) / float(den)
    return float(text)


def load_mnist(root: str | None):
    from spikeforge.datasets import MNIST

    train = MNIST(root=root, train=True).as_tensors(torch.float32)
    test = MNIST(root=root, train=False).as_tensors(torch.float32)
    return train, test


def train_ann(model: nn.Module, train, test, epochs: int, batch_size: int, lr: float, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(*train), batch_size=batch_size, shuffle=True)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs * len(loader))
    for epoch in range(epochs):
        model.train()
        start = time.perf_counter()
        for x, y in loader:
            optimiser.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimiser.step()
            scheduler.step()
        print(f"epoch {epoch + 1}/{epochs}: test accuracy {ann_accuracy(model, test):.2f}% "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    return model.eval()


@torch.no_grad()
def ann_accuracy(model: nn.Module, data, batch_size: int = 1000) -> float:
    model.eval()
    x, y = data
    correct = sum((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                  for i in range(0, len(y), batch_size))
    return 100.0 * correct / len(y)


def trained_model(model: nn.Module, weights: str | None, train, test, args) -> nn.Module:
    if weights and Path(weights).is_file():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        print(f"loaded ANN weights from {weights}")
        return model.eval()
    model = train_ann(model, train, test, args.epochs, args.batch_size, args.lr, args.seed)
    if weights:
        Path(weights).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{weights}.tmp"
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, weights)
        print(f"saved ANN weights to {weights}")
    return model


def print_table(rows: dict[str, dict[int, float]], steps, ann_acc: float) -> None:
    width = max(len(k) for k in rows) + 2
    print(f"\n{'ANN':<{width}}{ann_acc:.2f}%")
    print(f"{'mode / T':<{width}}" + "".join(f"{t:>8}" for t in steps))
    for label, accs in rows.items():
        print(f"{label:<{width}}" + "".join(f"{accs[t]:>8.2f}" for t in steps))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="folder with the MNIST .gz files (default: bundled copy)")
    parser.add_argument("--weights", default=None, help="ANN state_dict: loaded if it exists, else written")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="*", default=list(DEFAULT_MODES))
    parser.add_argument("--T", nargs="+", type=int, default=list(DEFAULT_T))
    parser.add_argument("--calib-batches", type=int, default=None,
                        help="calibrate on this many training batches of 100 (default: all 600)")
    parser.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test images only")
    parser.add_argument("--options", nargs="*", default=None, choices=sorted(OPTION_SETS),
                        help="also evaluate these low-latency options (no value: all of them)")
    parser.add_argument("--options-mode", default="99.9%", help="mode used for the --options rows")
    parser.add_argument("--plot", default="ann2snn_mnist.png", help="accuracy-vs-T PNG ('' to skip)")
    args = parser.parse_args(argv)

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    train, test = load_mnist(args.data)
    if args.test_limit:
        test = (test[0][: args.test_limit], test[1][: args.test_limit])
    model = trained_model(TutorialCNN(), args.weights, train, test, args)
    ann_acc = ann_accuracy(model, test)
    calib = DataLoader(TensorDataset(*train), batch_size=100, shuffle=False)
    test_loader = DataLoader(TensorDataset(*test), batch_size=500)

    runs = {mode: {} for mode in args.modes}
    if args.options is not None:
        for name in args.options or sorted(OPTION_SETS):
            runs[f"{args.options_mode} +{name}"] = OPTION_SETS[name]
    rows = {}
    for label, options in runs.items():
        mode = parse_mode(label.split(" +")[0])
        start = time.perf_counter()
        snn = ann2snn.Converter(calib, mode=mode, max_batches=args.calib_batches, progress=False, **options)(model)
        rows[label] = ann2snn.evaluate(snn, test_loader, args.T)
        print(f"{label}: " + ", ".join(f"T={t} {a:.2f}%" for t, a in rows[label].items())
              + f" ({time.perf_counter() - start:.0f} s)", flush=True)
    print_table(rows, args.T, ann_acc)
    if args.plot:
        path = ann2snn.plot_accuracy_vs_T(rows, args.plot, ann_accuracy=ann_acc,
                                          title="Tutorial CNN on MNIST, converted")
        print(f"wrote {path}")
    return {"ann": ann_acc, "snn": rows}


if __name__ == "__main__":
    main()
