"""Training through time in pieces: truncated BPTT, OTTT and SLTT, as options of the training engine.

The engine's ordinary step is full BPTT: one forward over all T steps, one backward. :class:`TimeTraining`
replaces it by a loop over time chunks, each trained at once (forward, loss, backward) and then cut from the
graph (:func:`spikeforge.functional.detach_net`), so the memory held for backward is that of one chunk:

``'tbptt'`` (window ``k``)
    chunks of k steps; inside a chunk, exact BPTT; the neuron state is carried into the next chunk but its
    graph is cut. The loss of a chunk is the loss of its mean output weighted by its share of the T steps, so
    ``k >= T`` is exactly BPTT.
``'sltt'`` (Meng et al. 2023, "Towards memory- and time-efficient backpropagation for training SNNs")
    k = 1: at every step the instantaneous loss L_t = ℓ(o_t, y)/T is back-propagated through the layers of
    that step only (the temporal paths through the membrane are dropped), and the weight gradients of the
    steps are summed.
``'ottt'`` (Xiao et al. 2022, "Online training through time for spiking neural networks")
    as SLTT, but a Conv/Linear whose input is the spikes s_t of a neuron takes its weight gradient from the
    presynaptic trace â_t = λ·â_{t−1} + s_t (λ = 1 − 1/τ, the neuron's retention from its ``spec``), i.e.
    ΔW = Σ_t δ_t ⊗ â_t with δ_t the gradient of L_t at the layer's output; its input gradient is Wᵀδ_t as
    usual. The trace is taken of what the layer receives (after pooling / flattening). Layers whose input is
    not a neuron's spikes (the first, analog one) use their instantaneous input, as in the paper.

Memory is independent of T for SLTT/OTTT and grows with k, not T, for TBPTT. The model is driven one chunk
at a time through ``chunk_forward(model, inputs, t0, t1) -> output [t1 − t0, B, ...]``; the engine's loss
sees the mean output of a chunk (``[B, ...]``, as the model's ordinary forward gives it) and the metrics the
mean output over all T steps. Evaluation still runs the ordinary forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from .. import functional
from ..errors import UsageError
from .losses import call_loss

__all__ = ["TimeTraining", "TRAIN_MODES", "ottt_layers", "add_memory_flags", "check_memory_flags", "apply_memory_flags"]

TRAIN_MODES = ("bptt", "tbptt", "ottt", "sltt")


class _ValueWithGradOf(torch.autograd.Function):
    """Forward: ``value``; backward: the gradient goes to ``grad_path`` (``value`` is a constant)."""

    @staticmethod
    def forward(ctx, grad_path, value):
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _TraceWeightGrad:
    """Mixin for Conv / Linear under OTTT: weight gradient from the presynaptic trace, value from the spikes."""

    _ottt_retention: float = 1.0
    _ottt_state: dict | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self._ottt_state
        if state is None or not (self.training and torch.is_grad_enabled()):
            return super().forward(x)
        with torch.no_grad():
            previous = state.get(id(self))
            trace = x.detach().clone() if previous is None else previous.mul(self._ottt_retention).add_(x)
            state[id(self)] = trace
            value = super().forward(x)
        # value = trace, gradient to x unchanged: the layer's weight gradient is δ ⊗ trace, its input gradient Wᵀδ
        through_trace = _ValueWithGradOf.apply(x, trace)
        return _ValueWithGradOf.apply(super().forward(through_trace), value)


_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_TRACE_CLASSES: dict[type, type] = {}


def ottt_layers(model: nn.Module) -> list[nn.Module]:
    """The Conv/Linear layers of ``model`` whose input is a neuron's spikes (they get the OTTT trace)."""
    from ..memory.transform import spike_sources

    return [m for m, (_, dropout) in spike_sources(model).items() if isinstance(m, _WEIGHTED) and dropout is None]


def _retention(neuron: nn.Module) -> float:
    return float(neuron.spec.leak.retention)


class TimeTraining:
    """A training step over time chunks (see the module docstring).

    Args:
        mode: 'bptt' (the ordinary step; this object then changes nothing), 'tbptt', 'ottt' or 'sltt'.
        T: the number of time steps of a sample.
        chunk_forward: ``chunk_forward(model, inputs, t0, t1)`` runs steps ``t0 .. t1 − 1`` of the model from its
            current state and returns their outputs ``[t1 − t0, B, ...]``.
        k: the TBPTT window (steps per chunk); required for 'tbptt'.
    """

    def __init__(self, mode: str, T: int, chunk_forward: Callable, k: int | None = None):
        if mode not in TRAIN_MODES:
            raise UsageError(f"train mode must be one of {', '.join(TRAIN_MODES)}, got {mode!r}")
        if not isinstance(T, int) or T < 1:
            raise UsageError(f"T must be a positive integer, got {T!r}")
        if mode == "tbptt":
            if k is None or not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise UsageError(f"TBPTT needs a window k >= 1 (--tbptt-k), got {k!r}")
        elif k is not None and mode != "bptt":
            raise UsageError(f"a window k is for TBPTT only, not for {mode!r}")
        self.mode = mode
        self.T = T
        self.k = {"tbptt": k, "ottt": 1, "sltt": 1}.get(mode, T)
        self.chunk_forward = chunk_forward
        self._ottt_state: dict = {}
        self._model: nn.Module | None = None

    @property
    def active(self) -> bool:
        """False for 'bptt': the engine keeps its ordinary step."""
        return self.mode != "bptt"

    def __repr__(self) -> str:
        extra = f", k={self.k}" if self.mode == "tbptt" else ""
        return f"TimeTraining({self.mode!r}, T={self.T}{extra})"

    def attach(self, model: nn.Module) -> None:
        """Prepare ``model`` (OTTT: its spike-fed Conv/Linear layers learn from traces). Idempotent."""
        if self._model is model:
            return
        self._model = model
        if self.mode != "ottt":
            return
        from ..memory.transform import spike_sources

        for module, (neuron, dropout) in spike_sources(model).items():
            if not isinstance(module, _WEIGHTED) or dropout is not None:
                continue
            bit_base = getattr(type(module), "_bit_base", None)
            if bit_base is not None:  # under OTTT the layer saves the trace, which is not binary: no bits
                module.__class__ = bit_base
            cls = type(module)
            if not isinstance(module, _TraceWeightGrad):
                sub = _TRACE_CLASSES.get(cls)
                if sub is None:
                    sub = type(cls.__name__, (_TraceWeightGrad, cls), {"__module__": cls.__module__,
                                                                      "_ottt_base": cls, "__doc__": cls.__doc__})
                    _TRACE_CLASSES[cls] = sub
                module.__class__ = sub
            module.__dict__["_ottt_retention"] = _retention(neuron)
            module.__dict__["_ottt_state"] = self._ottt_state

    def detach_model(self) -> None:
        """Undo :meth:`attach` (the OTTT layers get their classes back)."""
        if self._model is None:
            return
        for module in self._model.modules():
            base = getattr(type(module), "_ottt_base", None)
            if base is not None:
                module.__class__ = base
                module.__dict__.pop("_ottt_retention", None)
                module.__dict__.pop("_ottt_state", None)
        self._model = None

    def bounds(self) -> list[tuple[int, int]]:
        return [(t0, min(t0 + self.k, self.T)) for t0 in range(0, self.T, self.k)]

    def forward_backward(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, loss,
                         autocast=None, backward=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Train one batch chunk by chunk; gradients accumulate in ``.grad``. Returns (mean output, loss).

        ``autocast()`` (a context factory) and ``backward(loss)`` default to no autocast and ``loss.backward()``.
        """
        self.attach(model)
        self._ottt_state.clear()
        outputs, total = [], None
        try:
            for t0, t1 in self.bounds():
                if autocast is not None:
                    with autocast():
                        out = self.chunk_forward(model, inputs, t0, t1)
                        chunk_loss = call_loss(loss, out.mean(0), labels, inputs) * ((t1 - t0) / self.T)
                else:
                    out = self.chunk_forward(model, inputs, t0, t1)
                    chunk_loss = call_loss(loss, out.mean(0), labels, inputs) * ((t1 - t0) / self.T)
                if backward is not None:
                    backward(chunk_loss)
                else:
                    chunk_loss.backward()
                functional.detach_net(model)
                out = out.detach()
                outputs.append((out.float() if out.dtype in (torch.float16, torch.bfloat16) else out).sum(0))
                total = chunk_loss.detach() if total is None else total + chunk_loss.detach()
        finally:
            self._ottt_state.clear()
        return torch.stack(outputs).sum(0) / self.T, total


# ------------------------------------------------------------------------------------------ command-line flags
def add_memory_flags(parser) -> None:
    """``--train-mode``, ``--tbptt-k``, ``--checkpoint-segments`` and ``--bit-spikes`` for an example's parser."""
    group = parser.add_argument_group("training memory")
    group.add_argument("--train-mode", default="bptt", choices=TRAIN_MODES,
                       help="bptt: full backpropagation through time (default); tbptt: truncated, window "
                            "--tbptt-k; ottt / sltt: online, one step at a time (memory independent of T)")
    group.add_argument("--tbptt-k", default=None, type=int, help="TBPTT window in time steps")
    group.add_argument("--checkpoint-segments", default=None, type=int,
                       help="recompute the network in backward in this many time segments (the neuron state "
                            "is carried across them; gradients as BPTT's)")
    group.add_argument("--bit-spikes", action="store_true",
                       help="layers fed by spiking neurons save their input for backward as bits")


def check_memory_flags(args) -> None:
    """One-line errors for inconsistent memory flags."""
    if args.tbptt_k is not None and args.train_mode != "tbptt":
        raise UsageError(f"--tbptt-k is for --train-mode tbptt, not {args.train_mode}")
    if args.train_mode == "tbptt" and (args.tbptt_k is None or args.tbptt_k < 1):
        raise UsageError("--train-mode tbptt needs --tbptt-k K (K >= 1 time steps)")
    if args.checkpoint_segments is not None:
        if args.checkpoint_segments < 1:
            raise UsageError(f"--checkpoint-segments must be >= 1, got {args.checkpoint_segments}")
        if args.train_mode != "bptt":
            raise UsageError("--checkpoint-segments is for --train-mode bptt (the other modes already train "
                             "a few steps at a time)")


def apply_memory_flags(args, model: nn.Module, checkpointed: nn.Module, chunk_forward: Callable,
                       log: Callable[[str], None] = print) -> TimeTraining | None:
    """Apply ``--bit-spikes`` to ``model`` and ``--checkpoint-segments`` to ``checkpointed`` (a multi-step part
    of it); returns the :class:`TimeTraining` for ``--train-mode`` (None for bptt)."""
    from .. import memory

    if args.bit_spikes:
        changed = memory.bit_spikes(model)
        log(f"bit spikes: {len(changed)} layer(s) save their spike input as bits"
            + ("" if changed else " (no layer here is fed by a spiking neuron)"))
    if args.checkpoint_segments is not None:
        memory.checkpoint_time(checkpointed, segments=args.checkpoint_segments, batch_norm="per_chunk")
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in checkpointed.modules()):
            log(f"checkpointing in {args.checkpoint_segments} time segments: BatchNorm takes its training "
                f"statistics per segment")
    if args.train_mode == "bptt":
        return None
    return TimeTraining(args.train_mode, args.T, chunk_forward, k=args.tbptt_k)
