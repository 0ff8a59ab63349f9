"""``spikeforge demo``: a one-minute first run, offline.

Trains one layer of LIF neurons (:class:`spikeforge.training.tutorial_nets.LIFFCNet`, the network of
``lif_fc_mnist``) on the MNIST copy bundled with spikeforge (Poisson-coded input, multi-step LIF layer), prints
the test accuracy, and writes the output layer's spike raster, membrane heat map and the training curves as
PNGs. Nothing is downloaded.

Every run gets a folder of its own, ``spikeforge-demo/T100_b64_adam_lr0.001`` and then ``...-2``, ``...-3``;
``--resume`` continues the latest of them (or the checkpoint given), ``--overwrite`` replaces the first.
``python -m spikeforge.examples.demo`` is the same command.

This module is imported by ``spikeforge --help``, so it imports torch only inside :func:`run`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_OUT_DIR = "spikeforge-demo"
LR = 1e-3
_LATEST = "latest"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR,
                        help=f"where the run folders go (default: ./{DEFAULT_OUT_DIR}; each run gets one of its "
                             "own)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs (default: 1)")
    parser.add_argument("-T", "--time-steps", dest="T", type=int, default=100,
                        help="simulation steps per image (default: 100, the published setting)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="train on the first N of the 60,000 images (default: all)")
    parser.add_argument("--test-limit", type=int, default=None,
                        help="test on the first N of the 10,000 images (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--resume", "-resume", nargs="?", const=_LATEST, default=None, metavar="CHECKPOINT",
                        help="continue a run: the latest one with these settings, or the given checkpoint (or "
                             "run folder); --epochs is the total to reach")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in <out-dir>/<run name> instead of starting a new folder")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (or set SPIKEFORGE_DEBUG=1)")


def _run_name(args: argparse.Namespace) -> Path:
    return Path(args.out_dir) / f"T{args.T}_b{args.batch_size}_adam_lr{LR}"


def _check(args: argparse.Namespace):
    """Every argument checked before any work; returns the checkpoint to resume from (or ``None``)."""
    from spikeforge.errors import UsageError, check_int, check_writable_dir
    from spikeforge.training.cli import latest_run, resume_checkpoint

    check_int(args.epochs, "--epochs", minimum=1)
    check_int(args.T, "-T", minimum=1)
    check_int(args.batch_size, "--batch-size", minimum=1)
    check_int(args.train_limit, "--train-limit", minimum=1, allow_none=True)
    check_int(args.test_limit, "--test-limit", minimum=1, allow_none=True)
    if args.train_limit is not None and args.train_limit < args.batch_size:
        raise UsageError(f"--train-limit {args.train_limit} is smaller than one batch (--batch-size "
                         f"{args.batch_size}): there would be nothing to train on; use --train-limit >= "
                         f"{args.batch_size} or a smaller --batch-size")
    if args.resume and args.overwrite:
        raise UsageError("--resume continues a run and --overwrite replaces one; pass one of them")
    if args.resume == _LATEST:
        found = latest_run(_run_name(args))
        if found is None:
            raise UsageError(f"--resume: no run to continue under {_run_name(args)} (none has a "
                             f"checkpoint_latest.pth); pass the checkpoint, or start without --resume")
        return resume_checkpoint(found, "--resume")
    if args.resume:
        return resume_checkpoint(args.resume, "--resume")
    check_writable_dir(args.out_dir, "--out-dir")
    return None


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it (as the user typed it), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run(args: argparse.Namespace) -> int:
    resume = _check(args)
    import torch

    from spikeforge.training import Trainer, plots, read_metrics, set_threads
    from spikeforge.training.cli import resume_command, run_dir_for, run_fit
    from spikeforge.training.data import load_split_tensors
    from spikeforge.training.tutorial_nets import LIFFCNet

    print("spikeforge demo: training Flatten -> Linear(784, 10) -> LIF on the bundled MNIST "
          f"(T={args.T}, {args.epochs} epoch(s), Poisson-coded input)")
    torch.manual_seed(args.seed)
    set_threads(1)  # this network's ops are too small to gain from more threads
    net = LIFFCNet(tau=2.0)
    print(net)
    train_data, test_data = load_split_tensors("mnist", None, args.train_limit, args.test_limit)
    run_dir = run_dir_for(_run_name(args), resume=resume, overwrite=args.overwrite,
                          log=lambda line: print(line, flush=True), resume_flag="--resume")
    print(f"run folder: {_shown(run_dir)}" + (f" (resuming {resume.name})" if resume else ""), flush=True)
    trainer = Trainer(net, torch.optim.Adam(net.parameters(), lr=LR),
                      forward=lambda model, images: model.firing_rate(images, args.T), device="cpu",
                      batch_size=args.batch_size, out_dir=run_dir, args=args, progress=not args.no_progress)
    argv = getattr(args, "_argv", None)
    argv = list(argv) if argv is not None else _argv_of(args)
    status = run_fit(trainer, train_data, test_data, epochs=args.epochs, resume=resume,
                     resume_hint=lambda checkpoint: resume_command("spikeforge demo", argv, checkpoint,
                                                                   flag="--resume"))
    if status is not None:
        return status
    if resume is not None and not trainer.history:
        print(f"nothing to train: the run in {_shown(run_dir)} already has {trainer.start_epoch} epoch(s); pass "
              f"--epochs N (the total) to train it further")
        return 0
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
            print(f"  {_shown(p)}")
    else:
        print("no plots written (install matplotlib: pip install 'spikeforge[viz]')")
    print(f"checkpoints and metrics.jsonl: {_shown(run_dir)}")
    return 0


def _argv_of(args: argparse.Namespace) -> list[str]:
    """The flags that reproduce ``args`` (when the command line itself is not at hand)."""
    argv = ["--out-dir", args.out_dir, "--epochs", str(args.epochs), "-T", str(args.T), "--batch-size",
            str(args.batch_size), "--seed", str(args.seed)]
    for flag, value in (("--train-limit", args.train_limit), ("--test-limit", args.test_limit)):
        if value is not None:
            argv += [flag, str(value)]
    return argv + (["--no-progress"] if args.no_progress else [])


def main(argv: list[str] | None = None) -> int:
    """``python -m spikeforge.examples.demo [flags]``: the same as ``spikeforge demo [flags]``."""
    from spikeforge.errors import run_cli

    def _main(arguments: list[str]) -> int:
        parser = argparse.ArgumentParser(prog="python -m spikeforge.examples.demo",
                                         description="train a spiking MLP on the bundled MNIST and write spike "
                                                     "plots (the same as `spikeforge demo`)")
        configure_parser(parser)
        args = parser.parse_args(arguments)
        args._argv = arguments
        return run(args)

    return run_cli(_main, sys.argv[1:] if argv is None else list(argv), prog="spikeforge demo")


if __name__ == "__main__":
    sys.exit(main())
