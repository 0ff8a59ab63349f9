"""One layer of LIF neurons classifying MNIST, SpikingJelly's ``lif_fc_mnist`` with the same flags.

Model: Flatten -> Linear(784, 10, bias=False) -> LIFNode(tau, ATan surrogate); input: Poisson spikes of
the pixel intensities for T steps; output: each class neuron's firing rate; loss: MSE against the one-hot
label. Published setting (SpikingJelly docs: 92.9 % after 100 epochs)::

    python -m spikeforge.examples.lif_fc_mnist -T 100 -b 64 -opt adam -lr 1e-3 -tau 2.0 -epochs 100

On several processes (data parallel; ``-b`` is per process)::

    torchrun --standalone --nproc_per_node=2 -m spikeforge.examples.lif_fc_mnist -T 100 -b 64 -epochs 100

Speed: all T steps are encoded at once and the network runs in multi-step mode. On the CPU the
encoder and the linear layer are fused (:func:`spikeforge.fused_encoding.poisson_linear`): only the
non-zero pixels draw random numbers and only their weight columns are summed, which is the same
computation as Linear(PoissonEncoder(x)) with far fewer operations. The LIF layer then runs once over
``[T, B, 10]``. On other devices (or ``--dense``) the spikes are materialised and the Sequential runs as is.

Writes into ``<out-dir>/T{T}_b{b}_{opt}_lr{lr}[_amp]/`` (a new folder per run: ``...-2``, ``...-3`` when the
name is taken; ``-resume`` continues a run in its folder, ``--overwrite`` replaces it): args.txt, metrics.jsonl
(and TensorBoard scalars when tensorboard is installed), checkpoint_latest.pth / checkpoint_max.pth,
v_t_array.npy and s_t_array.npy (membrane and spikes of the 10 output neurons for test image 0, shape [T, 10])
and the plots spikes.png, membrane.png and curves.png (with matplotlib). Errors are reported in one line
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spikeforge.errors import UsageError, check_float, run_cli
from spikeforge.training import distributed, plots
from spikeforge.training.cli import (
    add_spikingjelly_flags,
    check_training_args,
    make_optimizer,
    resume_checkpoint,
    resume_command,
    run_dir_for,
    run_fit,
    setup_run,
)
from spikeforge.training.online import add_memory_flags, apply_memory_flags, check_memory_flags
from spikeforge.training.tutorial_nets import LIFFCNet

SNN = LIFFCNet  # the example's historical name for the network
COMMAND = "python -m spikeforge.examples.lif_fc_mnist"


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description="LIF MNIST Training", prog=COMMAND)
    add_spikingjelly_flags(
        parser, T=100, batch_size=64, epochs=100, opt="adam", lr=1e-3,
        data_help="folder with the four MNIST .gz files (or torchvision's MNIST/raw under it); "
                  "default: the copy bundled with spikeforge",
        default_threads=1,
        threads_help="CPU threads for torch and numba (default: 1; this network's ops are too small to gain "
                     "from more, and two threads measured 2-4x slower on a 2-core machine)",
    )
    parser.add_argument("-tau", default=2.0, type=float, help="parameter tau of LIF neuron")
    parser.add_argument("--dense", action="store_true",
                        help="materialise the Poisson spikes and run the plain Sequential (slower; the "
                             "fused path computes the same thing)")
    add_memory_flags(parser)
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (or set SPIKEFORGE_DEBUG=1)")
    return parser


def _check_args(args) -> None:
    check_float(args.tau, "-tau")
    if args.tau <= 1:
        raise UsageError(f"-tau must be > 1 (the LIF decay is 1/tau), got {args.tau}")
    check_training_args(args)
    check_memory_flags(args)


def chunk_forward(net: LIFFCNet, images, t0: int, t1: int):
    """Output spikes of steps t0 .. t1 − 1 from the current state (fresh Poisson spikes for those steps), for
    ``--train-mode tbptt / ottt / sltt``."""
    return net.forward_poisson(images, t1 - t0)


def run_dir(args) -> Path:
    """``<out-dir>/T{T}_b{b}_{opt}_lr{lr}[_amp]``: the run's folder name (a taken one gets ``-2``, ``-3`` ...)."""
    name = f"T{args.T}_b{args.b}_{args.opt}_lr{args.lr}" + ("_amp" if args.amp else "")
    return Path(args.out_dir) / name


def _main(argv: list[str], parser: argparse.ArgumentParser | None) -> int:
    from spikeforge.training import Trainer
    from spikeforge.training.data import load_split_tensors

    args = (parser or build_parser()).parse_args(argv)
    _check_args(args)
    resume = resume_checkpoint(args.resume) if args.resume else None
    device = setup_run(args)
    main_rank = distributed.is_main_process()
    try:
        if main_rank:
            print(args)
        net = LIFFCNet(tau=args.tau, dense=args.dense).to(device)
        if main_rank:
            print(net)
        time_training = apply_memory_flags(args, net, net.output_neuron, chunk_forward,
                                           log=print if main_rank else (lambda *_: None))
        train_data, test_data = load_split_tensors("mnist", args.data_dir, args.train_limit, args.test_limit)
        out_dir = run_dir_for(run_dir(args), resume=resume, overwrite=args.overwrite)
        if main_rank:
            print(f"run folder: {out_dir}", flush=True)
        trainer = Trainer(net, make_optimizer(net, args),
                          forward=lambda model, images: model.firing_rate(images, args.T), amp=args.amp,
                          device=device, batch_size=args.b, clip_grad_norm=args.clip_grad, sync_bn=args.sync_bn,
                          out_dir=out_dir, args=args, header=f"{args}\n{out_dir}", progress=not args.no_progress,
                          time_training=time_training)
        exit_code = run_fit(trainer, train_data, test_data, epochs=args.epochs, resume=resume,
                            resume_hint=lambda checkpoint: resume_command(COMMAND, argv, checkpoint))
        if exit_code is not None or not trainer.is_main:
            return exit_code or 0
        if resume is not None and not trainer.history:
            return 0  # nothing was trained: the run's arrays and plots stay as they are
        image, label = test_data[0][0].to(device), int(test_data[1][0])
        v_t_array, s_t_array = plots.record_output(
            net, net.output_neuron, lambda: net.forward_poisson(image.unsqueeze(0), args.T))
        plots.save_output_arrays(out_dir, v_t_array, s_t_array)
        print(f"Firing rate: {s_t_array.mean(0)}")
        if not args.no_plots:
            written = plots.write_run_plots(out_dir, v_t_array, s_t_array, label, net.output_neuron.v_threshold)
            if written:
                print("plots: " + ", ".join(str(p) for p in written))
        return 0
    finally:
        distributed.cleanup()


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run the example; errors are reported in one line (``--debug`` for the traceback), see
    :func:`spikeforge.errors.run_cli`."""
    return run_cli(lambda a: _main(a, parser), sys.argv[1:] if argv is None else list(argv), prog="lif_fc_mnist")


if __name__ == "__main__":
    sys.exit(main())
