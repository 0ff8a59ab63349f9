"""ANN -> SNN conversion of a residual CNN and a max-pooling CNN on Fashion-MNIST.

Trains (or loads) the two ANNs, converts each with robust normalisation and with the low-latency options,
and prints ANN accuracy and SNN accuracy at T in {16, 32, 64}. The residual network exercises graph
conversion (residual additions through ``torch.fx``); the max-pooling one the spiking max-pool
(:class:`spikeforge.ann2snn.SpikingMaxPool`, exact on accumulated inputs).

    python -m spikeforge.examples.ann2snn_fashion --weights-dir /tmp/ann2snn_fashion --epochs 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from spikeforge import ann2snn
from spikeforge.ann2snn.tutorial_nets import FASHION_MODELS, ann_accuracy, format_accuracy_table, train_ann
from spikeforge.errors import UsageError, UserError
from spikeforge.models import load_weights
from spikeforge.training import load_checkpoint, save_checkpoint

DEFAULT_T = (16, 32, 64)
CONFIGS = {
    "99.9%": dict(mode="99.9%"),
    "99.9% +half": dict(mode="99.9%", half_threshold=True),
    "99.9% +half+signed": dict(mode="99.9%", half_threshold=True, signed_spikes=True),
    "99.99% +half+signed": dict(mode="99.99%", half_threshold=True, signed_spikes=True),
}
MODELS = FASHION_MODELS


def _check_args(args) -> None:
    """Every argument checked before any work (:class:`~spikeforge.errors.UsageError` naming the flag)."""
    from spikeforge.errors import check_existing, check_float, check_int, check_writable_dir

    check_int(args.epochs, "--epochs", minimum=1)
    check_int(args.batch_size, "--batch-size", minimum=1)
    check_float(args.lr, "--lr", positive=True)
    for t in args.T:
        check_int(t, "--T", minimum=1)
    check_int(args.calib_batches, "--calib-batches", minimum=1)
    check_int(args.test_limit, "--test-limit", minimum=1, allow_none=True)
    if args.data is not None:
        check_existing(args.data, "--data", kind="dir")
    if args.weights_dir is not None:
        check_writable_dir(args.weights_dir, "--weights-dir")


def run(argv=None) -> dict:
    """The example's work; returns ``{model: {"ann": accuracy, "snn": {row: {T: accuracy}}}}``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     prog="python -m spikeforge.examples.ann2snn_fashion")
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
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    _check_args(args)

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
            try:
                load_weights(model, load_checkpoint(path))
            except UserError as error:
                raise UsageError(f"--weights-dir: {str(error).removeprefix('pretrained: ')}; delete {path} to "
                                 f"train the model again") from None
            print(f"loaded {path}")
        else:
            print(f"training {name} for {args.epochs} epochs", flush=True)
            model = train_ann(model, train, test, args.epochs, args.batch_size, args.lr, args.seed)
            if path is not None:
                save_checkpoint(model.state_dict(), path)
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
        print(format_accuracy_table(rows, args.T, ann_acc))
        results[name] = {"ann": ann_acc, "snn": rows}
    return results


def main(argv=None) -> int:
    """Run the example as a command: errors in one line (``--debug`` for the traceback), an exit status."""
    from spikeforge.errors import run_cli

    def command(arguments) -> int:
        run(arguments)
        return 0

    return run_cli(command, sys.argv[1:] if argv is None else list(argv), prog="ann2snn_fashion")


if __name__ == "__main__":
    sys.exit(main())
