"""Argument helpers for training command lines (the examples compose these; the engine does not use them).

* :func:`add_spikingjelly_flags` — SpikingJelly's shared flags ``-T -device -b -epochs -j -data-dir -out-dir
  -resume -amp -opt -momentum -lr`` plus spikeforge's run controls (``--train-limit --test-limit --seed
  --threads --no-progress --no-plots --clip-grad --sync-bn``);
* :func:`setup_run` — join torchrun's process group (if any), seed, set threads, pick this rank's device;
* :func:`make_optimizer` — ``-opt {sgd,adam} -lr -momentum``;
* :func:`run_fit` — ``trainer.fit(...)`` as an exit code (130 after Ctrl-C, 2 for an unusable checkpoint).
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from . import distributed
from .checkpoint import CheckpointError

__all__ = ["add_spikingjelly_flags", "check_positive", "make_optimizer", "setup_run", "set_threads", "run_fit"]


def add_spikingjelly_flags(parser: argparse.ArgumentParser, *, T: int, batch_size: int, epochs: int, opt: str,
                           lr: float, data_help: str, default_threads: int | None,
                           threads_help: str) -> argparse.ArgumentParser:
    """The flags SpikingJelly's training examples share, plus spikeforge's run controls; each example adds its
    own model flags."""
    default_device = "cuda:0" if torch.cuda.is_available() else "cpu"
    parser.add_argument("-T", default=T, type=int, help="simulating time-steps")
    parser.add_argument("-device", default=default_device,
                        help=f"device (default: {default_device}; under torchrun CUDA means cuda:LOCAL_RANK)")
    parser.add_argument("-b", default=batch_size, type=int,
                        help="batch size (per process under torchrun: the global batch is b x processes)")
    parser.add_argument("-epochs", default=epochs, type=int, metavar="N", help="number of total epochs to run")
    parser.add_argument("-j", default=4, type=int, metavar="N",
                        help="number of data loading workers (accepted for compatibility; the data set is "
                             "held in memory and needs none)")
    parser.add_argument("-data-dir", type=str, default=None, help=data_help)
    parser.add_argument("-out-dir", type=str, default="./logs", help="root dir for saving logs and checkpoint")
    parser.add_argument("-resume", type=str, help="resume from the checkpoint path")
    parser.add_argument("-amp", action="store_true",
                        help="automatic mixed precision training (bf16 autocast on the CPU)")
    parser.add_argument("-opt", type=str, choices=["sgd", "adam"], default=opt,
                        help=f"use which optimizer. SGD or Adam (default: {opt})")
    parser.add_argument("-momentum", default=0.9, type=float, help="momentum for SGD")
    parser.add_argument("-lr", default=lr, type=float, help="learning rate")
    parser.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--test-limit", type=int, default=None, help="use only the first N test images")
    parser.add_argument("--seed", type=int, default=None, help="seed torch's RNG (default: not seeded)")
    parser.add_argument("--threads", type=int, default=default_threads, help=threads_help)
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    parser.add_argument("--no-plots", action="store_true", help="do not write the PNG plots")
    parser.add_argument("--clip-grad", type=float, default=None, metavar="NORM",
                        help="clip the gradients' total 2-norm to NORM (default: no clipping)")
    parser.add_argument("--sync-bn", action="store_true",
                        help="under torchrun: batch-norm statistics over the global batch (SyncBatchNorm)")
    return parser


def check_positive(args: argparse.Namespace, *names: str) -> None:
    """``SystemExit`` naming the first flag among ``names`` (``-T``, ``-b`` ...) whose value is < 1."""
    for name in names:
        if getattr(args, name) < 1:
            raise SystemExit(f"-{name} must be >= 1, got {getattr(args, name)}")
    if getattr(args, "epochs", 0) < 0:
        raise SystemExit(f"-epochs must be >= 0, got {args.epochs}")
    if getattr(args, "lr", 1.0) <= 0:
        raise SystemExit(f"-lr must be > 0, got {args.lr}")


def set_threads(n: int) -> None:
    """Use ``n`` CPU threads in torch and (when installed) numba.

    Small networks run many tiny ops; on a busy machine one thread often beats two, as every parallel region
    waits for its slowest thread.
    """
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    try:
        import numba
    except ImportError:
        return
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def make_optimizer(net: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """The optimizer chosen by the SpikingJelly flags ``-opt {sgd,adam} -lr -momentum``."""
    if args.opt == "sgd":
        return torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum)
    return torch.optim.Adam(net.parameters(), lr=args.lr)


def setup_run(args: argparse.Namespace) -> torch.device:
    """Join torchrun's process group when launched by it, apply ``--seed`` / ``--threads``, return the device.

    Every rank is seeded with the same ``--seed`` (so all start from the same model); the engine then gives each
    rank > 0 its own random stream. Under torchrun a CUDA ``-device`` becomes ``cuda:LOCAL_RANK``.
    """
    device = distributed.local_device(args.device)
    distributed.init_distributed(device)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    if args.threads is not None:
        set_threads(args.threads)
    return device


def run_fit(trainer, *fit_args, **fit_kwargs) -> int | None:
    """``trainer.fit(...)`` for a command line: ``None`` when training finished, else the exit code (130 after
    Ctrl-C, which leaves a resumable ``checkpoint_latest.pth``; 2 for an unusable checkpoint)."""
    try:
        trainer.fit(*fit_args, **fit_kwargs)
    except KeyboardInterrupt:
        return 130
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return None
