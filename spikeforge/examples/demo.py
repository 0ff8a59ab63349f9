"""``spikeforge demo``: a one-minute first run, offline.

Trains the one-layer LIF network of :mod:`spikeforge.examples.lif_fc_mnist` on the MNIST copy bundled
with spikeforge (Poisson-coded input, multi-step LIF layer), prints the test accuracy, and writes the
output layer's spike raster, membrane heat map and the training curves as PNGs. Nothing is downloaded.

This module is imported by ``spikeforge --help``, so it imports torch only inside :func:`run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", default="spikeforge-demo",
                        help="where the checkpoints, metrics and plots go (default: ./spikeforge-demo)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs (default: 1)")
    parser.add_argument("-T", "--time-steps", dest="T", type=int, default=100,
                        help="simulation steps per image (default: 100, the published setting)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="train on the first N of the 60,000 images (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from spikeforge.examples import lif_fc_mnist
    from spikeforge.training import read_metrics

    for name in ("epochs", "T", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    argv = ["-T", str(args.T), "-b", str(args.batch_size), "-epochs", str(args.epochs), "-opt", "adam",
            "-lr", "1e-3", "-tau", "2.0", "-out-dir", str(args.out_dir), "-device", "cpu",
            "--seed", str(args.seed)]
    if args.train_limit is not None:
        argv += ["--train-limit", str(args.train_limit)]
    if args.no_progress:
        argv.append("--no-progress")
    print("spikeforge demo: training Flatten -> Linear(784, 10) -> LIF on the bundled MNIST "
          f"(T={args.T}, {args.epochs} epoch(s), Poisson-coded input)")
    status = lif_fc_mnist.main(argv)
    if status:
        return status
    run_dir = lif_fc_mnist.run_dir(lif_fc_mnist.build_parser().parse_args(argv))
    records = read_metrics(run_dir / "metrics.jsonl")
    last = records[-1]
    print()
    print(f"test accuracy after {last['epoch'] + 1} epoch(s): {last['test_acc']:.2%} "
          f"(training speed {last['train_speed']:,.0f} images/s)")
    pictures = [run_dir / name for name in ("spikes.png", "membrane.png", "curves.png")]
    present = [p for p in pictures if p.is_file()]
    if present:
        print("plots written:")
        for p in present:
            print(f"  {Path(p).resolve()}")
    else:
        print("no plots written (install matplotlib: pip install 'spikeforge[viz]')")
    print(f"checkpoints and metrics.jsonl: {run_dir.resolve()}")
    return 0
