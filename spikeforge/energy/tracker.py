"""What each synaptic operation of a forward pass reads: spikes or real values, how many, and at what cost.

:class:`Tracker` is a ``TorchFunctionMode`` with forward hooks on every module of the model:

* the forward hook of every neuron module (a module whose ``spec`` is a :class:`~spikeforge.spec.NeuronSpec`)
  labels the tensor it returns with its producer: binary spikes when ``spec.binary_output`` is True (and the
  surrogate is not in its smooth, non-spiking mode), graded values otherwise;
* operations that keep a binary tensor binary (views and reshapes, flatten, permute, indexing, cat/stack of
  labelled tensors, max-pooling, zero padding, dtype casts, eval-mode dropout) carry the label to their output;
  every other operation produces an unlabelled (real-valued) tensor, and an in-place operation on a labelled
  tensor removes its label;
* every synaptic operation (``linear``, ``conv*``, ``conv_transpose*``, ``matmul``/``@``, ``mm``, ``bmm``,
  ``addmm``, ``baddbmm``, ``einsum``) is one call of a *row*, named after the innermost module running it. Its
  multiply-accumulates come from ``torch.utils.flop_counter.FlopCounterMode`` (which counts 2 FLOPs per MAC;
  halved here, bias additions are not counted), and the label of its input tells whether the input is spikes.

Nothing is re-derived from attribute names: only ``module.spec`` says what a neuron emits.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from ..spec import NeuronSpec

__all__ = ["Source", "RowStats", "Tracker", "neuron_modules"]

# synaptic operations -> positions of their data operands (None: einsum, operands after the equation)
_SYNAPTIC: dict[str, tuple[int, ...] | None] = {
    "linear": (0,), "conv1d": (0,), "conv2d": (0,), "conv3d": (0,), "conv_transpose1d": (0,),
    "conv_transpose2d": (0,), "conv_transpose3d": (0,), "matmul": (0, 1), "__matmul__": (0, 1),
    "__rmatmul__": (1, 0), "mm": (0, 1), "bmm": (0, 1), "addmm": (1, 2), "baddbmm": (1, 2), "einsum": None,
}

# operations whose output holds only values of their first (tensor or list-of-tensors) argument
_KEEPS_VALUES = frozenset({
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "squeeze", "unsqueeze", "permute",
    "transpose", "swapaxes", "swapdims", "movedim", "moveaxis", "t", "T", "mT", "contiguous", "clone", "detach",
    "to", "float", "double", "half", "bfloat16", "cpu", "cuda", "type_as", "expand", "expand_as", "repeat",
    "tile", "flip", "fliplr", "flipud", "roll", "narrow", "select", "__getitem__", "index_select", "chunk",
    "split", "tensor_split", "unbind", "cat", "concat", "concatenate", "stack", "hstack", "vstack", "max_pool1d",
    "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "adaptive_max_pool1d_with_indices",
    "adaptive_max_pool2d_with_indices", "adaptive_max_pool3d_with_indices", "pixel_shuffle", "pixel_unshuffle",
    "unfold", "pad", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "detach_", "squeeze_", "unsqueeze_", "t_", "transpose_",
})
_PROPERTIES = {"T": torch.Tensor.T, "mT": torch.Tensor.mT, "data": torch.Tensor.data}
_IN_PLACE_DUNDERS = frozenset({"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__",
                               "__imod__", "__ipow__", "__iand__", "__ior__", "__ixor__", "__ilshift__",
                               "__irshift__"})


def _func_name(func) -> str:
    name = getattr(func, "__name__", "")
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        for prop_name, prop in _PROPERTIES.items():
            if owner is prop:
                return prop_name
    return name


def _keeps_values(name: str, args, kwargs) -> bool:
    if name not in _KEEPS_VALUES:
        return False
    if name == "pad":   # F.pad(input, pad, mode='constant', value=None): only zero padding keeps spikes binary
        mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
        value = kwargs.get("value", args[3] if len(args) > 3 else None)
        return mode == "constant" and (value is None or value == 0)
    if "dropout" in name:   # F.dropout(input, p, training, inplace): the identity only when not training
        training = kwargs.get("training", args[2] if len(args) > 2 else True)
        return not training
    return True


@dataclass(frozen=True)
class Source:
    """Who produced a tensor: ``kind`` is 'spikes', 'graded', 'input' or 'input_spikes'."""

    kind: str
    description: str

    @property
    def is_spikes(self) -> bool:
        return self.kind in ("spikes", "input_spikes")


COMPUTED = Source("computed", "computed by a non-neuron operation (real-valued)")


@dataclass
class RowStats:
    """Sums over every call of one row (all batches)."""

    name: str
    type: str
    order: int
    calls: int = 0
    spike_calls: int = 0
    macs_all: float = 0.0           # multiply-accumulates of every call (whole batch, every step it covered)
    sample_steps: float = 0.0       # Σ over calls of (batch size × time steps covered by the call)
    spike_nnz: float = 0.0          # non-zero input elements of the spike calls
    spike_numel: float = 0.0
    static: bool = True             # the real-valued input was identical at every step of every batch
    sources: dict = field(default_factory=dict)   # description -> Source, in first-seen order
    reference: torch.Tensor | None = None         # first step of this batch (single-step static check)


def neuron_modules(model: nn.Module) -> dict[nn.Module, tuple[str, NeuronSpec]]:
    """Every module of ``model`` that describes itself with a :class:`NeuronSpec` (``module.spec``)."""
    found = {}
    for name, module in model.named_modules():
        try:
            spec = module.spec
        except Exception:  # noqa: BLE001 - not a neuron (no spec), or a spec that cannot be built now
            continue
        if isinstance(spec, NeuronSpec):
            found[module] = (name, spec)
    return found


def _neuron_source(name: str, module: nn.Module, spec: NeuronSpec) -> Source:
    what = f"{name or 'model'} ({type(module).__name__}, {spec.kind.value})"
    if not spec.binary_output:
        return Source("graded", f"{what}: graded output (spec.binary_output=False)")
    if spec.smooth:
        return Source("graded", f"{what}: smooth surrogate output (surrogate.spiking=False)")
    return Source("spikes", f"{what}: binary spikes")


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, torch.Tensor)]
    return []


class Tracker(TorchFunctionMode):
    """Records rows (synaptic operations) and neuron firing; use as a context manager around forward passes."""

    def __init__(self, model: nn.Module, step_mode: str):
        super().__init__()
        self.model = model
        self.step_mode = step_mode
        self.names = {module: name for name, module in model.named_modules()}
        self.neurons = {m: (name, spec, _neuron_source(name, m, spec))
                        for m, (name, spec) in neuron_modules(model).items()}
        self.neuron_counts: dict[str, list[float]] = {}
        self.rows: dict[str, RowStats] = {}
        self._tags: dict[int, tuple[weakref.ref, Source]] = {}
        self._stack: list[list] = []
        self._flops_cache: dict = {}
        self._busy = False
        self._handles: list = []
        self.T = 1
        self.N = 1

    # ------------------------------------------------------------------------------------------- hooks
    def attach(self) -> None:
        for module in self.names:
            self._handles.append(module.register_forward_pre_hook(self._push))
            self._handles.append(module.register_forward_hook(self._pop))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _push(self, module, inputs):
        self._stack.append([module, 0])

    def _pop(self, module, inputs, output):
        if self._stack and self._stack[-1][0] is module:
            self._stack.pop()
        neuron = self.neurons.get(module)
        if neuron is None:
            return
        name, spec, source = neuron
        self._busy = True
        try:
            for t in _tensors(output):
                self.tag(t, source)
                if source.is_spikes:
                    counts = self.neuron_counts.setdefault(name, [0.0, 0.0])
                    counts[0] += float(torch.count_nonzero(t))
                    counts[1] += t.numel()
        finally:
            self._busy = False

    # -------------------------------------------------------------------------------------------- tags
    def tag(self, tensor: torch.Tensor, source: Source) -> None:
        self._tags[id(tensor)] = (weakref.ref(tensor), source)

    def source_of(self, tensor) -> Source | None:
        entry = self._tags.get(id(tensor))
        if entry is not None and entry[0]() is tensor:
            return entry[1]
        return None

    def begin_batch(self, T: int, N: int) -> None:
        self.T, self.N = T, N
        self._stack.clear()
        for row in self.rows.values():
            row.reference = None

    def end_batch(self) -> None:
        self._tags.clear()
        self._stack.clear()
        for row in self.rows.values():
            row.reference = None

    # ----------------------------------------------------------------------------------- interception
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._busy:
            return func(*args, **kwargs)
        name = _func_name(func)
        if name in _SYNAPTIC:
            return self._synaptic(func, name, args, kwargs)
        out = func(*args, **kwargs)
        self._busy = True
        try:
            self._propagate(name, args, kwargs, out)
        finally:
            self._busy = False
        return out

    def _propagate(self, name: str, args, kwargs, out) -> None:
        first = args[0] if args else kwargs.get("input")
        if name in _IN_PLACE_DUNDERS or (name.endswith("_") and not name.endswith("__") and name not in _KEEPS_VALUES):
            if isinstance(first, torch.Tensor):
                self._tags.pop(id(first), None)
            return
        if not _keeps_values(name, args, kwargs):
            return
        sources = [self.source_of(t) for t in _tensors(first)]
        if not sources or any(s is None for s in sources):
            return
        if len({s.is_spikes for s in sources}) != 1:
            return
        for t in _tensors(out):
            self.tag(t, sources[0])

    def _flops(self, func, name: str, args, kwargs) -> tuple[object, int]:
        def describe(value):
            if isinstance(value, torch.Tensor):
                return ("T", tuple(value.shape), value.dtype)
            if isinstance(value, list | tuple):
                return tuple(describe(v) for v in value)
            return repr(value)

        key = (name, describe(args), describe(sorted(kwargs.items())))
        cached = self._flops_cache.get(key)
        if cached is not None:
            return func(*args, **kwargs), cached
        with FlopCounterMode(display=False) as counter:
            out = func(*args, **kwargs)
        flops = int(counter.get_total_flops())
        self._flops_cache[key] = flops
        return out, flops

    def _synaptic(self, func, name: str, args, kwargs):
        out, flops = self._flops(func, name, args, kwargs)
        self._busy = True
        try:
            positions = _SYNAPTIC[name]
            if positions is None:   # einsum(equation, *operands) or einsum(equation, [operands])
                rest = list(args[1:])
                operands = rest[0] if len(rest) == 1 and isinstance(rest[0], list | tuple) else rest
            else:
                operands = [args[i] if i < len(args) else kwargs.get("input") for i in positions]
            operands = [t for t in operands if isinstance(t, torch.Tensor)]
            self._record(name, operands, flops / 2.0)
        finally:
            self._busy = False
        return out

    # -------------------------------------------------------------------------------------- recording
    def _row(self, name: str) -> RowStats:
        if self._stack:
            frame = self._stack[-1]
            module, index = frame
            frame[1] += 1
        else:
            module, index = self.model, 0
        module_name = self.names.get(module, "")
        is_layer = isinstance(module, nn.Linear | nn.modules.conv._ConvNd)
        if is_layer and index == 0:
            row_name, row_type = module_name or "model", type(module).__name__
        else:
            row_name, row_type = f"{module_name or 'model'}.{name.strip('_')}[{index}]", name.strip("_")
        row = self.rows.get(row_name)
        if row is None:
            row = self.rows[row_name] = RowStats(row_name, row_type, len(self.rows))
        return row

    def _steps(self, data: torch.Tensor) -> int:
        """Time steps a call covers: T for a [T, N, ...] or folded [T·N, ...] input in multi-step mode, else 1."""
        if self.step_mode != "m" or self.T == 1 or data.dim() == 0:
            return 1
        lead = data.shape[0]
        if lead == self.T * self.N or (lead == self.T and data.dim() >= 2 and data.shape[1] == self.N):
            return self.T
        return 1

    def _record(self, name: str, operands: list[torch.Tensor], macs: float) -> None:
        row = self._row(name)
        sources = [self.source_of(t) for t in operands]
        spike_index = next((i for i, s in enumerate(sources) if s is not None and s.is_spikes), None)
        if spike_index is not None:
            data, source = operands[spike_index], sources[spike_index]
        else:
            index = next((i for i, t in enumerate(operands) if not isinstance(t, nn.Parameter)), 0)
            data = operands[index] if operands else None
            source = (sources[index] if operands else None) or COMPUTED
        row.sources.setdefault(source.description, source)
        steps = self._steps(data) if data is not None else 1
        row.calls += 1
        row.macs_all += macs
        row.sample_steps += self.N * steps
        if spike_index is not None:
            row.spike_calls += 1
            row.spike_nnz += float(torch.count_nonzero(data))
            row.spike_numel += data.numel()
        elif data is not None and row.static:
            if steps > 1:
                flat = data.reshape(steps, -1)
                row.static = bool(torch.equal(flat[1:], flat[:1].expand(steps - 1, -1)))
            elif row.reference is None:
                row.reference = data.detach().clone()
            else:
                row.static = row.reference.shape == data.shape and bool(torch.equal(row.reference, data))
