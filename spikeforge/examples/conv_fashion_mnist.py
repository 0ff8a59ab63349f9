"""A convolutional SNN for Fashion-MNIST, SpikingJelly's ``conv_fashion_mnist`` with the same flags.

Model (all layers in multi-step mode, IF neurons with the ATan surrogate)::

    {Conv2d(3x3) - BatchNorm2d - IFNode - MaxPool2d(2)} x 2 - Flatten
    - Linear(C*7*7, C*4*4) - IFNode - Linear(C*4*4, 10) - IFNode

Direct input coding: the analog image is repeated for T steps (T=4); the output is the mean firing
rate, trained with MSE against the one-hot label, SGD with cosine annealing. SpikingJelly reports
93.08 % test accuracy (T=4, C=128, 64 epochs, on a GPU)::

    python -m spikeforge.examples.conv_fashion_mnist -T 4 -b 128 -epochs 64 -opt sgd -lr 0.1 -channels 128

On a CPU an epoch takes minutes; ``-channels 32`` or ``--train-limit`` make it quick. Under
``torchrun --standalone --nproc_per_node=N`` it trains data-parallel (``-b`` per process; ``--sync-bn`` for
batch-norm statistics over the global batch).
Outputs as in :mod:`spikeforge.examples.lif_fc_mnist` (checkpoints, metrics.jsonl, args.txt, the output
layer's v/s arrays for test image 0 and spikes.png / membrane.png / curves.png); ``-save-es DIR`` also
draws the spikes of the first {Conv2d-BatchNorm2d-IFNode} block for test image 0, one picture per step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from spikeforge import functional
from spikeforge.errors import check_writable_dir, run_cli
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
from spikeforge.training.tutorial_nets import CSNN

__all__ = ["CSNN", "build_parser", "chunk_forward", "main", "run_dir"]

COMMAND = "python -m spikeforge.examples.conv_fashion_mnist"


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description="Classify Fashion-MNIST", prog=COMMAND)
    add_spikingjelly_flags(
        parser, T=4, batch_size=128, epochs=64, opt="sgd", lr=0.1,
        data_help="folder with the four Fashion-MNIST .gz files (or torchvision's FashionMNIST/raw under it); "
                  "default: ../shared/data/fashion-mnist next to the source tree",
        default_threads=None, threads_help="CPU threads for torch and numba (default: their own defaults)",
    )
    parser.add_argument("-channels", default=128, type=int, help="channels of CSNN")
    parser.add_argument("-save-es", default=None,
                        help="dir for saving the spikes of the first {Conv2d-BatchNorm2d-IFNode} for test image 0")
    add_memory_flags(parser)
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (or set SPIKEFORGE_DEBUG=1)")
    return parser


def run_dir(args) -> Path:
    name = f"T{args.T}_b{args.b}_{args.opt}_lr{args.lr}_c{args.channels}" + ("_amp" if args.amp else "")
    return Path(args.out_dir) / name


def chunk_forward(net: CSNN, images: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
    """Output spikes of steps t0 .. t1 − 1 from the current state (direct coding: the same image every step),
    for ``--train-mode tbptt / ottt / sltt``."""
    return net.conv_fc(images.unsqueeze(0).expand(t1 - t0, *images.shape))


@torch.no_grad()
def save_encoder_spikes(net: CSNN, image: torch.Tensor, save_dir: Path) -> list[Path]:
    """s_{t}.png: the first block's spike maps (C channels tiled) for one image at every step."""
    net.eval()
    spikes = net.spiking_encoder()(image.unsqueeze(0).unsqueeze(0).expand(net.T, 1, *image.shape))[:, 0]
    functional.reset_net(net)
    return plots.save_feature_map_steps(spikes, save_dir, "first-block spikes $S[{t}]$ ({channels} channels)")


def _main(argv: list[str]) -> int:
    from spikeforge.training import Trainer
    from spikeforge.training.data import load_split_tensors

    args = build_parser().parse_args(argv)
    check_training_args(args, "channels")
    check_memory_flags(args)
    if args.save_es:
        check_writable_dir(args.save_es, "-save-es")
    resume = resume_checkpoint(args.resume) if args.resume else None
    device = setup_run(args)
    main_rank = distributed.is_main_process()
    try:
        if main_rank:
            print(args)
        net = CSNN(T=args.T, channels=args.channels).to(device)
        if main_rank:
            print(net)
        time_training = apply_memory_flags(args, net, net.conv_fc, chunk_forward,
                                           log=print if main_rank else (lambda *_: None))
        train_data, test_data = load_split_tensors("fashion-mnist", args.data_dir, args.train_limit,
                                                   args.test_limit, dtype=torch.float32)
        optimizer = make_optimizer(net, args)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(args.epochs, 1))
        out_dir = run_dir_for(run_dir(args), resume=resume, overwrite=args.overwrite)
        if main_rank:
            print(f"run folder: {out_dir}", flush=True)
        trainer = Trainer(net, optimizer, schedule=scheduler, amp=args.amp, device=device, batch_size=args.b,
                          clip_grad_norm=args.clip_grad, sync_bn=args.sync_bn, out_dir=out_dir, args=args,
                          header=f"{args}\n{out_dir}", progress=not args.no_progress, time_training=time_training)
        exit_code = run_fit(trainer, train_data, test_data, epochs=args.epochs, resume=resume,
                            resume_hint=lambda checkpoint: resume_command(COMMAND, argv, checkpoint))
        if exit_code is not None or not trainer.is_main:
            return exit_code or 0
        if resume is not None and not trainer.history:
            return 0  # nothing was trained: the run's arrays and plots stay as they are
        image, label = test_data[0][0].to(device), int(test_data[1][0])
        v_t_array, s_t_array = plots.record_output(net, net.output_neuron,
                                                   lambda: net.forward_spikes(image.unsqueeze(0)))
        plots.save_output_arrays(out_dir, v_t_array, s_t_array)
        print(f"Firing rate: {s_t_array.mean(0)}")
        if not args.no_plots:
            written = plots.write_run_plots(out_dir, v_t_array, s_t_array, label, net.output_neuron.v_threshold)
            if args.save_es:
                written += save_encoder_spikes(net, image, Path(args.save_es) / "visualization")
            if written:
                print("plots: " + ", ".join(str(p) for p in written))
        return 0
    finally:
        distributed.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Run the example; errors are reported in one line (``--debug`` for the traceback)."""
    return run_cli(_main, sys.argv[1:] if argv is None else list(argv), prog="conv_fashion_mnist")


if __name__ == "__main__":
    sys.exit(main())
