r"""NIR export and import: :func:`to_nir` writes a ``nir.NIRGraph``, :func:`from_nir` builds a spikeforge module.

NIR (the Neuromorphic Intermediate Representation) describes neurons by continuous-time equations; spikeforge's
neurons are discrete (the equations of :mod:`spikeforge.kernels.reference`). The two meet at a time step ``dt``
(seconds; default ``1e-4``, the value snnTorch fixes): NIR's LIF

    τ_nir·dv/dt = (v_leak − v) + r·I,     spike when v > v_threshold,  then v ← v_reset

integrated by one forward-Euler step of length dt,

    v_t = v_{t−1} + (dt/τ_nir)·((v_leak − v_{t−1}) + r·I_t),

is spikeforge's charge H_t = V_{t−1} − d·(V_{t−1} − V_r) + c·X_t exactly when

=====================  =========================================================================================
NIR field              spikeforge (``module.spec``; d = ``spec.leak.decay``, τ = 1/d in steps)
=====================  =========================================================================================
``tau``                τ·dt, i.e. dt/τ_nir = d = 1/τ (LIF, PLIF with its current τ); dt/(1 − r) for STBP's retention r
``r``                  1 with ``decay_input=True`` (c = d); τ with ``decay_input=False`` (c = d·r = 1)
``v_leak``             V_r (SpikingJelly's membrane decays towards the reset value; 0 for a soft reset)
``v_reset``            ``v_reset`` (hard reset); NIR has no subtractive reset, see below
``v_threshold``        V_th
=====================  =========================================================================================

IF (no leak, H_t = V_{t−1} + X_t) becomes NIR's ``IF`` with ``r = 1``, ``v_threshold`` and ``v_reset``. NIR writes
``dv/dt = R·I`` without a time unit; like Norse and snnTorch, spikeforge reads ``r`` as the input gain of one step
(r = 1: H = V + X), independent of dt. Every parameter is an array of the neuron layer's per-sample shape
(float64, so that τ·dt and back loses nothing); shapes exclude T and N, and every node carries its
``input_type`` / ``output_type``.

**Threshold ties.** NIR, Norse and snnTorch fire on ``v > v_threshold``; spikeforge (like SpikingJelly) fires on
``H ≥ V_th``. The exported ``v_threshold`` is V_th unchanged, so another reader of a spikeforge graph misses the
spikes of membranes that land exactly on the threshold. With float inputs and weights that is rare; with integer
weights and spike inputs (or integer thresholds) ties are common and the spike trains then differ. The node
metadata records ``spikeforge.fire = ">="``, and :func:`from_nir` restores the tie rule from it; a graph from
elsewhere is imported with NIR's strict ``>``, emulated by raising V_th by one float32 ulp (exact for float32
membranes, spikeforge's membrane dtype for every input but float64). Pass ``fire_on_tie`` to force either.

**Soft reset.** NIR has only ``v ← v_reset``; a soft-reset neuron (``v_reset=None``: V ← H − V_th) cannot be
written faithfully and raises ``ValueError`` unless ``allow_soft_reset=True``, which writes ``v_reset = 0`` and
records ``spikeforge.reset = "subtract"`` in the node metadata. :func:`from_nir` honours that record; other
readers reset to 0.

**What is exported.** ``Linear`` (→ ``Affine`` / ``Linear``), ``Conv1d``/``Conv2d``, ``Flatten`` (and
``torch.flatten``), ``AvgPool2d`` (and ``AdaptiveAvgPool2d`` with an integer ratio), sum pooling (``AvgPool2d``
with ``divisor_override=1`` or ``LPPool2d(1, …)`` → ``SumPool2d``), the spikeforge layers of these, additions of
two branches (NIR sums the edges arriving at a node), BatchNorm (folded into the Conv/Linear before it with
:func:`spikeforge.ann2snn.fold_batchnorm`; a BatchNorm with nothing before it becomes a depth-wise 1×1 conv),
``VoltageScaler`` (→ ``Scale``), Dropout and Identity (dropped), and the neurons IF / LIF / PLIF / STBP's
LIFSpike, plus the ANN→SNN IF neuron and ``IFActivation`` (soft reset: ``allow_soft_reset=True``). Anything else
raises :class:`~spikeforge.export.UnsupportedModuleError` naming the module path and type.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import OrderedDict

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from .. import __version__
from .. import layer as _layer
from .. import neuron as _neuron
from .. import surrogate as _surrogate
from ..ann2snn.modules import ChannelAffine, ConversionIFNode, IFActivation, VoltageScaler
from ..spec import LeakLaw, NeuronKind, NeuronSpec
from ._common import (
    ExportError,
    NIRFileError,
    TracedModel,
    UnsupportedModuleError,
    is_dropout,
    module_label,
    neuron_spec,
)

__all__ = ["to_nir", "from_nir", "DEFAULT_DT", "InputAffine", "NIRGraphModule"]

DEFAULT_DT = 1e-4
_META_SPEC = "spikeforge.spec"
_META_RESET = "spikeforge.reset"
_META_FIRE = "spikeforge.fire"
_REL = 1e-6  # relative tolerance when a graph's parameters are matched against a recorded spec


def _nir():
    try:
        import nir
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("NIR export needs the nir package: pip install 'spikeforge[nir]'") from exc
    return nir


def _check_dt(dt) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be a finite number of seconds > 0, got {dt!r}")
    return float(dt)


def _full(shape, value) -> np.ndarray:
    return np.full(tuple(shape), float(value), dtype=np.float64)


def _pair(value, n: int = 2) -> np.ndarray:
    if isinstance(value, (tuple, list)):
        return np.array([int(v) for v in value], dtype=np.int64)
    return np.array([int(value)] * n, dtype=np.int64)


# ================================================================================================= export
class _Exporter:
    def __init__(self, traced: TracedModel, dt: float, allow_soft_reset: bool):
        self.nir = _nir()
        self.traced = traced
        self.dt = dt
        self.allow_soft_reset = allow_soft_reset
        self.nodes: OrderedDict[str, object] = OrderedDict()
        self.edges: list[tuple[str, str]] = []

    # ---------------------------------------------------------------------------------- graph bookkeeping
    def _name(self, base: str) -> str:
        base = base or "node"
        name, k = base, 1
        while name in self.nodes:
            name = f"{base}_{k}"
            k += 1
        return name

    def _add_chain(self, base: str, parts: list, sources: list[str]) -> list[str]:
        """Add ``parts`` [(suffix, nir node)] as a chain fed by ``sources``; returns the chain's end."""
        for suffix, node in parts:
            name = self._name(base + suffix)
            self.nodes[name] = node
            for src in sources:
                self.edges.append((src, name))
            sources = [name]
        return sources

    # ------------------------------------------------------------------------------------------ the walk
    def run(self):
        nir = self.nir
        traced = self.traced
        sources: dict[fx.Node, list[str]] = {}
        for node in traced.gm.graph.nodes:
            if node.op == "placeholder":
                self.nodes["input"] = nir.Input(input_type=np.array(traced.sample_shape(node)))
                sources[node] = ["input"]
            elif node.op == "output":
                arg = node.args[0]
                self.nodes["output"] = nir.Output(output_type=np.array(traced.sample_shape(arg)))
                for src in sources[arg]:
                    self.edges.append((src, "output"))
            elif node.op == "call_module":
                m = traced.module(node)
                if isinstance(m, nn.Identity) or is_dropout(m):
                    sources[node] = sources[node.args[0]]
                    continue
                if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
                    raise UnsupportedModuleError(f"{module_label(node.target, m)} is called with "
                                                 f"{len(node.args)} arguments; NIR nodes take one input")
                parts = self._module(node, m)
                sources[node] = self._add_chain(node.target, parts, sources[node.args[0]])
            elif node.op in ("call_function", "call_method"):
                sources[node] = self._function(node, sources)
            else:
                raise UnsupportedModuleError(f"graph node {node.name!r} ({node.op} {node.target}) has no NIR form")
        metadata = {
            "spikeforge.version": __version__,
            "spikeforge.dt": self.dt,
            "spikeforge.fire": ">=",
            "spikeforge.time_steps": traced.steps,
        }
        try:
            graph = nir.NIRGraph(nodes=dict(self.nodes), edges=list(self.edges), metadata=metadata,
                                 type_check=True)
        except (ValueError, AssertionError) as exc:
            raise ExportError(f"the exported NIR graph does not type-check: {exc}") from exc
        return graph

    def _function(self, node: fx.Node, sources) -> list[str]:
        import operator

        target = node.target
        name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
        tensors = [a for a in node.args if isinstance(a, fx.Node)]
        if target in (operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__iadd__"):
            if len(tensors) == 2 and len(node.args) == 2 and not node.kwargs:
                left, right = sources[tensors[0]], sources[tensors[1]]
                if set(left) & set(right):
                    raise UnsupportedModuleError(f"addition {node.name!r} adds a branch to itself; NIR sums "
                                                 "distinct edges only")
                return left + right
        if target in (torch.flatten, "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            if isinstance(start, int) and isinstance(end, int):
                parts = [("", self._flatten(node, node.args[0], start, end, f"torch.flatten at {node.name!r}"))]
                return self._add_chain(node.name, parts, sources[node.args[0]])
        raise UnsupportedModuleError(
            f"function {name!r} (graph node {node.name!r}) has no NIR form; supported functions: the addition of "
            "two branches and torch.flatten")

    def _flatten(self, node, src, start, end, label):
        full = len(self.traced.shape(src))
        start = start + full if start < 0 else start
        end = end + full if end < 0 else end
        if start < 1:
            raise UnsupportedModuleError(f"{label} flattens the batch dimension (start_dim={start}); NIR shapes "
                                         "have no batch dimension")
        nir_end = -1 if end == full - 1 else end - 1
        return self.nir.Flatten(input_type={"input": np.array(self.traced.sample_shape(src))},
                                start_dim=start - 1, end_dim=nir_end)

    # ------------------------------------------------------------------------------------------ modules
    def _module(self, node: fx.Node, m: nn.Module) -> list:
        nir = self.nir
        label = module_label(node.target, m)
        src = node.args[0]
        in_shape = self.traced.sample_shape(src)
        out_shape = self.traced.sample_shape(node)
        if isinstance(m, IFActivation):
            return self._if_activation(m, in_shape, label)
        if neuron_spec(m) is not None:
            return self._neuron(m, neuron_spec(m), in_shape, label)
        if isinstance(m, nn.Linear):
            if len(in_shape) != 1:
                raise UnsupportedModuleError(f"{label} acts on inputs of per-sample shape {list(in_shape)}; NIR's "
                                             "Affine maps vectors (flatten first)")
            weight = m.weight.detach().cpu().numpy()
            if m.bias is None:
                return [("", nir.Linear(weight=weight))]
            return [("", nir.Affine(weight=weight, bias=m.bias.detach().cpu().numpy()))]
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            return [("", self._conv(m, in_shape, out_shape, label))]
        if isinstance(m, nn.Flatten):
            return [("", self._flatten(node, src, m.start_dim, m.end_dim, label))]
        if isinstance(m, nn.AvgPool2d):
            return [("", self._avg_pool(m, label))]
        if isinstance(m, nn.LPPool2d):
            if float(m.norm_type) != 1.0 or m.ceil_mode:
                raise UnsupportedModuleError(f"{label}: only LPPool2d with norm_type=1 (sum pooling) and "
                                             "ceil_mode=False has a NIR form (SumPool2d)")
            kernel = _pair(m.kernel_size)
            stride = _pair(m.stride if m.stride is not None else m.kernel_size)
            return [("", nir.SumPool2d(kernel_size=kernel, stride=stride, padding=np.zeros(2, dtype=np.int64)))]
        if isinstance(m, nn.AdaptiveAvgPool2d):
            size = _pair(m.output_size if not isinstance(m.output_size, int) else (m.output_size, m.output_size))
            hw = np.array(in_shape[1:])
            if len(hw) != 2 or np.any(size <= 0) or np.any(hw % size):
                raise UnsupportedModuleError(f"{label}: adaptive pooling of {list(hw)} to {list(size)} is not a "
                                             "fixed-window average pool (the sizes must divide)")
            kernel = hw // size
            return [("", nir.AvgPool2d(kernel_size=kernel, stride=kernel, padding=np.zeros(2, dtype=np.int64)))]
        if isinstance(m, ChannelAffine):
            return [("", self._channel_affine(m, in_shape, label))]
        if isinstance(m, VoltageScaler):
            scale = m.scale.detach().double().cpu().expand((1, *in_shape) if m.scale.dim() > 0 else in_shape)
            return [("", nir.Scale(scale=np.ascontiguousarray(scale.reshape(in_shape).numpy())))]
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise UnsupportedModuleError(f"{label}: BatchNorm without running statistics cannot be folded")
        raise UnsupportedModuleError(
            f"{label} has no NIR form; supported: Linear, Conv1d, Conv2d, Flatten, AvgPool2d, SumPool "
            "(AvgPool2d(divisor_override=1), LPPool2d(1)), AdaptiveAvgPool2d, BatchNorm (folded), VoltageScaler, "
            "Dropout/Identity and the IF / LIF / PLIF / STBP LIF / ANN→SNN IF neurons")

    def _conv(self, m, in_shape, out_shape, label):
        nir = self.nir
        if m.padding_mode != "zeros":
            raise UnsupportedModuleError(f"{label} pads with {m.padding_mode!r}; NIR convolutions pad with zeros")
        weight = m.weight.detach().cpu().numpy()
        bias = (m.bias.detach().cpu().numpy() if m.bias is not None
                else np.zeros(weight.shape[0], dtype=weight.dtype))
        n = 1 if isinstance(m, nn.Conv1d) else 2
        padding = m.padding if isinstance(m.padding, str) else _pair(m.padding, n)
        kwargs = dict(weight=weight, stride=_pair(m.stride, n), padding=padding, dilation=_pair(m.dilation, n),
                      groups=int(m.groups), bias=bias)
        if n == 1:
            node = nir.Conv1d(input_shape=int(in_shape[1]), **kwargs)
        else:
            node = nir.Conv2d(input_shape=tuple(int(s) for s in in_shape[1:]), **kwargs)
        if list(node.output_type["output"]) != list(out_shape):
            raise ExportError(f"{label}: NIR computes output shape {list(node.output_type['output'])}, the model "
                              f"gives {list(out_shape)}")
        return node

    def _avg_pool(self, m: nn.AvgPool2d, label):
        nir = self.nir
        if m.ceil_mode:
            raise UnsupportedModuleError(f"{label} uses ceil_mode=True; NIR pools floor the output size")
        kernel = _pair(m.kernel_size)
        stride = _pair(m.stride if m.stride is not None else m.kernel_size)
        padding = _pair(m.padding)
        if m.divisor_override == 1:
            return nir.SumPool2d(kernel_size=kernel, stride=stride, padding=padding)
        if m.divisor_override is not None:
            raise UnsupportedModuleError(f"{label} divides by {m.divisor_override}; NIR has average and sum pools")
        if np.any(padding) and not m.count_include_pad:
            raise UnsupportedModuleError(f"{label} pads with count_include_pad=False; NIR's AvgPool2d averages "
                                         "over the whole (padded) window")
        return nir.AvgPool2d(kernel_size=kernel, stride=stride, padding=padding)

    def _channel_affine(self, m: ChannelAffine, in_shape, label):
        nir = self.nir
        scale = m.weight.detach().cpu().float().numpy()
        shift = m.bias.detach().cpu().float().numpy()
        channels = scale.shape[0]
        if len(in_shape) == 1:
            return nir.Affine(weight=np.diag(scale), bias=shift)
        if len(in_shape) not in (2, 3):
            raise UnsupportedModuleError(f"{label}: a per-channel affine on {len(in_shape)}-d samples has no NIR form")
        weight = scale.reshape(channels, 1, *([1] * (len(in_shape) - 1)))
        kwargs = dict(weight=weight, stride=_pair(1, len(in_shape) - 1), padding=_pair(0, len(in_shape) - 1),
                      dilation=_pair(1, len(in_shape) - 1), groups=channels, bias=shift)
        if len(in_shape) == 2:
            return nir.Conv1d(input_shape=int(in_shape[1]), **kwargs)
        return nir.Conv2d(input_shape=tuple(int(s) for s in in_shape[1:]), **kwargs)

    # ------------------------------------------------------------------------------------------ neurons
    def _metadata(self, spec: NeuronSpec, soft: bool) -> dict:
        return {
            _META_SPEC: json.dumps(spec.to_dict(), sort_keys=True),
            _META_RESET: "subtract" if soft else "to_value",
            _META_FIRE: ">=" if spec.fire_on_tie else ">",
            "spikeforge.kind": spec.kind.value,
        }

    def _check_soft(self, spec: NeuronSpec, label: str) -> bool:
        if not spec.soft_reset:
            return False
        if not self.allow_soft_reset:
            raise ValueError(
                f"neuron {label} has a soft reset (v_reset=None: V ← H − V_th after a spike), and NIR has no "
                "subtractive reset: its neurons only reset to v_reset. Pass allow_soft_reset=True to export it "
                "anyway (v_reset = 0 is written and the rule is recorded in the node metadata; spikeforge's "
                "from_nir honours it, other readers reset to 0)")
        return True

    def _neuron(self, m, spec: NeuronSpec, shape, label) -> list:
        nir = self.nir
        if spec.smooth:
            raise UnsupportedModuleError(f"neuron {label} emits the smooth surrogate (spiking=False), not spikes")
        if spec.kind is NeuronKind.CONVERSION_IF:
            return self._conversion_if(m, spec, shape, label)
        if spec.kind not in (NeuronKind.IF, NeuronKind.LIF, NeuronKind.PLIF, NeuronKind.STBP_LIF):
            raise UnsupportedModuleError(f"neuron {label} of kind {spec.kind.value} has no NIR form")
        soft = self._check_soft(spec, label)
        v_r = spec.reset_value
        meta = self._metadata(spec, soft)
        if not spec.leaky or spec.leak.decay == 0.0:
            return [("", nir.IF(r=_full(shape, 1.0), v_threshold=_full(shape, spec.v_threshold),
                                v_reset=_full(shape, v_r), metadata=meta))]
        if spec.leak.law is LeakLaw.RETENTION:
            steps = 1.0 / spec.leak.decay           # STBP: d = 1 − r, no input scaling (c = 1)
            gain_r = steps
        else:
            steps = spec.leak.value                 # LIF / PLIF: τ in steps (PLIF: its current value)
            gain_r = 1.0 if spec.decay_input else steps
        meta["spikeforge.tau_steps"] = float(steps)
        return [("", nir.LIF(tau=_full(shape, steps * self.dt), r=_full(shape, gain_r), v_leak=_full(shape, v_r),
                             v_threshold=_full(shape, spec.v_threshold), v_reset=_full(shape, v_r), metadata=meta))]

    def _conversion_if(self, m, spec: NeuronSpec, shape, label) -> list:
        nir = self.nir
        options = spec.conversion
        if options.half_threshold:
            raise UnsupportedModuleError(f"neuron {label} starts at V_th/2 (half_threshold); NIR neurons start "
                                         "at rest")
        if options.signed_spikes:
            raise UnsupportedModuleError(f"neuron {label} emits signed spikes; NIR spikes are 0 or 1")
        self._check_soft(spec, label)
        theta = m.v_threshold.detach().double().cpu()
        theta = theta.expand((1, *shape) if theta.dim() > len(shape) else shape).reshape(shape).numpy()
        theta = np.ascontiguousarray(theta)
        meta = self._metadata(spec, True)
        parts = [("", nir.IF(r=_full(shape, 1.0), v_threshold=theta, v_reset=_full(shape, 0.0), metadata=meta))]
        if options.emit_threshold:
            parts.append((".amplitude", nir.Scale(scale=theta.copy())))
        return parts

    def _if_activation(self, block: IFActivation, shape, label) -> list:
        parts = []
        if block.scale_in is not None:
            parts += [(".scale_in", self._module_scale(block.scale_in, shape))]
        inner = self._neuron(block.neuron, block.neuron.spec, shape, f"{label}.neuron")
        parts += inner
        if block.scale_out is not None:
            parts += [(".scale_out", self._module_scale(block.scale_out, shape))]
        return parts

    def _module_scale(self, scaler: VoltageScaler, shape):
        scale = scaler.scale.detach().double().cpu()
        scale = scale.expand((1, *shape) if scale.dim() > len(shape) else shape).reshape(shape)
        return self.nir.Scale(scale=np.ascontiguousarray(scale.numpy()))


def to_nir(model: nn.Module, sample_input: torch.Tensor, dt: float = DEFAULT_DT, allow_soft_reset: bool = False):
    """The ``nir.NIRGraph`` of a spiking network (discretisation and conventions: see the module docstring).

    Args:
        model: ``nn.Sequential`` of spikeforge / torch layers and neurons, or any module whose forward
            ``torch.fx`` traces (additions of branches become NIR's summed edges), in either step mode; it is
            copied, never modified.
        sample_input: ``[T, N, ...]``; one step of it fixes the shapes written into the graph.
        dt: the time step in seconds that maps spikeforge's per-step time constants onto NIR's (``tau = τ·dt``).
        allow_soft_reset: export soft-reset neurons (recorded in the node metadata) instead of raising.

    Returns:
        ``nir.NIRGraph`` with ``Input``/``Output`` nodes, typed; save it with ``nir.write(path, graph)``.
    """
    dt = _check_dt(dt)
    traced = TracedModel(model, sample_input, fold_batchnorm=True)
    return _Exporter(traced, dt, bool(allow_soft_reset)).run()


# ================================================================================================= import
class InputAffine(nn.Module):
    """``x·scale + shift`` element-wise, ``scale``/``shift`` of the neuron layer's per-sample shape.

    Puts a NIR neuron's input gain ``r`` (or a ``v_leak`` away from ``v_reset``) in front of a spikeforge
    neuron, which has neither.
    """

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float64).clone())
        self.register_buffer("shift", None if shift is None else torch.as_tensor(shift, dtype=torch.float64).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.scale.to(x.dtype)
        return y if self.shift is None else y + self.shift.to(x.dtype)


class NIRGraphModule(nn.Module):
    """A NIR graph that is not a chain: nodes run in topological order, a node's input is the sum of its edges."""

    def __init__(self, modules: OrderedDict[str, nn.Module], inputs: dict[str, list[str]], entry: str, exit_: str):
        super().__init__()
        self.nodes = nn.ModuleDict(modules)
        self.order = list(modules)
        self.inputs = {k: list(v) for k, v in inputs.items()}
        self.entry = entry
        self.exit = exit_

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        values = {self.entry: x_seq}
        for name in self.order:
            srcs = self.inputs[name]
            total = values[srcs[0]]
            for src in srcs[1:]:
                total = total + values[src]
            values[name] = self.nodes[name](total)
        srcs = self.inputs[self.exit]
        out = values[srcs[0]]
        for src in srcs[1:]:
            out = out + values[src]
        return out


def _array(value, name: str, node_name: str) -> np.ndarray:
    if value is None:
        raise NIRFileError(f"NIR node {node_name!r} has no {name}")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _uniform(value: np.ndarray, what: str, node_name: str) -> float:
    flat = value.reshape(-1)
    if flat.size == 0:
        raise NIRFileError(f"NIR node {node_name!r} has an empty {what}")
    if not np.all(flat == flat[0]):
        raise UnsupportedModuleError(
            f"NIR node {node_name!r} has {np.unique(flat).size} different values of {what}; spikeforge's neurons "
            f"take one {what} per layer")
    return float(flat[0])


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _REL * max(abs(a), abs(b), 1e-300)


def _metadata_text(meta: dict, key: str):
    value = meta.get(key)
    if isinstance(value, bytes):
        value = value.decode("utf8")
    if isinstance(value, np.ndarray) and value.dtype.kind in "SUO" and value.size == 1:
        value = value.reshape(-1)[0]
        value = value.decode("utf8") if isinstance(value, bytes) else str(value)
    return value


def _strict_threshold(threshold):
    """The smallest float32 above V_th: ``H ≥ it`` equals NIR's ``H > V_th`` for float32 membranes."""
    t32 = np.asarray(threshold, dtype=np.float32)
    return np.nextafter(t32, np.float32(np.inf), dtype=np.float32).astype(np.float64)


class _Importer:
    def __init__(self, graph, dt: float, fire_on_tie: bool | None):
        self.nir = _nir()
        self.graph = graph
        self.dt = dt
        self.fire_on_tie = fire_on_tie

    def build(self) -> nn.Module:
        nir = self.nir
        graph = self.graph
        nodes = graph.nodes
        inputs = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
        outputs = [k for k, n in nodes.items() if isinstance(n, nir.Output)]
        if len(inputs) != 1 or len(outputs) != 1:
            raise UnsupportedModuleError(f"the NIR graph has {len(inputs)} Input and {len(outputs)} Output nodes; "
                                         "from_nir builds modules with one input and one output")
        entry, exit_ = inputs[0], outputs[0]
        preds: dict[str, list[str]] = {k: [] for k in nodes}
        succs: dict[str, list[str]] = {k: [] for k in nodes}
        for src, dst in graph.edges:
            src, dst = str(src), str(dst)
            if src not in nodes or dst not in nodes:
                raise NIRFileError(f"edge ({src!r}, {dst!r}) names a node that is not in the graph")
            preds[dst].append(src)
            succs[src].append(dst)
        order = self._topological(nodes, preds, succs)
        modules: OrderedDict[str, nn.Module] = OrderedDict()
        names: dict[str, str] = {}
        for key in order:
            if key in (entry, exit_):
                continue
            if not preds[key]:
                raise NIRFileError(f"NIR node {key!r} has no incoming edge")
            module = self._module(key, nodes[key])
            safe = self._safe_name(key, modules)
            names[key] = safe
            modules[safe] = module
        names[entry] = "__input__"
        if not preds[exit_]:
            raise NIRFileError(f"the Output node {exit_!r} has no incoming edge")
        if self._is_chain(order, preds, succs, entry, exit_):
            return nn.Sequential(modules)
        inputs_of = {names[k]: [names[p] for p in preds[k]] for k in order if k not in (entry, exit_)}
        inputs_of["__output__"] = [names[p] for p in preds[exit_]]
        return NIRGraphModule(modules, inputs_of, "__input__", "__output__")

    @staticmethod
    def _safe_name(key: str, taken) -> str:
        base = re.sub(r"[^0-9A-Za-z_]", "_", key) or "node"
        name, k = base, 1
        while name in taken or name in ("__input__", "__output__"):
            name = f"{base}_{k}"
            k += 1
        return name

    @staticmethod
    def _topological(nodes, preds, succs) -> list[str]:
        remaining = {k: len(v) for k, v in preds.items()}
        ready = [k for k in nodes if remaining[k] == 0]
        order = []
        while ready:
            k = ready.pop(0)
            order.append(k)
            for s in succs[k]:
                remaining[s] -= 1
                if remaining[s] == 0:
                    ready.append(s)
        if len(order) != len(nodes):
            cycle = sorted(k for k, n in remaining.items() if n > 0)
            raise UnsupportedModuleError(f"the NIR graph is recurrent (a cycle through {cycle}); from_nir builds "
                                         "feed-forward modules only")
        return order

    @staticmethod
    def _is_chain(order, preds, succs, entry, exit_) -> bool:
        if any(len(preds[k]) > 1 or len(succs[k]) > 1 for k in order):
            return False
        k, visited = entry, 1
        while succs[k]:
            k = succs[k][0]
            visited += 1
        return k == exit_ and visited == len(order)

    # ------------------------------------------------------------------------------------------ modules
    def _module(self, key: str, node) -> nn.Module:
        nir = self.nir
        kind = type(node).__name__
        if not isinstance(node, nir.NIRNode):
            raise UnsupportedModuleError(
                f"NIR node {key!r} is {kind}, not a NIR node: the tool that wrote the graph had no NIR form for "
                "that layer (Norse writes None for Flatten and pooling layers)")
        if isinstance(node, nir.Affine):
            weight = _array(node.weight, "weight", key)
            if weight.ndim != 2:
                raise UnsupportedModuleError(f"NIR Affine {key!r} has a {weight.ndim}-d weight; only matrices")
            m = _layer.Linear(weight.shape[1], weight.shape[0], bias=True, step_mode="m")
            self._copy(m, weight, _array(node.bias, "bias", key))
            return m
        if isinstance(node, nir.Linear):
            weight = _array(node.weight, "weight", key)
            if weight.ndim != 2:
                raise UnsupportedModuleError(f"NIR Linear {key!r} has a {weight.ndim}-d weight; only matrices")
            m = _layer.Linear(weight.shape[1], weight.shape[0], bias=False, step_mode="m")
            self._copy(m, weight, None)
            return m
        if isinstance(node, (nir.Conv1d, nir.Conv2d)):
            return self._conv(key, node)
        if isinstance(node, nir.Flatten):
            start, end = int(node.start_dim), int(node.end_dim)
            return _layer.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end, step_mode="m")
        if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
            kernel = tuple(int(v) for v in np.broadcast_to(np.asarray(node.kernel_size), (2,)))
            stride = tuple(int(v) for v in np.broadcast_to(np.asarray(node.stride), (2,)))
            padding = tuple(int(v) for v in np.broadcast_to(np.asarray(node.padding), (2,)))
            divisor = 1 if isinstance(node, nir.SumPool2d) else None
            return _layer.AvgPool2d(kernel, stride, padding, divisor_override=divisor, step_mode="m")
        if isinstance(node, nir.Scale):
            return VoltageScaler(torch.as_tensor(_array(node.scale, "scale", key), dtype=torch.float32))
        if isinstance(node, nir.IF):
            return self._neuron(key, node, leaky=False)
        if isinstance(node, nir.LIF):
            return self._neuron(key, node, leaky=True)
        raise UnsupportedModuleError(
            f"NIR node {key!r} of type {kind} has no spikeforge module; supported: Affine, Linear, Conv1d, Conv2d, "
            "Flatten, AvgPool2d, SumPool2d, Scale, IF, LIF (feed-forward graphs)")

    @staticmethod
    def _copy(m: nn.Module, weight: np.ndarray, bias: np.ndarray | None) -> None:
        with torch.no_grad():
            m.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            if bias is not None:
                m.bias.copy_(torch.as_tensor(bias, dtype=torch.float32).reshape(-1))

    def _conv(self, key, node):
        nir = self.nir
        weight = _array(node.weight, "weight", key)
        n = 1 if isinstance(node, nir.Conv1d) else 2
        if weight.ndim != n + 2:
            raise NIRFileError(f"NIR {type(node).__name__} {key!r} has a weight of shape {list(weight.shape)}")
        groups = int(node.groups)

        def tup(value):
            return tuple(int(v) for v in np.broadcast_to(np.asarray(value), (n,)))

        padding = node.padding
        if isinstance(padding, bytes):
            padding = padding.decode("utf8")
        padding = padding if isinstance(padding, str) else tup(padding)
        cls = _layer.Conv1d if n == 1 else _layer.Conv2d
        m = cls(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride=tup(node.stride),
                padding=padding, dilation=tup(node.dilation), groups=groups, bias=True, step_mode="m")
        bias = node.bias if node.bias is not None else np.zeros(weight.shape[0])
        self._copy(m, weight, _array(bias, "bias", key))
        return m

    # ------------------------------------------------------------------------------------------ neurons
    def _neuron(self, key: str, node, leaky: bool) -> nn.Module:
        meta = node.metadata if isinstance(getattr(node, "metadata", None), dict) else {}
        r = _array(node.r, "r", key)
        v_th = _array(node.v_threshold, "v_threshold", key)
        v_reset = _array(node.v_reset if node.v_reset is not None else np.zeros_like(v_th), "v_reset", key)
        if leaky:
            tau = _array(node.tau, "tau", key)
            v_leak = _array(node.v_leak, "v_leak", key)
            if np.any(tau <= 0):
                raise NIRFileError(f"NIR LIF {key!r} has a time constant <= 0")
            decay = self.dt / tau
        else:
            decay = np.zeros_like(r)
            v_leak = None
        shape = np.broadcast_shapes(r.shape, v_th.shape, v_reset.shape, decay.shape)
        soft = _metadata_text(meta, _META_RESET) == "subtract"
        recorded_tie = _metadata_text(meta, _META_FIRE)
        fire_on_tie = self.fire_on_tie if self.fire_on_tie is not None else recorded_tie == ">="
        spec = self._recorded_spec(meta)
        if spec is not None:
            module = self._from_spec(spec, key, decay, r, v_th, v_reset, v_leak, soft, fire_on_tie)
            if module is not None:
                return module
        d = _uniform(decay, "time constant", key)
        v_r = 0.0 if soft else _uniform(v_reset, "v_reset", key)
        if not 0.0 <= d < 1.0:
            raise UnsupportedModuleError(
                f"NIR LIF {key!r} has dt/tau = {d:.6g} at dt = {self.dt:g} s; spikeforge's LIF needs 0 < dt/tau < 1 "
                "(a time constant of more than one step): pass the dt the graph was written with")
        # input transform x' = a·x + b so that the charge is spikeforge's with c = d (decay_input) or c = 1
        gain = decay * r if leaky else r
        offset = np.zeros_like(gain) if v_leak is None else decay * (np.broadcast_to(v_leak, shape) - v_r)
        decay_input = bool(leaky and np.allclose(r, 1.0, rtol=_REL, atol=0.0))
        scale = None
        if decay_input:
            offset = offset / d
        elif not np.allclose(gain, 1.0, rtol=_REL, atol=0.0):
            scale = np.broadcast_to(gain, shape)
        has_offset = np.any(np.abs(offset) > 0)
        threshold = np.broadcast_to(v_th, shape)
        if not fire_on_tie:
            threshold = _strict_threshold(threshold)
        uniform_threshold = bool(np.all(threshold == threshold.reshape(-1)[0]))
        if not uniform_threshold and not (soft and d == 0.0):
            raise UnsupportedModuleError(f"NIR node {key!r} has per-neuron thresholds; spikeforge's IF/LIF take one "
                                         "(per-neuron thresholds are supported for soft-reset IF neurons)")
        if d == 0.0 and soft and not uniform_threshold:
            neuron_module = ConversionIFNode(torch.as_tensor(np.ascontiguousarray(threshold), dtype=torch.float32),
                                             step_mode="m")
        elif d == 0.0:
            neuron_module = _neuron.IFNode(v_threshold=float(threshold.reshape(-1)[0]),
                                           v_reset=None if soft else v_r, step_mode="m")
        else:
            neuron_module = _neuron.LIFNode(tau=1.0 / d, decay_input=decay_input,
                                            v_threshold=float(threshold.reshape(-1)[0]),
                                            v_reset=None if soft else v_r, step_mode="m")
        if scale is None and not has_offset:
            return neuron_module
        pre = InputAffine(torch.tensor(scale if scale is not None else np.ones(shape)),
                          torch.tensor(np.broadcast_to(offset, shape)) if has_offset else None)
        return nn.Sequential(OrderedDict(input=pre, neuron=neuron_module))

    @staticmethod
    def _recorded_spec(meta: dict) -> NeuronSpec | None:
        text = _metadata_text(meta, _META_SPEC)
        if not text:
            return None
        try:
            return NeuronSpec.from_dict(json.loads(text))
        except (ValueError, TypeError, KeyError):
            return None

    def _from_spec(self, spec: NeuronSpec, key, decay, r, v_th, v_reset, v_leak, soft, fire_on_tie):
        """The recorded spikeforge neuron, when the graph's parameters at this dt still describe it."""
        if spec.soft_reset != soft or spec.fire_on_tie != fire_on_tie:
            return None
        if spec.kind is NeuronKind.CONVERSION_IF:
            if not (np.all(decay == 0) and np.allclose(r, 1.0, rtol=_REL, atol=0.0)):
                return None
            flat = v_th.reshape(-1)
            theta = flat[0] if np.all(flat == flat[0]) else np.ascontiguousarray(v_th)
            return ConversionIFNode(torch.as_tensor(theta, dtype=torch.float32), step_mode="m")
        d = spec.leak.decay
        gain = d if (spec.leaky and spec.decay_input) else 1.0
        try:
            same = (all(_close(float(v), d) for v in decay.reshape(-1))
                    and all(_close(float(g), gain) for g in (decay * r if v_leak is not None else r).reshape(-1))
                    and all(_close(float(v), spec.v_threshold) for v in v_th.reshape(-1))
                    and (soft or all(_close(float(v), spec.reset_value) for v in v_reset.reshape(-1)))
                    and (v_leak is None or all(_close(float(v), spec.reset_value) for v in v_leak.reshape(-1))))
        except (TypeError, ValueError):
            return None
        if not same:
            return None
        sg = _surrogate.from_spec(spec.surrogate) if spec.surrogate is not None else None
        common = dict(v_threshold=spec.v_threshold, v_reset=spec.v_reset, surrogate_function=sg,
                      detach_reset=spec.detach_reset, step_mode="m")
        if spec.kind is NeuronKind.IF:
            return _neuron.IFNode(**common)
        if spec.kind is NeuronKind.LIF:
            return _neuron.LIFNode(tau=spec.leak.value, decay_input=spec.decay_input, **common)
        if spec.kind is NeuronKind.PLIF:
            return _neuron.ParametricLIFNode(init_tau=spec.leak.value, decay_input=spec.decay_input, **common)
        if spec.kind is NeuronKind.STBP_LIF:
            return _neuron.LIFSpike(tau=spec.leak.retention, v_th=spec.v_threshold, surrogate_function=sg)
        return None


def _read(path) -> object:
    nir = _nir()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no NIR file at {path!r}")
    try:
        return nir.read(path)
    except Exception as exc:
        raise NIRFileError(f"{path!r} is not a NIR file ({type(exc).__name__}: {exc}); NIR files are HDF5 files "
                           "written by nir.write") from exc


def from_nir(graph_or_path, dt: float = DEFAULT_DT, fire_on_tie: bool | None = None) -> nn.Module:
    """A spikeforge module computing a NIR graph; it maps ``[T, N, ...]`` to spikes in multi-step mode.

    Args:
        graph_or_path: a ``nir.NIRGraph`` or the path of a NIR (HDF5) file.
        dt: the time step in seconds at which NIR's continuous time constants are discretised (``d = dt/tau``);
            use the one the graph was written with (spikeforge and snnTorch: 1e-4, Norse: 1e-3).
        fire_on_tie: ``None`` follows the graph (``>=`` where spikeforge recorded it, NIR's ``>`` otherwise).

    Returns:
        ``nn.Sequential`` for a chain of nodes (names from the graph), else :class:`NIRGraphModule`. Neurons are
        spikeforge's (IF / LIF, or the recorded kind for graphs spikeforge wrote); call
        ``spikeforge.functional.reset_net`` between sequences.
    """
    nir = _nir()
    dt = _check_dt(dt)
    if isinstance(graph_or_path, (str, os.PathLike)):
        graph = _read(graph_or_path)
    else:
        graph = graph_or_path
    if not isinstance(graph, nir.NIRGraph):
        raise NIRFileError(f"from_nir needs a nir.NIRGraph or the path of a NIR file, got {type(graph).__name__}")
    return _Importer(graph, dt, fire_on_tie).build()
