"""``spikeforge demo``: a one-minute first run, offline.

Trains one layer of LIF neurons (:class:`spikeforge.training.tutorial_nets.LIFFCNet`, the network of
``lif_fc_mnist``) on the MNIST copy bundled with spikeforge (Poisson-coded input, multi-step LIF layer), prints
the test accuracy, and writes the output layer's spike raster, membrane heat map and the training curves as
PNGs. Nothing is downloaded.

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
    import torch

    from spikeforge.datasets import DatasetFileError
    from spikeforge.training import Trainer, plots, read_metrics, set_threads
    from spikeforge.training.cli import run_fit
    from spikeforge.training.data import load_split_tensors
    from spikeforge.training.tutorial_nets import LIFFCNet

    for name in ("epochs", "T", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    lr = 1e-3
    print("spikeforge demo: training Flatten -> Linear(784, 10) -> LIF on the bundled MNIST "
          f"(T={args.T}, {args.epochs} epoch(s), Poisson-coded input)")
    torch.manual_seed(args.seed)
    set_threads(1)  # this network's ops are too small to gain from more threads
    net = LIFFCNet(tau=2.0)
    print(net)
    try:
        train_data, test_data = load_split_tensors("mnist", None, args.train_limit, None)
    except DatasetFileError as e:
        print(f"error: {e}")
        return 2
    run_dir = Path(args.out_dir) / f"T{args.T}_b{args.batch_size}_adam_lr{lr}"
    trainer = Trainer(net, torch.optim.Adam(net.parameters(), lr=lr),
                      forward=lambda model, images: model.firing_rate(images, args.T), device="cpu",
                      batch_size=args.batch_size, out_dir=run_dir, args=args, progress=not args.no_progress)
    status = run_fit(trainer, train_data, test_data, epochs=args.epochs)
    if status is not None:
        return status
    image, label = test_data[0][0], int(test_data[1][0])
    v_t_array, s_t_array = plots.record_output(net, net.output_neuron,
                                               lambda: net.forward_poisson(image.unsqueeze(0), args.T))
    plots.save_output_arrays(run_dir, v_t_array, s_t_array)
    plots.write_run_plots(run_dir, v_t_array, s_t_array, label, net.output_neuron.v_threshold)
    last = read_metrics(run_dir / "metrics.jsonl")[-1]
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
