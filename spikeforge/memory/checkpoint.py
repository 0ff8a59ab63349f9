"""Checkpointing through time: a multi-step module run in time chunks, each recomputed in backward.

:func:`checkpoint_time` makes a module that takes ``[T, N, ...]`` (a whole multi-step network or one block of
it) run its sequence ``chunk_size`` steps at a time under :func:`torch.utils.checkpoint.checkpoint`
(non-reentrant). Only the chunk inputs and the neuron state at every chunk boundary are kept for backward;
the activations of one chunk at a time are rebuilt when backward reaches it. So the saved memory is one chunk
of activations plus one membrane per neuron per chunk, instead of T steps of activations.

The state is carried exactly: the state of every :class:`~spikeforge.base.MemoryModule` inside (membranes
``v``, dropout masks, ...) at the end of a chunk is an *output* of that chunk's checkpoint and an *input* of
the next one, so gradients flow through it as in plain BPTT. A recomputation starts from the state the chunk
started from, replays the RNG (dropout masks, Poisson draws come out the same) and restores the modules'
state and buffers afterwards, so it leaves no trace. The gradients equal plain BPTT's (to rounding: the folded
time-and-batch layers see smaller batches).

One thing is not time-local: BatchNorm in training mode on folded ``[T·N, ...]`` input takes its statistics
over all T steps. In time chunks it would take them over the chunk, which is a different model, so a module
with such a BatchNorm is refused unless ``batch_norm='per_chunk'`` says that is wanted.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..base import MemoryModule
from ..errors import UsageError

__all__ = ["checkpoint_time", "remove_checkpoint_time", "chunk_bounds"]

_BATCH_NORM_MODES = ("error", "per_chunk")


def chunk_bounds(T: int, chunk_size: int | None = None, segments: int | None = None) -> list[tuple[int, int]]:
    """``[(t0, t1), ...]`` covering ``range(T)``: chunks of ``chunk_size`` steps, or ``segments`` near-equal ones."""
    if (chunk_size is None) == (segments is None):
        raise UsageError("give exactly one of chunk_size and segments")
    if segments is not None:
        chunk_size = max(1, math.ceil(T / segments))
    return [(t0, min(t0 + chunk_size, T)) for t0 in range(0, T, chunk_size)]


def _slots(module: nn.Module) -> list[tuple[MemoryModule, str]]:
    return [(m, key) for m in module.modules() if isinstance(m, MemoryModule) for key in m._memories]


def _batch_norms_with_batch_stats(module: nn.Module) -> list[str]:
    return [name or type(module).__name__ for name, m in module.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]


class _Chunk:
    """One chunk's forward, callable again by the checkpoint to recompute it."""

    def __init__(self, module: nn.Module, slots, values, tensor_positions):
        self.module = module
        self.slots = slots
        self.values = values
        self.tensor_positions = tensor_positions
        self.calls = 0

    def __call__(self, x_chunk: torch.Tensor, *state_tensors):
        recompute = self.calls > 0
        self.calls += 1
        if recompute:
            kept_state = [slot[0]._memories[slot[1]] for slot in self.slots]
            kept_buffers = [(b, b.detach().clone()) for b in self.module.buffers()]
        try:
            values = list(self.values)
            for position, tensor in zip(self.tensor_positions, state_tensors):
                values[position] = tensor
            for (m, key), value in zip(self.slots, values):
                m._memories[key] = value
            out = type(self.module)._time_base.forward(self.module, x_chunk)
            return (out, *[m._memories[key] for m, key in self.slots])
        finally:
            if recompute:
                for (m, key), value in zip(self.slots, kept_state):
                    m._memories[key] = value
                with torch.no_grad():
                    for buffer, copy in kept_buffers:
                        buffer.copy_(copy)


class _TimeChunked:
    """Mixin: ``forward(x_seq)`` in time chunks under checkpointing while gradients are being recorded."""

    _time_chunk_size: int | None = None
    _time_segments: int | None = None

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        base = type(self)._time_base
        if not (torch.is_grad_enabled() and isinstance(x_seq, torch.Tensor) and x_seq.dim() >= 2):
            return base.forward(self, x_seq)
        bounds = chunk_bounds(x_seq.shape[0], self._time_chunk_size, self._time_segments)
        slots = _slots(self)
        outputs = []
        for t0, t1 in bounds:
            values = [m._memories[key] for m, key in slots]
            positions = [i for i, v in enumerate(values) if isinstance(v, torch.Tensor)]
            chunk = _Chunk(self, slots, values, positions)
            result = checkpoint(chunk, x_seq[t0:t1], *[values[i] for i in positions], use_reentrant=False,
                                preserve_rng_state=True)
            out = result[0]
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"checkpoint_time needs a module that returns one tensor [T, ...], "
                                f"{type(self).__name__} returned {type(out).__name__}")
            for (m, key), value in zip(slots, result[1:]):
                m._memories[key] = value
            outputs.append(out)
        return torch.cat(outputs)

    def extra_repr(self) -> str:
        what = (f"chunks of {self._time_chunk_size} steps" if self._time_chunk_size is not None
                else f"{self._time_segments} time segments")
        inner = super().extra_repr()
        return f"{inner}, checkpointed in {what}" if inner else f"checkpointed in {what}"


_CLASSES: dict[type, type] = {}


def checkpoint_time(module: nn.Module, chunk_size: int | None = None, *, segments: int | None = None,
                    batch_norm: str = "error") -> nn.Module:
    """Run multi-step ``module`` (input ``[T, N, ...]``, output ``[T, ...]``) in checkpointed time chunks.

    Give ``chunk_size`` (steps per chunk: the saved memory then stays nearly flat in T) or ``segments`` (the
    number of chunks). ``segments=1`` checkpoints through depth only: wrap the blocks of a network one by one,
    and each keeps just its input for backward and is recomputed whole. In place (the class is swapped for a
    subclass; parameters and ``state_dict`` keys are unchanged); returns ``module``. Without gradient recording
    (evaluation) it runs as before.
    ``batch_norm='per_chunk'`` accepts BatchNorm layers in training mode, which then normalise each chunk with
    its own statistics (see the module docstring); by default they are refused.
    """
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool)
                                   or chunk_size < 1):
        raise UsageError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if segments is not None and (not isinstance(segments, int) or isinstance(segments, bool) or segments < 1):
        raise UsageError(f"segments must be a positive integer, got {segments!r}")
    if (chunk_size is None) == (segments is None):
        raise UsageError("checkpoint_time needs exactly one of chunk_size= and segments=")
    if batch_norm not in _BATCH_NORM_MODES:
        raise UsageError(f"batch_norm must be one of {_BATCH_NORM_MODES}, got {batch_norm!r}")
    if batch_norm == "error":
        norms = _batch_norms_with_batch_stats(module)
        if norms:
            raise UsageError(f"checkpoint_time: {norms[0]} is a BatchNorm in training mode, whose statistics over "
                             f"all T steps cannot be split into time chunks; pass batch_norm='per_chunk' to "
                             f"normalise each chunk on its own (a different model), or checkpoint a part "
                             f"without it")
    cls = type(module)
    base = getattr(cls, "_time_base", None) or cls
    if base is cls:
        sub = _CLASSES.get(cls)
        if sub is None:
            sub = type(cls.__name__, (_TimeChunked, cls), {"__module__": cls.__module__, "_time_base": cls,
                                                           "__doc__": cls.__doc__})
            _CLASSES[cls] = sub
        module.__class__ = sub
    module.__dict__["_time_chunk_size"] = chunk_size
    module.__dict__["_time_segments"] = segments
    return module


def remove_checkpoint_time(module: nn.Module) -> nn.Module:
    """Undo :func:`checkpoint_time`."""
    base = getattr(type(module), "_time_base", None)
    if base is not None:
        module.__class__ = base
        module.__dict__.pop("_time_chunk_size", None)
        module.__dict__.pop("_time_segments", None)
    return module
