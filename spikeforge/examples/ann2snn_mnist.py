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
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from spikeforge import ann2snn
from spikeforge.ann2snn.tutorial_nets import TutorialCNN, ann_accuracy, format_accuracy_table, trained_model

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


def parse_mode(text: str):
    """'max', '99.9%' or a fraction written '1/2' or '0.5' (``ValueError`` for anything else)."""
    if text.lower() == "max" or text.endswith("%"):
        return text
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


def _check_args(args) -> None:
    """Every argument checked before any work (:class:`~spikeforge.errors.UsageError` naming the flag)."""
    from spikeforge.ann2snn.observe import parse_mode as check_mode
    from spikeforge.errors import UsageError, UserError, check_existing, check_float, check_int, check_writable_dir

    check_int(args.epochs, "--epochs", minimum=1)
    check_int(args.batch_size, "--batch-size", minimum=1)
    check_float(args.lr, "--lr", positive=True)
    for t in args.T:
        check_int(t, "--T", minimum=1)
    check_int(args.calib_batches, "--calib-batches", minimum=1, allow_none=True)
    check_int(args.test_limit, "--test-limit", minimum=1, allow_none=True)
    for flag, texts in (("--modes", args.modes), ("--options-mode", [args.options_mode])):
        for text in texts:
            try:
                check_mode(parse_mode(text))
            except (ValueError, ZeroDivisionError) as error:
                raise UsageError(f"{flag} {text!r}: {error}; use max, a percentile such as 99.9% or a fraction "
                                 f"such as 1/2") from None
    if args.data is not None:
        check_existing(args.data, "--data", kind="dir")
    if args.weights and Path(args.weights).exists():
        from spikeforge.models import load_weights

        check_existing(args.weights, "--weights")
        try:
            load_weights(TutorialCNN(), args.weights)
        except UserError as error:
            raise UsageError(f"--weights: {str(error).removeprefix('pretrained: ')}") from None
    elif args.weights:
        check_writable_dir(Path(args.weights).parent, f"--weights {args.weights} (to be written):")
    if args.plot:
        check_writable_dir(Path(args.plot).parent, f"--plot {args.plot}:")


def run(argv=None) -> dict:
    """The example's work; returns ``{"ann": accuracy, "snn": {row: {T: accuracy}}}``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     prog="python -m spikeforge.examples.ann2snn_mnist")
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
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    _check_args(args)

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    from spikeforge.datasets import MNIST

    train = MNIST(root=args.data, train=True).as_tensors(torch.float32)
    test = MNIST(root=args.data, train=False).as_tensors(torch.float32)
    if args.test_limit:
        test = (test[0][: args.test_limit], test[1][: args.test_limit])
    model = trained_model(TutorialCNN(), args.weights, train, test, args.epochs, args.batch_size, args.lr, args.seed)
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
    print(format_accuracy_table(rows, args.T, ann_acc))
    if args.plot:
        path = ann2snn.plot_accuracy_vs_T(rows, args.plot, ann_accuracy=ann_acc,
                                          title="Tutorial CNN on MNIST, converted")
        print(f"wrote {path}")
    return {"ann": ann_acc, "snn": rows}


def main(argv=None) -> int:
    """Run the example as a command: errors in one line (``--debug`` for the traceback), an exit status."""
    from spikeforge.errors import run_cli

    def command(arguments) -> int:
        run(arguments)
        return 0

    return run_cli(command, sys.argv[1:] if argv is None else list(argv), prog="ann2snn_mnist")


if __name__ == "__main__":
    sys.exit(main())
