"""Training: one engine for every example, on one process or many (torchrun / DDP).

=====================  =====================================================================================
module                 what is in it
=====================  =====================================================================================
``engine``             :class:`Trainer` / :func:`fit`: the loop (loss, optimizer, schedule, AMP, clipping,
                       neuron reset per batch, progress bars, metrics, evaluation, checkpoints, exact resume);
                       :func:`new_run_dir` (a folder per run), :func:`prepare_run_dir`
``checkpoint``         :func:`save_checkpoint` (atomic) / :func:`load_checkpoint` (``weights_only=True``),
                       :class:`CheckpointError`: the *training* checkpoint API (model weights alone:
                       :func:`spikeforge.models.load_weights`)
``rng``                :func:`get_rng_state` / :func:`set_rng_state` as plain data
``metrics``            :class:`MetricsWriter` (``metrics.jsonl`` + TensorBoard), :func:`read_metrics`
``losses``             :class:`MSERateLoss`, :class:`CrossEntropyRateLoss`, :class:`CrossEntropyLoss`
``schedule``           :class:`WarmupCosine`, :class:`StepDecay` (per iteration), :class:`TorchSchedule`
``amp``                :class:`AmpPolicy`: bf16 autocast on the CPU, fp16 + GradScaler on CUDA, or off
``distributed``        torchrun/DDP: process group from the environment, reductions, SyncBatchNorm
``data``               :class:`TensorBatches` (in-memory batches sharded over ranks), :func:`batches`
``plots``              output traces, ``v_t_array.npy`` / ``s_t_array.npy`` and the run's PNGs
``tutorial_nets``      the SpikingJelly tutorial SNNs (:class:`LIFFCNet`, :class:`CSNN`)
``cli``                argument helpers for training command lines (SpikingJelly's flags)
=====================  =====================================================================================
"""

from __future__ import annotations

from .amp import AmpPolicy
from .checkpoint import CheckpointError, load_checkpoint, plain_args, save_checkpoint
from .cli import set_threads
from .data import TensorBatches, batches
from .engine import RunDirError, Trainer, TrainingDataError, fit, fit_classifier, new_run_dir, prepare_run_dir
from .losses import CrossEntropyLoss, CrossEntropyRateLoss, MSERateLoss, make_loss
from .metrics import METRIC_KEYS, MetricsWriter, read_metrics
from .rng import get_rng_state, set_rng_state
from .schedule import StepDecay, TorchSchedule, WarmupCosine

__all__ = [
    "AmpPolicy",
    "CheckpointError",
    "CrossEntropyLoss",
    "CrossEntropyRateLoss",
    "METRIC_KEYS",
    "MSERateLoss",
    "MetricsWriter",
    "RunDirError",
    "StepDecay",
    "TensorBatches",
    "TorchSchedule",
    "Trainer",
    "TrainingDataError",
    "WarmupCosine",
    "batches",
    "fit",
    "fit_classifier",
    "get_rng_state",
    "load_checkpoint",
    "make_loss",
    "plain_args",
    "new_run_dir",
    "prepare_run_dir",
    "read_metrics",
    "save_checkpoint",
    "set_rng_state",
    "set_threads",
]
