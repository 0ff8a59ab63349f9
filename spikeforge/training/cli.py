"""Argument helpers for training command lines (the examples compose these; the engine does not use them).

* :func:`add_spikingjelly_flags` — SpikingJelly's shared flags ``-T -device -b -epochs -j -data-dir -out-dir
  -resume -amp -opt -momentum -lr`` plus spikeforge's run controls (``--train-limit --test-limit --seed
  --threads --no-progress --no-plots --clip-grad --sync-bn --overwrite``; ``--resume`` is ``-resume``);
* :func:`check_training_args` — every one of those flags checked before any work, as a
  :class:`~spikeforge.errors.UsageError` naming the flag;
* :func:`run_dir_for` — the run folder: a new one per run (``<name>``, ``<name>-2`` ...), the folder of the
  checkpoint given to ``-resume``, or ``<name>`` itself with ``--overwrite``;
* :func:`setup_run` — join torchrun's process group (if any), seed, set threads, pick this rank's device;
* :func:`make_optimizer` — ``-opt {sgd,adam} -lr -momentum``;
* :func:`run_fit` — ``trainer.fit(...)`` as an exit code (130 after Ctrl-C, with the command that continues the
  run).

The commands run under :func:`spikeforge.errors.run_cli`, which reports the errors raised here.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import torch
from torch import nn

from ..errors import UsageError, check_device, check_existing, check_float, check_int, check_writable_dir
from . import distributed
from .engine import new_run_dir

__all__ = ["add_spikingjelly_flags", "check_positive", "check_training_args", "make_optimizer", "setup_run",
           "set_threads", "run_fit", "run_dir_for", "resume_checkpoint", "latest_run", "resume_command"]


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
    parser.add_argument("-out-dir", type=str, default="./logs",
                        help="root dir for saving logs and checkpoint (each run gets a folder of its own in it: "
                             "<run name>, then <run name>-2 ...)")
    parser.add_argument("-resume", "--resume", dest="resume", type=str, metavar="CHECKPOINT",
                        help="resume from the checkpoint path (or a run folder: its checkpoint_latest.pth); the "
                             "run continues in the checkpoint's folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into <out-dir>/<run name> even if an earlier run is there (its files are "
                             "replaced once this run's first epoch is saved) instead of a new folder")
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
    """:class:`~spikeforge.errors.UsageError` naming the first flag among ``names`` (``-T``, ``-b`` ...) whose
    value is < 1, and for ``-epochs`` < 0 or a ``-lr`` that is not a finite number > 0."""
    for name in names:
        check_int(getattr(args, name), f"-{name}", minimum=1)
    if hasattr(args, "epochs"):
        check_int(args.epochs, "-epochs", minimum=0)
    if hasattr(args, "lr"):
        check_float(args.lr, "-lr", positive=True)


def check_training_args(args: argparse.Namespace, *positive: str) -> None:
    """Check the flags of :func:`add_spikingjelly_flags` (and the ints named in ``positive``, e.g.
    ``"channels"``) before any work: numbers in range and finite (no ``nan``), a device this machine has, an
    existing ``-data-dir``, a ``-resume`` file, an ``-out-dir`` that can be written. Raises
    :class:`~spikeforge.errors.UsageError` naming the flag."""
    check_positive(args, "T", "b", *positive)
    check_int(args.j, "-j", minimum=0)
    check_float(args.momentum, "-momentum", minimum=0.0)
    check_int(args.train_limit, "--train-limit", minimum=1, allow_none=True)
    check_int(args.test_limit, "--test-limit", minimum=1, allow_none=True)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if args.train_limit is not None and args.train_limit < args.b * world and args.epochs > 0:
        per = f" x {world} processes" if world > 1 else ""
        raise UsageError(f"--train-limit {args.train_limit} is smaller than one batch (-b {args.b}{per}): there "
                         f"would be nothing to train on (an incomplete last batch is dropped); use --train-limit "
                         f">= {args.b * world} or a smaller -b")
    check_int(args.threads, "--threads", minimum=1, allow_none=True)
    check_float(args.clip_grad, "--clip-grad", positive=True, allow_none=True)
    if args.resume and args.overwrite:
        raise UsageError("-resume continues a run in its own folder and --overwrite replaces one; pass one of them")
    check_device(args.device, "-device")
    if args.data_dir is not None:
        check_existing(args.data_dir, "-data-dir", kind="dir")
    if args.resume:
        resume_checkpoint(args.resume, "-resume")
    else:
        check_writable_dir(args.out_dir, "-out-dir")


def resume_checkpoint(path, flag: str = "-resume") -> Path:
    """The checkpoint ``path`` names: the file itself, or ``checkpoint_latest.pth`` in a run folder."""
    path = check_existing(path, flag, kind="any")
    if path.is_dir():
        latest = path / "checkpoint_latest.pth"
        if not latest.is_file():
            raise UsageError(f"{flag} {path}: the folder holds no checkpoint_latest.pth; pass a checkpoint file")
        path = latest
    check_writable_dir(path.parent, f"{flag} {path}: its folder")
    return path


def latest_run(base) -> Path | None:
    """The most recently saved run among ``base``, ``base-2``, ``base-3`` ... (by its checkpoint_latest.pth)."""
    base = Path(base)
    if not base.parent.is_dir():
        return None
    runs = [p for p in base.parent.iterdir()
            if (p.name == base.name or (p.name.startswith(base.name + "-") and p.name[len(base.name) + 1:].isdigit()))
            and (p / "checkpoint_latest.pth").is_file()]
    return max(runs, key=lambda p: (p / "checkpoint_latest.pth").stat().st_mtime, default=None)


def run_dir_for(base, *, resume=None, overwrite: bool = False, log=print, resume_flag: str = "-resume") -> Path:
    """Where a run writes: the checkpoint's folder when resuming, ``base`` with ``overwrite``, else a new
    folder (:func:`~spikeforge.training.new_run_dir`: ``base``, or ``base-2``, ``base-3`` ... when taken)."""
    if resume:
        return Path(resume).parent
    if overwrite:
        return Path(base)
    chosen = new_run_dir(base)
    if chosen != Path(base) and distributed.is_main_process():
        log(f"{base} holds an earlier run; this run writes into {chosen} ({resume_flag} continues a run, "
            f"--overwrite replaces it)")
    return chosen


def resume_command(command: str, argv, checkpoint, flag: str = "-resume") -> str:
    """``command argv... <flag> <checkpoint>``: the command line that continues an interrupted run (earlier
    ``-resume``/``--resume``/``--overwrite`` taken out)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            if not arg.startswith("-"):
                continue
        if arg in ("-resume", "--resume"):
            skip = True
            continue
        if arg.startswith(("-resume=", "--resume=")) or arg in ("--overwrite", "--debug"):
            continue
        kept.append(arg)
    return " ".join([command, *map(shlex.quote, kept), flag, shlex.quote(str(checkpoint))])


def set_threads(n: int) -> None:
    """Use ``n`` CPU threads in torch and (when installed) numba.

    Small networks run many tiny ops; on a busy machine one thread often beats two, as every parallel region
    waits for its slowest thread.
    """
    check_int(n, "threads", minimum=1)
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


def run_fit(trainer, *fit_args, resume_hint=None, **fit_kwargs) -> int | None:
    """``trainer.fit(...)`` for a command line: ``None`` when training finished, 130 after Ctrl-C.

    After Ctrl-C it prints (stderr) how to continue: ``resume_hint(checkpoint)`` (a command line, e.g. from
    :func:`resume_command`) when this run saved a checkpoint. Errors (an unusable checkpoint, ...) propagate to
    :func:`spikeforge.errors.run_cli`.
    """
    try:
        trainer.fit(*fit_args, **fit_kwargs)
    except KeyboardInterrupt:
        if trainer.is_main:
            if trainer.last_checkpoint is not None and resume_hint is not None:
                print(f"interrupted; continue with: {resume_hint(trainer.last_checkpoint)}", file=sys.stderr)
            elif trainer.last_checkpoint is None:
                print("interrupted before the first checkpoint of this run; nothing was changed", file=sys.stderr)
        return 130
    return None
