"""The training loop: :class:`Trainer` (and :func:`fit`), one engine for every example, on 1 or N processes.

Per batch: move to the device, forward under the AMP policy, loss, backward (scaled for fp16), optional
gradient clipping, optimizer step, per-iteration LR schedule step, then ``functional.reset_net`` on the model so
no membrane state leaks into the next batch. Per epoch: the epoch-level schedule step, evaluation, metrics
(reduced over ranks), ``checkpoint_latest.pth`` and, on a new best test accuracy, ``checkpoint_max.pth``.

Nothing is lost:

* a run never mixes its files with another run's: :func:`new_run_dir` gives every new run a folder of its own
  (``<name>``, ``<name>-2``, ``<name>-3`` ...; the command lines use it unless told to resume or overwrite);
  in a folder that already holds files (``resume=``, or a folder given on purpose) nothing is changed before
  this run's first epoch is saved. Then its checkpoints, ``metrics.jsonl`` and ``args.txt`` replace the earlier
  ones and the earlier run's other outputs (``checkpoint_max.pth``, the arrays and plots) are removed, unless
  it is being resumed;
* every file is written under a temporary name and renamed over the old one when complete, so an
  interruption at any moment leaves the old file or the new one, never half of one;
* in a new folder ``checkpoint_latest.pth`` is also written before the first epoch, so Ctrl-C at any moment
  leaves a checkpoint to resume from (the interrupted epoch is re-run);
* a checkpoint holds model, optimizer, LR schedule, AMP scaler, epoch, best accuracy, the RNG state of every
  rank and the run's arguments, so ``fit(..., resume=path)`` continues the same curve: the resumed epochs draw
  the same batches and spikes and produce the same numbers as an uninterrupted run.

Data: a tuple of tensors ``(inputs, labels)`` held in memory (batched by
:class:`~spikeforge.training.data.TensorBatches`, sharded over ranks), or any iterable of ``(inputs, labels)``
batches such as a ``DataLoader`` (shard it yourself under torchrun, e.g. with a ``DistributedSampler``; its
``set_epoch`` is called every epoch).

Under torchrun (see :mod:`spikeforge.training.distributed`) ``batch_size`` is per process, the model is wrapped
in DDP, and only rank 0 writes files or prints.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from .. import functional
from ..base import MemoryModule
from ..errors import UsageError, UserError, check_float, check_int
from . import distributed
from .amp import AmpPolicy
from .checkpoint import CheckpointError, load_checkpoint, plain_args, save_checkpoint, write_atomic
from .data import TensorBatches
from .losses import Loss, MSERateLoss, call_loss
from .metrics import METRIC_KEYS, MetricsWriter
from .plots import RUN_OUTPUTS
from .rng import get_rng_state, rank_seed, set_rng_state
from .schedule import as_schedule

__all__ = ["Trainer", "fit", "prepare_run_dir", "new_run_dir", "fit_classifier", "default_predict",
           "REQUIRED_CHECKPOINT_KEYS", "RUN_FILES", "RunDirError", "TrainingDataError"]

REQUIRED_CHECKPOINT_KEYS = ("net", "optimizer", "epoch", "max_test_acc", "rng")
# what the engine writes into a run folder (TensorBoard adds its events.out.tfevents.* files)
RUN_FILES = ("args.txt", "metrics.jsonl", "checkpoint_latest.pth", "checkpoint_max.pth")


class RunDirError(UserError, OSError):
    """A run folder cannot be created or written; the message names it."""


class TrainingDataError(UsageError):
    """The training data gives no batch to train on (too few samples for the batch size)."""


def _make_dir(folder: Path, *, exist_ok: bool) -> None:
    """``mkdir -p`` with the failure as a :class:`RunDirError` naming the folder; ``FileExistsError`` passes
    through when ``exist_ok`` is False (the folder was taken)."""
    try:
        folder.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        if not exist_ok or not folder.is_dir():
            if folder.exists() and not folder.is_dir():
                raise RunDirError(f"cannot use {folder} as a run folder: it is a file") from None
            raise
    except OSError as error:
        raise RunDirError(f"cannot create the run folder {folder}: {error.strerror or error}; choose another "
                          f"output folder") from None


def _write_args(out_dir: Path, args) -> None:
    try:
        write_atomic(out_dir / "args.txt", f"{args}\n{' '.join(sys.argv)}")
    except OSError as error:
        raise RunDirError(f"cannot write into the run folder {out_dir}: {error.strerror or error}") from None


def prepare_run_dir(out_dir: str | os.PathLike | None, args=None, *, main: bool | None = None) -> Path | None:
    """Create the run folder (rank 0 only) and write ``args.txt`` there when ``args`` is given.

    ``args.txt`` holds the parsed arguments and the command line, as SpikingJelly writes them (atomically).
    This and :func:`new_run_dir` are the only places where the engine creates a run folder. Returns the folder
    (``None`` for ``out_dir=None``: no files). A folder that cannot be created or written raises
    :class:`RunDirError` naming it.
    """
    if out_dir is None:
        return None
    out_dir = Path(out_dir)
    if main is None:
        main = distributed.is_main_process()
    if main:
        _make_dir(out_dir, exist_ok=True)
        if args is not None:
            _write_args(out_dir, args)
    return out_dir


CLAIM_FILE = ".spikeforge-run"  # created by new_run_dir: the folder is taken, even while it is still empty


def _claim(folder: Path) -> bool:
    """Take ``folder`` for a new run: create it, or take it when it exists and is empty; ``False`` when it is
    taken already (it holds files, or another run claimed it first). The claim is a file created with
    ``O_EXCL``, so of two runs starting together only one gets the folder."""
    try:
        _make_dir(folder, exist_ok=True)
    except FileExistsError:
        return False
    if any(p.name != CLAIM_FILE for p in folder.iterdir()):
        return False
    try:
        os.close(os.open(folder / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    except OSError as error:
        raise RunDirError(f"cannot write into the run folder {folder}: {error.strerror or error}") from None
    return True


def new_run_dir(base: str | os.PathLike, *, main: bool | None = None) -> Path:
    """A new run folder: ``base`` itself when it does not exist (or is empty), else the first free one of
    ``base-2``, ``base-3`` ...; it is taken at once (on rank 0; a hidden ``.spikeforge-run`` file marks it), so
    two runs started together never share one. Under torchrun every rank gets rank 0's choice. A folder that
    cannot be created raises :class:`RunDirError`.
    """
    base = Path(base)
    if main is None:
        main = distributed.is_main_process()
    chosen = None
    if main:
        _make_dir(base.parent, exist_ok=True)
        k = 1
        while chosen is None:
            candidate = base if k == 1 else base.with_name(f"{base.name}-{k}")
            if _claim(candidate):
                chosen = candidate
            k += 1
    return Path(distributed.all_gather_object(str(chosen) if chosen is not None else None)[0])


class _Forward(nn.Module):
    """``forward(model, inputs)`` as a module, so that DDP's forward (and its gradient hooks) runs it."""

    def __init__(self, model: nn.Module, fn: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.fn(self.model, inputs)


def default_predict(output: torch.Tensor) -> torch.Tensor:
    """Class index per sample: ``argmax`` of ``[B, C]`` scores, or of their time mean for ``[T, B, C]``."""
    if output.dim() == 2:
        return output.argmax(1)
    if output.dim() == 3:
        return output.mean(0).argmax(1)
    raise ValueError(f"cannot read class scores from an output of shape {tuple(output.shape)}; pass predict=")


def _progress(iterable, total: int | None, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)


class Trainer:
    """Train ``model`` with ``optimizer`` on ``loss`` (default: MSE between firing rate and one-hot label).

    Args:
        forward: ``forward(model, inputs) -> output``; default ``model(inputs)``. Its output goes to ``loss``
            and to ``predict`` (default: argmax of ``[B, C]``, or of the time mean of ``[T, B, C]``).
        schedule: an engine schedule (:mod:`spikeforge.training.schedule`) or a torch LR scheduler, stepped
            once per epoch (wrap it in ``TorchSchedule(s, 'iteration')`` for per-iteration stepping).
        amp: ``True`` (bf16 on the CPU, fp16 + GradScaler on CUDA), ``False``, ``'bf16'`` or ``'fp16'``.
        batch_size: per process; ``eval_batch_size`` defaults to it.
        clip_grad_norm: clip the total gradient 2-norm to this value before each step.
        out_dir: run folder for ``args.txt``, ``metrics.jsonl``, TensorBoard and checkpoints, used as given
            (:func:`new_run_dir` picks a fresh one); ``None``: no files.
        args: the run's arguments: written to ``args.txt`` and stored (as a dict) in every checkpoint.
        reset: reset the neuron state after every batch (``functional.reset_net``). Before each batch the
            engine checks that no state was carried over from the previous one and warns once if it was.
        sync_bn: under torchrun, use :class:`~spikeforge.training.distributed.SyncBatchNorm`.
        epoch_log: ``epoch_log(record, seconds)`` replaces the SpikingJelly epoch lines; ``header`` (a string,
            or ``header(out_dir)``) is printed before them.
        shuffle_seed: derive each epoch's permutation from ``shuffle_seed + epoch`` instead of torch's RNG.
        time_training: a :class:`~spikeforge.training.online.TimeTraining` (truncated BPTT, OTTT, SLTT): the
            training step runs chunk by chunk through time instead of one forward + backward (one process only).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss: Loss | None = None, *,
                 forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None, schedule=None,
                 amp: bool | str = False, device: torch.device | str | None = None, batch_size: int = 64,
                 eval_batch_size: int | None = None, clip_grad_norm: float | None = None,
                 out_dir: str | os.PathLike | None = None, args=None, header: str = "", progress: bool = True,
                 tensorboard: bool = True, log: Callable[[str], None] = print,
                 epoch_log: Callable[[dict, float], None] | None = None, reset: bool = True,
                 sync_bn: bool = False, predict: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 checkpoints: bool = True, shuffle_seed: int | None = None, ddp_kwargs: dict | None = None,
                 time_training=None):
        check_int(batch_size, "batch_size", minimum=1)
        check_int(eval_batch_size, "eval_batch_size", minimum=1, allow_none=True)
        check_float(clip_grad_norm, "clip_grad_norm", positive=True, allow_none=True)
        if device is None:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.ctx = distributed.init_distributed(device)
        self.device = distributed.local_device(device)
        self.is_main = self.ctx.is_main
        if sync_bn and self.ctx.is_distributed:
            model = distributed.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.loss = loss if loss is not None else MSERateLoss()
        self.schedule = as_schedule(schedule)
        self.amp = AmpPolicy(amp, self.device)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.clip_grad_norm = clip_grad_norm
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.args = args
        self.header = header
        self.progress = progress and self.is_main
        self.tensorboard = tensorboard
        self.log = log if self.is_main else (lambda *_: None)
        self.epoch_log = epoch_log
        self.reset = reset
        self.predict = predict or default_predict
        self.checkpoints = checkpoints
        self.shuffle_seed = shuffle_seed
        self.global_step = 0
        self.max_test_acc = -1.0
        self.start_epoch = 0
        self.history: list[dict] = []  # the records of the last fit() call
        self.last_checkpoint: Path | None = None  # this run's newest checkpoint_latest.pth
        self._fitted = False
        self._runner = _Forward(self.model, forward) if forward is not None else self.model
        self._train_module = distributed.wrap_ddp(self._runner, self.device, **(ddp_kwargs or {}))
        self._memory_modules = [(name, m) for name, m in self.model.named_modules() if isinstance(m, MemoryModule)]
        self.time_training = time_training if time_training is not None and time_training.active else None
        if self.time_training is not None:
            if self.ctx.is_distributed:
                raise UsageError(f"{time_training.mode} training runs in one process; use bptt under torchrun")
            self.time_training.attach(self.model)
        self._warned_state = False
        if self.ctx.is_distributed and self.ctx.rank > 0:
            # ranks start alike (same seed: same initial model, and DDP broadcasts rank 0's anyway); from here
            # on each rank draws its own Poisson spikes and dropout masks
            torch.manual_seed(rank_seed(torch.initial_seed(), self.ctx.rank))

    # -- data ---------------------------------------------------------------------------------------------------

    def _batches(self, data, train: bool) -> Iterable:
        if data is None:
            return None
        if isinstance(data, (tuple, list)) and len(data) >= 2 and all(isinstance(t, torch.Tensor) for t in data):
            batch_size = self.batch_size if train else self.eval_batch_size
            return TensorBatches(data, batch_size, shuffle=train, drop_last=train, seed=self.shuffle_seed)
        return data

    @staticmethod
    def _length(batches) -> int | None:
        try:
            return len(batches)
        except TypeError:
            return None

    # -- state checks -------------------------------------------------------------------------------------------

    def _carried_state(self) -> str | None:
        """The first neuron state (module.name) that differs from its reset value, else None."""
        for name, module in self._memory_modules:
            defaults = module._memory_defaults
            for key, value in module._memories.items():
                default = defaults.get(key)
                if isinstance(value, torch.Tensor) or isinstance(default, torch.Tensor):
                    same = (isinstance(value, torch.Tensor) and isinstance(default, torch.Tensor)
                            and value.shape == default.shape and torch.equal(value, default.to(value.device)))
                else:
                    same = value is default or value == default
                if not same:
                    return f"{name or type(module).__name__}.{key}"
        return None

    def _check_state(self) -> None:
        if not self._memory_modules:
            return
        carried = self._carried_state()
        if carried is None:
            return
        if not self._warned_state:
            self._warned_state = True
            action = "resetting it now" if self.reset else "it stays (reset=False)"
            warnings.warn(f"neuron state {carried} was carried over from an earlier batch: the network was not "
                          f"reset (call spikeforge.functional.reset_net(net) after every batch); {action}",
                          RuntimeWarning, stacklevel=3)
        if self.reset:
            functional.reset_net(self.model)

    # -- one pass -----------------------------------------------------------------------------------------------

    def _accumulators(self):
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        return torch.zeros((), dtype=dtype, device=self.device), torch.zeros((), dtype=torch.int64, device=self.device)

    def _reduce(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> dict:
        loss_sum, correct, seen = distributed.all_reduce_sums([float(loss_sum), float(correct), float(seen)])
        seen = int(seen)
        return {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1), "count": seen}

    def train_epoch(self, batches, epoch: int) -> dict:
        """One pass over ``batches`` in training mode; ``{'loss', 'acc', 'count'}`` over all ranks."""
        self._train_module.train()
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch)
        elif hasattr(getattr(batches, "sampler", None), "set_epoch"):
            batches.sampler.set_epoch(epoch)
        loss_sum, correct = self._accumulators()
        seen = 0
        for inputs, labels in _progress(batches, self._length(batches), f"epoch {epoch} train", self.progress):
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            self._check_state()
            self.optimizer.zero_grad(set_to_none=True)
            if self.time_training is not None:  # TBPTT / OTTT / SLTT: forward and backward chunk by chunk
                output, loss = self.time_training.forward_backward(self.model, inputs, labels, self.loss,
                                                                   self.amp.autocast, self.amp.backward)
            else:
                with self.amp.autocast():
                    output = self._train_module(inputs)
                    loss = call_loss(self.loss, output, labels, inputs)
                self.amp.backward(loss)
            self.amp.step(self.optimizer, self.clip_grad_norm)
            self.global_step += 1
            if self.schedule is not None:
                self.schedule.step()
            if self.reset:
                functional.reset_net(self.model)
            n = len(labels)
            seen += n
            loss_sum += loss.detach().to(loss_sum.dtype) * n
            correct += (self.predict(output.detach()) == labels).sum()
        return self._reduce(loss_sum, correct, seen)

    @torch.no_grad()
    def evaluate(self, data, desc: str = "test") -> dict:
        """Loss and accuracy over ``data`` (tensors or batches), in order, in eval mode; over all ranks.

        Under torchrun every rank first takes rank 0's buffers (BatchNorm statistics), so the result is that
        of the model rank 0 checkpoints.
        """
        batches = self._batches(data, train=False) if isinstance(data, (tuple, list)) else data
        self._runner.eval()
        distributed.broadcast_buffers(self.model)
        loss_sum, correct = self._accumulators()
        seen = 0
        for inputs, labels in _progress(batches, self._length(batches), desc, self.progress):
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            self._check_state()
            with self.amp.autocast():
                output = self._runner(inputs)
                loss = call_loss(self.loss, output, labels, inputs)
            if self.reset:
                functional.reset_net(self.model)
            n = len(labels)
            seen += n
            loss_sum += loss.to(loss_sum.dtype) * n
            correct += (self.predict(output) == labels).sum()
        return self._reduce(loss_sum, correct, seen)

    # -- checkpoints --------------------------------------------------------------------------------------------

    def state_dict(self, epoch: int) -> dict:
        """The training checkpoint after ``epoch`` (-1: before the first). Collective under torchrun."""
        rng = distributed.all_gather_object(get_rng_state())
        return {
            "net": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "optimizer_type": type(self.optimizer).__name__,
            "lr_scheduler": self.schedule.state_dict() if self.schedule is not None else None,
            "scaler": self.amp.state_dict(),
            "epoch": epoch,
            "global_step": self.global_step,
            "max_test_acc": self.max_test_acc,
            "rng": rng[0],
            "rng_per_rank": rng,
            "world_size": self.ctx.world_size,
            "args": plain_args(self.args),
        }

    def save(self, path: str | os.PathLike, epoch: int) -> None:
        """Write the checkpoint (rank 0; every rank must call this, as it gathers the RNG states)."""
        state = self.state_dict(epoch)
        if self.is_main:
            save_checkpoint(state, path)

    def load(self, path: str | os.PathLike) -> dict:
        """Restore a checkpoint written by :meth:`save` (every rank reads the same file); returns it."""
        ckpt = load_checkpoint(path, map_location="cpu", required=REQUIRED_CHECKPOINT_KEYS)
        self._check_fits(ckpt, path)
        step = "the model weights"
        try:
            self.model.load_state_dict(ckpt["net"])
            step = "the optimizer state"
            self.optimizer.load_state_dict(ckpt["optimizer"])
            step = "the AMP scaler"
            self.amp.load_state_dict(ckpt.get("scaler"))
            step = "the LR schedule"
            if self.schedule is not None and ckpt.get("lr_scheduler") is not None:
                self.schedule.load_state_dict(ckpt["lr_scheduler"])
            step = "the epoch counters"
            self.start_epoch = int(ckpt["epoch"]) + 1
            self.max_test_acc = float(ckpt["max_test_acc"])
            self.global_step = int(ckpt.get("global_step", 0))
            step = "the RNG state"
            per_rank = ckpt.get("rng_per_rank")
            rank, world = self.ctx.rank, self.ctx.world_size
            same_world = per_rank is not None and int(ckpt.get("world_size", 1)) == world
            set_rng_state(per_rank[rank] if same_world else ckpt["rng"])
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"checkpoint {path} does not fit this run: {step} cannot be restored "
                                  f"({reason}); resume with the settings it was written with, or start a new run"
                                  ) from None
        if not same_world:
            if rank > 0:
                torch.manual_seed(rank_seed(self.start_epoch, rank))
            if world > 1 or int(ckpt.get("world_size", 1)) > 1:
                warnings.warn(f"{path} was written by {ckpt.get('world_size', 1)} process(es), this run has "
                              f"{world}: training continues, but its random draws differ from the saved run's",
                              RuntimeWarning, stacklevel=2)
        return ckpt

    def _check_fits(self, ckpt: dict, path) -> None:
        """:class:`CheckpointError` in one line when ``ckpt`` was written for another model or optimizer."""
        net = ckpt["net"]
        if not isinstance(net, dict) or not all(isinstance(v, torch.Tensor) for v in net.values()):
            raise CheckpointError(f"checkpoint {path}: its 'net' entry is not a state_dict of tensors")
        own = self.model.state_dict()
        missing = [k for k in own if k not in net]
        unexpected = [k for k in net if k not in own]
        reshaped = [k for k in own if k in net and tuple(net[k].shape) != tuple(own[k].shape)]
        problems = [f"{k} is {tuple(net[k].shape)} there but {tuple(own[k].shape)} here" for k in reshaped]
        problems += [f"{k} is missing there" for k in missing] + [f"{k} is not in this model" for k in unexpected]
        if problems:
            more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
            raise CheckpointError(f"checkpoint {path} was written for a different model: {'; '.join(problems[:2])}"
                                  f"{more}; resume with the settings it was written with (its args are stored "
                                  f"in it), or start a new run")
        saved_type = ckpt.get("optimizer_type")
        if saved_type is not None and saved_type != type(self.optimizer).__name__:
            raise CheckpointError(f"checkpoint {path} holds the state of a {saved_type} optimizer, this run uses "
                                  f"{type(self.optimizer).__name__}; resume with the optimizer it was written with, "
                                  f"or start a new run")

    # -- the loop -----------------------------------------------------------------------------------------------

    def _log_epoch(self, record: dict, epochs: int, seconds: float) -> None:
        if self.epoch_log is not None:
            if self.is_main:
                self.epoch_log(record, seconds)
            return
        header = self.header(self.out_dir) if callable(self.header) else self.header
        if header:
            self.log(header)
        if record["test_acc"] is None:
            self.log(f"epoch ={record['epoch']}, train_loss ={record['train_loss']: .4f}, "
                     f"train_acc ={record['train_acc']: .4f}")
            self.log(f"train speed ={record['train_speed']: .4f} images/s")
        else:
            self.log(f"epoch ={record['epoch']}, train_loss ={record['train_loss']: .4f}, train_acc ="
                     f"{record['train_acc']: .4f}, test_loss ={record['test_loss']: .4f}, test_acc ="
                     f"{record['test_acc']: .4f}, max_test_acc ={record['max_test_acc']: .4f}")
            self.log(f"train speed ={record['train_speed']: .4f} images/s, test speed ="
                     f"{record['test_speed']: .4f} images/s")
        remaining = seconds * (epochs - record["epoch"] - 1)
        self.log(f"escape time = {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(time.time() + remaining))}\n")

    def fit(self, train_data, test_data=None, epochs: int = 1, resume: str | os.PathLike | None = None
            ) -> list[dict]:
        """Train for epochs ``[start, epochs)``; returns this call's metric records (one dict per epoch).

        ``out_dir`` is used as given. When it already holds files and this is not a resumed run, they are left
        as they are until the first epoch is saved, and then replaced (see the module docstring). A second
        ``fit`` on the same trainer continues its run in the same folder.
        """
        check_int(epochs, "epochs", minimum=0)
        train_batches = self._batches(train_data, train=True)
        test_batches = self._batches(test_data, train=False)
        if self._length(train_batches) == 0 and epochs > 0:
            size = len(train_data[0]) if isinstance(train_batches, TensorBatches) else "the"
            raise TrainingDataError(
                f"no training batch: {size} training samples give no full batch of batch_size={self.batch_size}"
                f"{f' x {self.ctx.world_size} processes' if self.ctx.world_size > 1 else ''} (an incomplete last "
                f"batch is dropped); use more samples or a smaller batch size")
        continuing = self._fitted and not resume
        resuming = bool(resume) or continuing
        out_dir = Path(self.out_dir) if self.out_dir is not None else None
        existing: set[str] = set()
        if out_dir is not None and self.is_main and out_dir.is_dir() and not resuming:
            existing = {p.name for p in out_dir.iterdir()} - {CLAIM_FILE}
        # every rank must know (the checkpoint writes below are collective); only rank 0 looked
        replacing = bool(distributed.all_gather_object(bool(existing))[0])
        prepare_run_dir(out_dir, self.args if not (resuming or replacing) else None, main=self.is_main)
        if resume:
            self.load(resume)
            self.log(f"resumed from {resume} at epoch {self.start_epoch} (max_test_acc = {self.max_test_acc:.4f})")
            if self.start_epoch >= epochs:
                self.log(f"nothing to train: {resume} has {self.start_epoch} epoch(s), epochs={epochs}")
        self._fitted = True
        write = out_dir is not None and self.checkpoints
        latest = out_dir / "checkpoint_latest.pth" if out_dir is not None else None
        if not continuing:
            self.last_checkpoint = None
        if write and not resuming and not replacing:
            self.save(latest, self.start_epoch - 1)  # Ctrl-C during the first epoch can resume too
            self.last_checkpoint = latest
        if replacing:
            self.log(f"{out_dir} holds files of an earlier run: they stay as they are until this run's first epoch "
                     f"is saved, and are replaced then")
        metrics = MetricsWriter(out_dir, self.start_epoch, self.tensorboard) if out_dir and self.is_main else None
        history = []
        self.history = history
        try:
            for epoch in range(self.start_epoch, epochs):
                start = time.time()
                train = self.train_epoch(train_batches, epoch)
                train_time = time.time()
                if self.schedule is not None:
                    self.schedule.epoch_end()
                test = None
                if test_batches is not None:
                    test = self.evaluate(test_batches, f"epoch {epoch} test")
                test_time = time.time()
                is_best = test is not None and test["acc"] > self.max_test_acc
                if test is not None:
                    self.max_test_acc = max(self.max_test_acc, test["acc"])
                record = dict(zip(METRIC_KEYS, (epoch, train["loss"], train["acc"], None, None, None,
                                                train["count"] / max(train_time - start, 1e-9), None)))
                if test is not None:
                    record.update(test_loss=test["loss"], test_acc=test["acc"], max_test_acc=self.max_test_acc,
                                  test_speed=test["count"] / max(test_time - train_time, 1e-9))
                written = set()
                if write:
                    state = self.state_dict(epoch)
                    if self.is_main:
                        if is_best:
                            save_checkpoint(state, out_dir / "checkpoint_max.pth")
                            written.add("checkpoint_max.pth")
                        save_checkpoint(state, latest)
                        written.add("checkpoint_latest.pth")
                    self.last_checkpoint = latest
                if replacing and self.is_main:
                    self._replace_earlier_run(out_dir, existing, written)
                replacing = False
                if metrics is not None:
                    metrics.write(record)
                history.append(record)
                self._log_epoch(record, epochs, time.time() - start)
                self.start_epoch = epoch + 1
        except KeyboardInterrupt:
            if self.last_checkpoint is not None:
                self.log(f"\ninterrupted; the last checkpoint of this run is {self.last_checkpoint}")
            elif out_dir is not None and (resuming or replacing):
                self.log(f"\ninterrupted before this run's first checkpoint; the files in {out_dir} were left as "
                         f"they were")
            raise
        finally:
            if metrics is not None:
                metrics.close()
        return history

    def _replace_earlier_run(self, out_dir: Path, existing: set[str], written: set[str]) -> None:
        """After the first saved epoch in a folder that held an earlier run: this run's ``args.txt``, and the
        earlier run's known outputs that this run has not rewritten yet are removed (so the folder never shows
        one run's checkpoints next to another's plots)."""
        if self.args is not None:
            _write_args(out_dir, self.args)
            written = written | {"args.txt"}
        written = written | {"metrics.jsonl"}  # rewritten right after this
        for name in sorted(existing & (set(RUN_FILES) | set(RUN_OUTPUTS)) - written):
            try:
                (out_dir / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as error:
                raise RunDirError(f"cannot remove {out_dir / name} of the earlier run: {error.strerror or error}"
                                  ) from None


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, train_data, test_data=None, *, epochs: int = 1,
        resume: str | os.PathLike | None = None, **trainer_kwargs) -> list[dict]:
    """``Trainer(model, optimizer, **trainer_kwargs).fit(train_data, test_data, epochs, resume)``."""
    return Trainer(model, optimizer, **trainer_kwargs).fit(train_data, test_data, epochs=epochs, resume=resume)


def fit_classifier(*, net: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
                   optimizer: torch.optim.Optimizer, train_data, test_data, batch_size: int, epochs: int,
                   out_dir, device="cpu", amp: bool = False, scheduler=None, resume=None, num_classes: int = 10,
                   header: str = "", progress: bool = True, tensorboard: bool = True,
                   log: Callable[[str], None] = print) -> list[dict]:
    """The earlier single-call API: :class:`Trainer` with the MSE-on-rate loss and ``forward(inputs)``."""
    trainer = Trainer(net, optimizer, MSERateLoss(num_classes), forward=lambda _model, x: forward(x),
                      schedule=scheduler, amp=amp, device=device, batch_size=batch_size, out_dir=out_dir,
                      header=header, progress=progress, tensorboard=tensorboard, log=log)
    return trainer.fit(train_data, test_data, epochs=epochs, resume=resume)
