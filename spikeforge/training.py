"""Training-loop plumbing shared by the examples: checkpoints, RNG state, metrics, the epoch loop.

Nothing is lost:

* checkpoints are written to a temporary file in the same folder and renamed over the old one
  (``os.replace`` is atomic), so a crash or Ctrl-C mid-write leaves the previous checkpoint intact;
* they are read with ``torch.load(..., weights_only=True)`` (no pickle code runs), and a missing or
  unreadable file raises :class:`CheckpointError` naming it;
* a checkpoint holds the model, optimizer, AMP scaler, LR scheduler, epoch and every RNG state, so a
  resumed run draws the same batches and the same Poisson spikes as an uninterrupted one and continues
  the same curve;
* ``checkpoint_latest.pth`` is written before the first epoch too, so Ctrl-C at any moment leaves a
  checkpoint to resume from (the interrupted epoch is re-run).
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import functional

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "get_rng_state",
    "set_rng_state",
    "MetricsWriter",
    "batches",
    "fit_classifier",
]

METRIC_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "max_test_acc", "train_speed",
               "test_speed")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or not a spikeforge training checkpoint."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual file permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    required: tuple[str, ...] = ()) -> dict:
    """Load a checkpoint with ``weights_only=True``; clear :class:`CheckpointError` when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (pass the path to a checkpoint_latest.pth "
                              f"or checkpoint_max.pth written by an earlier run)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, pickle.UnpicklingError, EOFError... for bad files
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); the file is "
                              f"truncated or corrupt, use another checkpoint or start without -resume") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; it was not written by this training script")
    return state


def get_rng_state() -> dict:
    """Every RNG a training run draws from, as plain tensors/lists (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class MetricsWriter:
    """One JSON object per epoch in ``metrics.jsonl``, plus TensorBoard scalars when it is installed.

    On resume (``start_epoch > 0``) lines for epochs >= start_epoch are dropped first, so the file holds
    one curve without repeats (as TensorBoard's ``purge_step`` does for its event files).
    """

    def __init__(self, out_dir: str | os.PathLike, start_epoch: int = 0, tensorboard: bool = True):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_metrics(self.path) if r.get("epoch", -1) < start_epoch] if start_epoch else []
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional: `pip install spikeforge[tensorboard]`
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(out_dir), purge_step=start_epoch)

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` file (empty list when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def batches(n: int, batch_size: int, shuffle: bool, drop_last: bool,
            generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Index tensors for one pass over ``n`` in-memory samples (a DataLoader without the per-item cost).

    The permutation comes from torch's generator, so the checkpointed RNG state reproduces it.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)


def fit_classifier(
    *,
    net: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    train_data: tuple[torch.Tensor, torch.Tensor],
    test_data: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    epochs: int,
    out_dir: str | os.PathLike,
    device: torch.device | str = "cpu",
    amp: bool = False,
    scheduler=None,
    resume: str | os.PathLike | None = None,
    num_classes: int = 10,
    header: str = "",
    progress: bool = True,
    tensorboard: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Train with MSE between the output firing rate and the one-hot label (SpikingJelly's recipe).

    ``forward(images)`` maps a batch of images (as stored in ``train_data``) to firing rates
    ``[B, num_classes]``; the network state is reset after every batch. Each epoch prints SpikingJelly's
    two lines, appends to ``metrics.jsonl`` (and TensorBoard), and writes ``checkpoint_latest.pth``
    (and ``checkpoint_max.pth`` on a new best test accuracy). Returns this run's metric records.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    device = torch.device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    use_scaler = amp and device.type == "cuda"  # bf16 autocast on the CPU needs no loss scaling
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    start_epoch, max_test_acc = 0, -1.0
    if resume:
        ckpt = load_checkpoint(resume, required=("net", "optimizer", "epoch", "max_test_acc", "rng"))
        net.load_state_dict(ckpt["net"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        if scheduler is not None and ckpt.get("lr_scheduler") is not None:
            scheduler.load_state_dict(ckpt["lr_scheduler"])
        start_epoch, max_test_acc = ckpt["epoch"] + 1, ckpt["max_test_acc"]
        set_rng_state(ckpt["rng"])
        log(f"resumed from {resume} at epoch {start_epoch} (max_test_acc = {max_test_acc:.4f})")

    def checkpoint(epoch: int) -> dict:
        return {
            "net": net.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "lr_scheduler": scheduler.state_dict() if scheduler is not None else None,
            "epoch": epoch, "max_test_acc": max_test_acc, "rng": get_rng_state(),
        }

    latest = out_dir / "checkpoint_latest.pth"
    if not resume:
        save_checkpoint(checkpoint(start_epoch - 1), latest)  # Ctrl-C during epoch 0 can resume too
    metrics = MetricsWriter(out_dir, start_epoch, tensorboard)
    history = []
    train_x, train_y = train_data
    test_x, test_y = test_data
    try:
        for epoch in range(start_epoch, epochs):
            start = time.time()
            net.train()
            loss_sum, correct, seen = 0.0, 0, 0
            n_batches = len(train_y) // batch_size
            for idx in _progress(batches(len(train_y), batch_size, True, True), n_batches,
                                 f"epoch {epoch} train", progress):
                images, labels = train_x[idx].to(device), train_y[idx].to(device)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                    out_fr = forward(images)
                    loss = F.mse_loss(out_fr.float(), F.one_hot(labels, num_classes).float())
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                functional.reset_net(net)
                seen += len(labels)
                loss_sum += loss.item() * len(labels)
                correct += int((out_fr.argmax(1) == labels).sum())
            train_time = time.time()
            train_loss, train_acc, train_speed = loss_sum / seen, correct / seen, seen / (train_time - start)
            if scheduler is not None:
                scheduler.step()
            test_loss, test_acc, test_seen = evaluate(net, forward, test_data, batch_size, device, amp,
                                                      num_classes, progress, f"epoch {epoch} test")
            test_speed = test_seen / (time.time() - train_time)
            is_best = test_acc > max_test_acc
            max_test_acc = max(max_test_acc, test_acc)
            record = dict(zip(METRIC_KEYS, (epoch, train_loss, train_acc, test_loss, test_acc, max_test_acc,
                                            train_speed, test_speed)))
            state = checkpoint(epoch)
            if is_best:
                save_checkpoint(state, out_dir / "checkpoint_max.pth")
            save_checkpoint(state, latest)
            metrics.write(record)
            history.append(record)
            if header:
                log(header)
            log(f"epoch ={epoch}, train_loss ={train_loss: .4f}, train_acc ={train_acc: .4f}, "
                f"test_loss ={test_loss: .4f}, test_acc ={test_acc: .4f}, max_test_acc ={max_test_acc: .4f}")
            log(f"train speed ={train_speed: .4f} images/s, test speed ={test_speed: .4f} images/s")
            remaining = (time.time() - start) * (epochs - epoch - 1)
            log(f"escape time = {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(time.time() + remaining))}\n")
    except KeyboardInterrupt:
        log(f"\ninterrupted; resume with -resume {latest}")
        raise
    finally:
        metrics.close()
    return history


@torch.no_grad()
def evaluate(net: nn.Module, forward: Callable, data: tuple[torch.Tensor, torch.Tensor], batch_size: int,
             device: torch.device, amp: bool = False, num_classes: int = 10, progress: bool = False,
             desc: str = "test") -> tuple[float, float, int]:
    """(mean MSE loss, accuracy, samples) of ``forward`` over ``data``, in order, state reset per batch."""
    net.eval()
    images_all, labels_all = data
    loss_sum, correct, seen = 0.0, 0, 0
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    n_batches = math.ceil(len(labels_all) / batch_size)
    for idx in _progress(batches(len(labels_all), batch_size, False, False), n_batches, desc, progress):
        images, labels = images_all[idx].to(device), labels_all[idx].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            out_fr = forward(images)
        loss = F.mse_loss(out_fr.float(), F.one_hot(labels, num_classes).float())
        functional.reset_net(net)
        seen += len(labels)
        loss_sum += loss.item() * len(labels)
        correct += int((out_fr.argmax(1) == labels).sum())
    return loss_sum / max(seen, 1), correct / max(seen, 1), seen


def set_threads(n: int) -> None:
    """Use ``n`` CPU threads in torch and (when installed) numba.

    Small networks run many tiny ops; on a busy machine one thread often beats two, as every parallel
    region waits for its slowest thread.
    """
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    try:
        import numba
    except ImportError:
        return
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def save_args(args, out_dir: str | os.PathLike) -> Path:
    """``args.txt``: the parsed arguments and the command line, as SpikingJelly writes them."""
    path = Path(out_dir) / "args.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{args}\n{' '.join(sys.argv)}", encoding="utf-8")
    return path


def add_spikingjelly_flags(parser, *, T: int, batch_size: int, epochs: int, opt: str, lr: float,
                           data_help: str, default_threads: int | None, threads_help: str):
    """The flags SpikingJelly's training examples share (``-T -device -b -epochs -j -data-dir -out-dir -resume
    -amp -opt -momentum -lr``) plus spikeforge's run controls; each example adds its own model flags."""
    import torch

    default_device = "cuda:0" if torch.cuda.is_available() else "cpu"
    parser.add_argument("-T", default=T, type=int, help="simulating time-steps")
    parser.add_argument("-device", default=default_device, help=f"device (default: {default_device})")
    parser.add_argument("-b", default=batch_size, type=int, help="batch size")
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
    return parser


def make_optimizer(net: nn.Module, args) -> torch.optim.Optimizer:
    """The optimizer chosen by the SpikingJelly flags ``-opt {sgd,adam} -lr -momentum``."""
    if args.opt == "sgd":
        return torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum)
    return torch.optim.Adam(net.parameters(), lr=args.lr)


def setup_run(args) -> torch.device:
    """Apply an example's ``--seed`` / ``--threads`` flags and return its ``-device``."""
    if args.seed is not None:
        torch.manual_seed(args.seed)
    if args.threads is not None:
        set_threads(args.threads)
    return torch.device(args.device)


def fit_or_exit_code(**fit_kwargs) -> int | None:
    """:func:`fit_classifier` for a command-line example: None when training finished, else the exit code
    (130 after Ctrl-C, which leaves a resumable ``checkpoint_latest.pth``; 2 for an unusable checkpoint)."""
    try:
        fit_classifier(**fit_kwargs)
    except KeyboardInterrupt:
        return 130
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return None
