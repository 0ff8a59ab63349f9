"""ANN -> SNN conversion by rate coding, as a ``torch.fx`` graph pass.

Pipeline (Diehl et al. 2015; Rueckauer et al. 2017):

1. trace the ANN with ``torch.fx`` and check every node against the list of operations that keep their meaning
   when applied to time-averaged signals (linear/affine maps, pooling, additions, concatenation, reshapes);
   anything else raises :class:`UnsupportedNodeError` naming the node and where it sits;
2. fold each BatchNorm into the Conv/Linear before it, ``W' = W g/sqrt(var+eps)``,
   ``b' = (b - mean) g/sqrt(var+eps) + beta`` (a BatchNorm with nothing to fold into becomes a per-channel affine);
3. calibrate: run the dataloader once and record, after every ReLU-like activation, the statistic chosen by
   ``mode`` (max, a percentile, or a fraction of the max), averaged over batches with ``momentum``;
4. replace every activation by ``VoltageScaler(1/lambda) -> IF (soft reset, threshold 1) -> VoltageScaler(lambda)``
   (:class:`~spikeforge.ann2snn.modules.IFActivation`); clipped activations (ReLU6, Hardtanh(0, a),
   clamp(0, a)) use ``min(lambda, a)``; max-pooling becomes :class:`~spikeforge.ann2snn.modules.SpikingMaxPool`;
   Dropout is removed.

The scale is kept in explicit scalers rather than folded into the weights so that every edge of the graph
carries ANN units; that is what lets residual additions and concatenations of branches with different
scales work unchanged.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Iterable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as TF

from .. import functional as SF
from ..neuron import IFNode
from .modules import (
    ChannelAffine,
    ConversionIFNode,
    IFActivation,
    MembraneReadout,
    SpikingMaxPool,
    TimeBroadcast,
    _SeqBlock,
    _StaticEntry,
)

__all__ = ["Converter", "ConvertedSNN", "UnsupportedNodeError", "fold_batchnorm", "trace"]


class UnsupportedNodeError(NotImplementedError):
    """Raised when a traced ANN contains an operation with no rate-coded equivalent."""

    def __init__(self, node: fx.Node, reason: str):
        self.node_name = node.name
        self.target = node.target
        super().__init__(f"cannot convert node '{node.name}' ({_describe(node)}) {_place(node)}: {reason}")


# --------------------------------------------------------------------------------------------- tracing
class _Tracer(fx.Tracer):
    def __init__(self):
        super().__init__()
        self.record_stack_traces = True


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model`` (keeping the stack trace of every node for error messages)."""
    tracer = _Tracer()
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        module = node.graph.owning_module.get_submodule(node.target) if node.graph.owning_module else None
        kind = type(module).__name__ if module is not None else "?"
        return f"module '{node.target}' of type {kind}"
    if node.op == "call_function":
        name = getattr(node.target, "__qualname__", None) or getattr(node.target, "__name__", str(node.target))
        module = getattr(node.target, "__module__", None) or ""
        return f"function {module + '.' if module else ''}{name}"
    if node.op == "call_method":
        return f"method Tensor.{node.target}"
    return f"{node.op} {node.target}"


def _place(node: fx.Node) -> str:
    inputs = [a.name for a in node.all_input_nodes] or ["(graph input)"]
    users = [u.name for u in node.users] or ["(nothing)"]
    where = f"after {', '.join(inputs)}, feeding {', '.join(users)}"
    if node.stack_trace:
        lines = [ln.strip() for ln in node.stack_trace.strip().splitlines() if ln.strip()]
        source = [ln for ln in lines if ln.startswith("File ")]
        if source:
            where += f"; traced at {source[-1]}"
            index = lines.index(source[-1])
            if index + 1 < len(lines):
                where += f": {lines[index + 1]}"
    return where


# --------------------------------------------------------------------------------- node classification
_LINEAR_MODULES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.Flatten, nn.Unflatten, nn.Identity, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d,
    nn.ConstantPad2d, nn.ConstantPad3d, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle,
)
_MAXPOOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                    nn.AdaptiveMaxPool3d)
_DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_BN_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_FOLDABLE_INTO = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

# Functions and methods that act the same on every time step and commute with a time average.
_LINEAR_FUNCTIONS = {
    operator.add, operator.sub, operator.iadd, operator.isub, operator.neg, operator.pos, operator.getitem, getattr,
    torch.add, torch.sub, torch.cat, torch.concat, torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze,
    torch.chunk, torch.split, torch.transpose, torch.permute, torch.neg,
    TF.linear, TF.conv1d, TF.conv2d, TF.conv3d, TF.avg_pool1d, TF.avg_pool2d, TF.avg_pool3d,
    TF.adaptive_avg_pool1d, TF.adaptive_avg_pool2d, TF.adaptive_avg_pool3d, TF.pad, TF.interpolate,
    TF.pixel_shuffle, TF.pixel_unshuffle,
}
_LINEAR_METHODS = {
    "view", "reshape", "flatten", "size", "dim", "contiguous", "add", "add_", "sub", "sub_", "neg",
    "squeeze", "unsqueeze", "chunk", "split", "transpose", "permute", "view_as", "reshape_as", "type_as",
    "float", "to", "clone", "detach",
}
_SCALAR_FUNCTIONS = {operator.mul, operator.truediv, torch.mul, torch.div}
_SCALAR_METHODS = {"mul", "mul_", "div", "div_"}
_REDUCTIONS = {torch.mean: "mean", torch.sum: "sum"}
_REDUCTION_METHODS = {"mean", "sum"}
_DROPOUT_FUNCTIONS = {TF.dropout, TF.dropout1d, TF.dropout2d, TF.dropout3d, TF.alpha_dropout}
_MAXPOOL_FUNCTIONS = {
    TF.max_pool1d: nn.MaxPool1d, TF.max_pool2d: nn.MaxPool2d, TF.max_pool3d: nn.MaxPool3d,
    TF.adaptive_max_pool1d: nn.AdaptiveMaxPool1d, TF.adaptive_max_pool2d: nn.AdaptiveMaxPool2d,
    TF.adaptive_max_pool3d: nn.AdaptiveMaxPool3d,
}
_RELU_FUNCTIONS = {TF.relu, torch.relu, torch.relu_, TF.relu_}
_CLAMP_FUNCTIONS = {torch.clamp, torch.clip, torch.clamp_min, torch.clamp_}
_RELU_METHODS = {"relu", "relu_"}
_CLAMP_METHODS = {"clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_min_"}

# Activation kinds: ("act", clip) where clip is None for an unbounded ReLU.
_Kind = tuple


def _arg(node: fx.Node, index: int, name: str, default=None):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _clamp_clip(node: fx.Node, low, high):
    if isinstance(low, fx.Node) or isinstance(high, fx.Node):
        raise UnsupportedNodeError(node, "clamp bounds must be constants")
    if low is None or float(low) != 0.0:
        raise UnsupportedNodeError(
            node, f"clamp with min={low!r}: only clamp(min=0[, max=a>0]) behaves like a ReLU and converts")
    if high is not None and not float(high) > 0:
        raise UnsupportedNodeError(node, f"clamp with max={high!r}: the clip must be > 0")
    return ("act", None if high is None else float(high))


def _check_reduction_dims(node: fx.Node, dims) -> None:
    if dims is None:
        raise UnsupportedNodeError(node, "a reduction over all dimensions mixes the batch; give dim= (not 0)")
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    if any(d == 0 for d in dims):
        raise UnsupportedNodeError(node, "a reduction over dim 0 (the batch) cannot be converted")


def _classify(node: fx.Node, modules: dict[str, nn.Module]) -> _Kind:
    """('pass',), ('act', clip), ('maxpool',), ('dropout',), ('bn',); raises for anything unsupported."""
    if node.op in ("placeholder", "output", "get_attr"):
        return ("pass",)
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, nn.ReLU):
            return ("act", None)
        if isinstance(module, nn.ReLU6):
            return ("act", 6.0)
        if isinstance(module, nn.Hardtanh):
            if module.min_val != 0.0 or not module.max_val > 0:
                raise UnsupportedNodeError(
                    node, f"Hardtanh(min_val={module.min_val}, max_val={module.max_val}): only "
                          "Hardtanh(0, a>0) is a clipped ReLU")
            return ("act", float(module.max_val))
        if isinstance(module, _BN_MODULES):
            if module.running_mean is None:
                raise UnsupportedNodeError(
                    node, "BatchNorm with track_running_stats=False normalises with batch statistics at "
                          "inference; it has no fixed affine form to fold")
            return ("bn",)
        if isinstance(module, _DROPOUT_MODULES):
            return ("dropout",)
        if isinstance(module, _MAXPOOL_MODULES):
            if getattr(module, "return_indices", False):
                raise UnsupportedNodeError(node, "max-pooling with return_indices=True")
            return ("maxpool",)
        if isinstance(module, _LINEAR_MODULES):
            return ("pass",)
        raise UnsupportedNodeError(node, f"{type(module).__name__} has no rate-coded spiking equivalent")
    if node.op == "call_function":
        fn = node.target
        if fn in _RELU_FUNCTIONS:
            return ("act", None)
        if fn is TF.relu6:
            return ("act", 6.0)
        if fn is TF.hardtanh or fn is TF.hardtanh_:
            return _clamp_clip(node, _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0))
        if fn in _CLAMP_FUNCTIONS:
            if fn is torch.clamp_min:
                return _clamp_clip(node, _arg(node, 1, "min"), None)
            return _clamp_clip(node, _arg(node, 1, "min"), _arg(node, 2, "max"))
        if fn in _DROPOUT_FUNCTIONS:
            return ("dropout",)
        if fn in _MAXPOOL_FUNCTIONS:
            if _pool_kwargs(node).get("return_indices", False):
                raise UnsupportedNodeError(node, "max-pooling with return_indices=True")
            return ("maxpool",)
        if fn in _SCALAR_FUNCTIONS:
            if sum(_is_signal(a) for a in node.args[:2]) > 1:
                raise UnsupportedNodeError(
                    node, "a product/quotient of two signals is not linear in time and has no rate-coded form")
            if fn in (operator.truediv, torch.div) and _is_signal(node.args[1]):
                raise UnsupportedNodeError(node, "division by a signal has no rate-coded form")
            return ("pass",)
        if fn in _REDUCTIONS:
            _check_reduction_dims(node, _arg(node, 1, "dim"))
            return ("pass",)
        if fn in _LINEAR_FUNCTIONS:
            return ("pass",)
        raise UnsupportedNodeError(node, "this function has no rate-coded spiking equivalent")
    if node.op == "call_method":
        name = node.target
        if name in _RELU_METHODS:
            return ("act", None)
        if name in _CLAMP_METHODS:
            if name.startswith("clamp_min"):
                return _clamp_clip(node, _arg(node, 1, "min"), None)
            return _clamp_clip(node, _arg(node, 1, "min"), _arg(node, 2, "max"))
        if name in _SCALAR_METHODS:
            if _is_signal(_arg(node, 1, "other")):
                raise UnsupportedNodeError(
                    node, "a product/quotient of two signals is not linear in time and has no rate-coded form")
            return ("pass",)
        if name in _REDUCTION_METHODS:
            _check_reduction_dims(node, _arg(node, 1, "dim"))
            return ("pass",)
        if name in _LINEAR_METHODS:
            return ("pass",)
        raise UnsupportedNodeError(node, f"Tensor.{name} has no rate-coded spiking equivalent")
    raise UnsupportedNodeError(node, f"unknown node kind {node.op}")


def _is_size_value(a) -> bool:
    """True for constants and for nodes computing sizes (``x.size(0)``, ``x.shape[1] * 2``), not tensors."""
    if not isinstance(a, fx.Node):
        return True
    if a.op == "call_method" and a.target in ("size", "dim"):
        return True
    if a.op == "call_function" and a.target is getattr and a.args[1] in ("shape", "ndim"):
        return True
    if a.op == "call_function" and a.target in (operator.getitem, operator.mul, operator.floordiv,
                                                 operator.add, operator.sub, operator.truediv):
        return all(_is_size_value(b) for b in a.args)
    return False


def _is_signal(a) -> bool:
    """A time-varying tensor: a node that is neither a size nor a stored parameter/buffer."""
    return isinstance(a, fx.Node) and a.op != "get_attr" and not _is_size_value(a)


def _is_shape_arith(node: fx.Node) -> bool:
    """True when every argument is a size, i.e. the node is plain integer arithmetic."""
    return all(_is_size_value(a) for a in node.args)


# ---------------------------------------------------------------------------------------- BN folding
def _bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    inv_std = torch.rsqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(inv_std)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(inv_std)
    scale = gamma * inv_std
    return scale, beta - bn.running_mean.double() * scale


def _fold_into(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of ``layer`` with ``bn`` folded in: W' = W*s, b' = (b - mean)*s + beta, s = g/sqrt(var+eps)."""
    scale, shift = _bn_affine(bn)
    fused = copy.deepcopy(layer)
    weight = fused.weight.detach().double()
    bias = fused.bias.detach().double() if fused.bias is not None else torch.zeros_like(scale)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    new_weight = weight * scale.view(shape)
    new_bias = bias * scale + shift
    dtype = layer.weight.dtype
    fused.weight = nn.Parameter(new_weight.to(dtype), requires_grad=layer.weight.requires_grad)
    fused.bias = nn.Parameter(new_bias.to(dtype), requires_grad=layer.weight.requires_grad)
    return fused


def _unique_name(gm: fx.GraphModule, base: str) -> str:
    base = base.replace(".", "_")
    name, k = base, 1
    while hasattr(gm, name):
        name = f"{base}_{k}"
        k += 1
    return name


def _call_sites(gm: fx.GraphModule) -> dict[str, int]:
    sites: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            sites[node.target] = sites.get(node.target, 0) + 1
    return sites


def _block_name(gm: fx.GraphModule, node: fx.Node, prefix: str, sites: dict[str, int]) -> str:
    """Reuse the replaced module's own path (``network.2``) when it is called once, else a fresh name."""
    if node.op == "call_module" and sites.get(node.target) == 1:
        return node.target
    return _unique_name(gm, f"{prefix}_{node.name}")


def fold_batchnorm(gm: fx.GraphModule, fuse: bool = True) -> fx.GraphModule:
    """Fold every eval-mode BatchNorm of a traced graph into the Conv/Linear feeding it (in place).

    A BatchNorm whose input is not a foldable layer used only by it (a "lone" BN, e.g. after an addition)
    or every BN when ``fuse=False`` becomes a :class:`ChannelAffine` with the same eval-mode output.
    """
    modules = dict(gm.named_modules())
    sites = _call_sites(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BN_MODULES):
            continue
        bn = modules[node.target]
        if bn.running_mean is None:
            raise UnsupportedNodeError(node, "BatchNorm with track_running_stats=False cannot be folded")
        source = node.args[0]
        foldable = (fuse and isinstance(source, fx.Node) and source.op == "call_module"
                    and isinstance(modules.get(source.target), _FOLDABLE_INTO) and len(source.users) == 1
                    and modules[source.target].weight.shape[0] == bn.num_features)
        if foldable:
            fused = _fold_into(modules[source.target], bn)
            name = source.target if sites[source.target] == 1 else _unique_name(gm, source.target + "_bn")
            gm.add_submodule(name, fused)
            with gm.graph.inserting_after(source):
                new = gm.graph.call_module(name, source.args, source.kwargs)
            new.meta = dict(source.meta)
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            gm.graph.erase_node(source)
        else:
            scale, shift = _bn_affine(bn)
            name = _unique_name(gm, node.target + "_affine")
            gm.add_submodule(name, ChannelAffine(scale.float(), shift.float()))
            node.target = name
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


# -------------------------------------------------------------------------------------- calibration
def _parse_mode(mode) -> tuple[str, float]:
    """('max', 1) | ('percentile', q in (0, 1]) | ('max', fraction in (0, 1])."""
    if isinstance(mode, bool):
        raise ValueError(f"mode must be 'max', a percentile such as '99.9%' or a float in (0, 1], got {mode!r}")
    if isinstance(mode, str):
        text = mode.strip()
        if text.lower() == "max":
            return ("max", 1.0)
        if text.endswith("%"):
            try:
                q = float(text[:-1]) / 100.0
            except ValueError:
                q = float("nan")
            if 0.0 < q <= 1.0:
                return ("percentile", q)
        raise ValueError(f"mode must be 'max', a percentile such as '99.9%' or a float in (0, 1], got {mode!r}")
    if isinstance(mode, (int, float)) and 0.0 < float(mode) <= 1.0:
        return ("max", float(mode))
    raise ValueError(f"mode must be 'max', a percentile such as '99.9%' or a float in (0, 1], got {mode!r}")


class _Observer(nn.Module):
    """Identity that records an activation statistic per batch, averaged with ``momentum`` (EMA)."""

    def __init__(self, kind: str, value: float, momentum: float | None, channel_wise: bool):
        super().__init__()
        self.kind, self.value, self.momentum, self.channel_wise = kind, value, momentum, channel_wise
        self.stat: torch.Tensor | None = None
        self.batches = 0
        self.ndim = None

    def _batch_stat(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float()
        flat = x.transpose(0, 1).reshape(x.shape[1], -1) if self.channel_wise else x.reshape(1, -1)
        if self.kind == "max":
            return flat.amax(dim=1) * self.value
        k = min(flat.shape[1], max(1, math.ceil(self.value * flat.shape[1])))
        return flat.kthvalue(k, dim=1).values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_wise and x.dim() < 2:
            raise ValueError("channel-wise normalisation needs activations with a channel dim 1")
        stat = self._batch_stat(x)
        self.ndim = x.dim()
        if self.stat is None:
            self.stat = stat
        elif self.momentum is None:
            # Whole-dataset statistic: the global max, or the mean of per-batch percentiles.
            self.stat = torch.maximum(self.stat, stat) if self.kind == "max" else \
                self.stat + (stat - self.stat) / (self.batches + 1)
        else:
            self.stat = (1 - self.momentum) * self.stat + self.momentum * stat
        self.batches += 1
        return x


def _batch_input(batch):
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("input", "inputs", "image", "images", "x"):
            if key in batch:
                return batch[key]
    raise TypeError("dataloader batches must be a tensor, an (input, target) pair or a dict with an 'input' "
                    f"or 'image' key; got {type(batch).__name__}")


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False)


# --------------------------------------------------------------------------------------- the result
class ConvertedSNN(nn.Module):
    """The converted network: a ``torch.fx.GraphModule`` (``.net``) plus step-mode handling.

    * ``step_mode='s'``: ``snn(x)`` with ``x`` ``[N, ...]`` advances one time step; call
      ``functional.reset_net(snn)`` between samples.
    * ``step_mode='m'``: ``snn(x_seq)`` with ``x_seq`` ``[T, N, ...]`` returns ``[T, N, ...]``; the graph runs
      on the merged ``[T*N, ...]`` batch and only the neurons and spiking max-pools walk through time.
    * ``run_static(x, T)``: direct (analog) coding of a static input for ``T`` more steps, ``[T, N, ...]``
      out; nodes that do not depend on any neuron (the first convolution...) are computed once, not T times.

    Summing the outputs over time and dividing by T estimates the ANN's output.
    """

    def __init__(self, net: fx.GraphModule, step_mode: str = "s"):
        super().__init__()
        self.net = net
        self.step_mode = SF.check_step_mode(step_mode)
        self.__dict__["_static_net"] = None

    def _prepare(self, step_mode: str, seq_len: int | None, net: nn.Module | None = None) -> None:
        for block in (net or self.net).modules():
            if not isinstance(block, _SeqBlock):
                continue
            block.step_mode = step_mode
            block.seq_len = seq_len

    def forward(self, x: torch.Tensor):
        if self.step_mode == "s":
            self._prepare("s", None)
            return self.net(x)
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise ValueError("x_seq must be a tensor [T, N, ...] in multi-step mode")
        steps, batch = x.shape[:2]
        self._prepare("m", steps)
        out = self.net(x.flatten(0, 1))
        return _tree_map(out, lambda y: y.reshape(steps, batch, *y.shape[1:]))

    def run_static(self, x: torch.Tensor, steps: int):
        """Feed the same input ``x`` ``[N, ...]`` for ``steps`` steps; returns ``[steps, N, ...]``."""
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        static = self.__dict__.get("_static_net")
        if static is None:
            static = _build_static_net(self.net)
            self.__dict__["_static_net"] = static if static is not None else False
        if static is False:
            previous = self.step_mode
            self.step_mode = "m"
            try:
                return self(x.unsqueeze(0).expand(steps, *x.shape))
            finally:
                self.step_mode = previous
        batch = x.shape[0]
        self._prepare("m", steps, static)
        out = static(x)
        return _tree_map(out, lambda y: y.reshape(steps, batch, *y.shape[1:]))

    def __deepcopy__(self, memo):
        clone = ConvertedSNN(copy.deepcopy(self.net, memo), self.step_mode)
        return clone

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode}"


def _tree_map(out, fn):
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, (list, tuple)):
        return type(out)(_tree_map(o, fn) for o in out)
    if isinstance(out, dict):
        return {k: _tree_map(v, fn) for k, v in out.items()}
    return out


def _build_static_net(gm: fx.GraphModule) -> fx.GraphModule | None:
    """Copy of ``gm`` whose neuron-independent prefix runs on ``[N, ...]`` and is broadcast over time.

    Returns None when a non-tensor value (a size) computed from the static input reaches the time-dependent
    part, since it would carry N instead of T*N.
    """
    modules = dict(gm.named_modules())
    graph = copy.deepcopy(gm.graph)
    static: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "placeholder" or node.op == "get_attr":
            static.add(node)
        elif node.op == "output":
            continue
        elif node.op == "call_module" and isinstance(modules[node.target], _SeqBlock):
            continue
        elif all(a in static for a in node.all_input_nodes):
            static.add(node)
    broadcast_name = "_time_broadcast"
    root = fx.GraphModule(gm, graph)
    broadcaster = TimeBroadcast()
    root.add_submodule(broadcast_name, broadcaster)
    crossing: dict[fx.Node, fx.Node] = {}
    for node in list(graph.nodes):
        if node in static:
            continue
        if (node.op == "call_module" and isinstance(modules.get(node.target), IFActivation)
                and len(node.args) == 1 and node.args[0] in static and not _is_size_value(node.args[0])):
            # The neuron reads the single static frame at every step: no T-fold copy of its input.
            name = _unique_name(root, f"static_{node.target}")
            root.add_submodule(name, _StaticEntry(modules[node.target]))
            node.target = name
            continue
        for arg in node.all_input_nodes:
            if arg not in static or arg.op == "get_attr":
                continue
            if _is_size_value(arg):
                return None
            if arg not in crossing:
                with graph.inserting_after(arg):
                    crossing[arg] = graph.call_module(broadcast_name, (arg,))
            node.replace_input_with(arg, crossing[arg])
    graph.lint()
    root.graph = graph
    root.recompile()
    return root


# ---------------------------------------------------------------------------------------- converter
class Converter:
    """Convert a trained ANN into a rate-coded SNN of soft-reset IF neurons.

    Tutorial call style: ``snn = Converter(mode='max', dataloader=train_loader)(ann)``; ``.convert(ann)`` is
    the same. The ANN is deep-copied, never modified.

    Args:
        dataloader: calibration data (batches as tensors, ``(input, target)`` pairs or dicts with 'input').
        mode: ``'max'`` (Diehl 2015), a percentile string such as ``'99.9%'`` (robust normalisation,
            Rueckauer 2017) or a float in (0, 1]: that fraction of the max. lambda is the statistic of each
            activation's *output* on the calibration data.
        fuse_flag: fold BatchNorm into the preceding Conv/Linear (otherwise BN stays as a per-channel affine).
        momentum: per-batch statistics are averaged as ``s = (1-m) s + m s_batch`` (SpingJelly's default 0.1);
            ``None`` uses the whole-dataset max (or the mean of per-batch percentiles).
        channel_wise: one lambda per channel (dim 1) instead of one per layer.
        half_threshold: start every membrane at threshold/2 (rounding instead of flooring the spike count).
        signed_spikes: neurons may emit a -1 spike to take back an earlier spike when their accumulated input
            falls (see :class:`~spikeforge.ann2snn.modules.ConversionIFNode`).
        readout: ``'spikes'`` keeps IF neurons on the output layer (spike counts); ``'membrane'`` replaces the
            activations that feed the output directly with :class:`MembraneReadout` (count + residual membrane,
            no quantisation, no ties).
        neuron: ``'fused'`` (default): :class:`ConversionIFNode` with threshold lambda emitting spikes of
            amplitude lambda, one pass per step; ``'core'``: ``VoltageScaler(1/lambda) ->
            spikeforge.neuron.IFNode(v_reset=None) -> VoltageScaler(lambda)``, SpikingJelly's layout. Both
            compute the same spikes (up to float rounding at exact ties).
        max_batches: calibrate on at most this many batches.
        device: where to calibrate and put the result (default: the ANN's device).
        progress: show a tqdm bar during calibration.

    Without the low-latency options the neurons are plain soft-reset IF neurons (``v_reset=None``).
    """

    def __init__(self, dataloader: Iterable | None = None, mode="max", fuse_flag: bool = True,
                 momentum: float | None = 0.1, channel_wise: bool = False, half_threshold: bool = False,
                 signed_spikes: bool = False, readout: str = "spikes", neuron: str = "fused",
                 max_batches: int | None = None,
                 device: torch.device | str | None = None, progress: bool = True, eps: float = 1e-8):
        self.kind, self.value = _parse_mode(mode)
        if dataloader is None:
            raise ValueError("dataloader is required: conversion calibrates thresholds on data")
        if momentum is not None and not (isinstance(momentum, (int, float)) and 0.0 < momentum <= 1.0):
            raise ValueError(f"momentum must be None or in (0, 1], got {momentum!r}")
        if readout not in ("spikes", "membrane"):
            raise ValueError(f"readout must be 'spikes' or 'membrane', got {readout!r}")
        if neuron not in ("fused", "core"):
            raise ValueError(f"neuron must be 'fused' or 'core', got {neuron!r}")
        if neuron == "core" and (half_threshold or signed_spikes):
            raise ValueError("neuron='core' (spikeforge.neuron.IFNode) has no half_threshold/signed_spikes; "
                             "use neuron='fused'")
        if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
            raise ValueError(f"max_batches must be None or a positive int, got {max_batches!r}")
        self.dataloader = dataloader
        self.mode = mode
        self.fuse_flag = bool(fuse_flag)
        self.momentum = momentum
        self.channel_wise = bool(channel_wise)
        self.half_threshold = bool(half_threshold)
        self.signed_spikes = bool(signed_spikes)
        self.readout = readout
        self.neuron = neuron
        self.max_batches = max_batches
        self.device = device
        self.progress = progress
        self.eps = float(eps)

    def __call__(self, ann: nn.Module) -> ConvertedSNN:
        return self.convert(ann)

    def convert(self, ann: nn.Module) -> ConvertedSNN:
        if not isinstance(ann, nn.Module):
            raise TypeError(f"ann must be a torch.nn.Module, got {type(ann).__name__}")
        ann = copy.deepcopy(ann).eval()
        device = self.device
        if device is None:
            first = next(ann.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        ann.to(device)
        gm = trace(ann)
        modules = dict(gm.named_modules())
        kinds = {node: _classify(node, modules) for node in gm.graph.nodes}
        gm = fold_batchnorm(gm, fuse=self.fuse_flag)
        _remove_dropout(gm, kinds)
        activations = [n for n in gm.graph.nodes if kinds.get(n, ("pass",))[0] == "act"]
        if not activations:
            raise ValueError("the ANN has no ReLU-like activation to convert into spiking neurons")
        observers = self._insert_observers(gm, activations)
        self._calibrate(gm, device)
        self._replace(gm, activations, observers, kinds)
        return ConvertedSNN(gm).to(device)

    # -- steps ---------------------------------------------------------------------------------
    def _insert_observers(self, gm: fx.GraphModule, activations: list[fx.Node]) -> dict[fx.Node, _Observer]:
        observers = {}
        for node in activations:
            observer = _Observer(self.kind, self.value, self.momentum, self.channel_wise)
            name = _unique_name(gm, f"observer_{node.name}")
            gm.add_submodule(name, observer)
            with gm.graph.inserting_after(node):
                obs_node = gm.graph.call_module(name, (node,))
            node.replace_all_uses_with(obs_node, delete_user_cb=lambda user, o=obs_node: user is not o)
            observers[node] = (observer, obs_node)
        gm.recompile()
        return observers

    @torch.no_grad()
    def _calibrate(self, gm: fx.GraphModule, device) -> None:
        seen = 0
        for i, batch in enumerate(_progress(self.dataloader, self.progress, "ann2snn calibration")):
            if self.max_batches is not None and i >= self.max_batches:
                break
            gm(_batch_input(batch).to(device))
            seen += 1
        if seen == 0:
            raise ValueError("dataloader yielded no batch to calibrate on")

    def _make_neuron(self, scale: torch.Tensor) -> nn.Module:
        if self.neuron == "core":
            return IFNode(v_threshold=1.0, v_reset=None)
        return ConversionIFNode(scale, half_threshold=self.half_threshold, signed=self.signed_spikes,
                                emit_threshold=True)

    def _replace(self, gm: fx.GraphModule, activations, observers, kinds) -> None:
        readout_nodes = _output_activations(gm, set(activations)) if self.readout == "membrane" else set()
        sites = _call_sites(gm)
        for node in activations:
            clip = kinds[node][1]
            observer, obs_node = observers[node]
            if node in readout_nodes:
                block = MembraneReadout(clip)
            else:
                scale = observer.stat.clamp_min(self.eps)
                if clip is not None:
                    scale = scale.clamp_max(clip)
                if self.channel_wise:
                    scale = scale.view((1, -1) + (1,) * (observer.ndim - 2))
                else:
                    scale = scale.reshape(())
                block = IFActivation(scale, self._make_neuron(scale))
            name = _block_name(gm, node, "readout" if isinstance(block, MembraneReadout) else "if", sites)
            gm.add_submodule(name, block)
            with gm.graph.inserting_before(node):
                new = gm.graph.call_module(name, (node.args[0],))
            obs_node.replace_all_uses_with(new)
            gm.graph.erase_node(obs_node)
            gm.graph.erase_node(node)
        modules = dict(gm.named_modules())
        for node in list(gm.graph.nodes):
            if kinds.get(node, ("pass",))[0] != "maxpool":
                continue
            if node.op == "call_module":
                pool = copy.deepcopy(modules[node.target])
                args = (node.args[0],)
            else:
                pool = _pool_module_from_call(node)
                args = (node.args[0],)
            name = _block_name(gm, node, "spiking", sites)
            gm.add_submodule(name, SpikingMaxPool(pool))
            with gm.graph.inserting_before(node):
                new = gm.graph.call_module(name, args)
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
        gm.graph.lint()
        gm.graph.eliminate_dead_code()
        gm.delete_all_unused_submodules()
        gm.recompile()


def _remove_dropout(gm: fx.GraphModule, kinds) -> None:
    for node in list(gm.graph.nodes):
        if kinds.get(node, ("pass",))[0] == "dropout":
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()
    gm.recompile()


def _output_activations(gm: fx.GraphModule, activations: set[fx.Node]) -> set[fx.Node]:
    """Activations from which the output is reached through stateless nodes only."""
    found, stack, seen = set(), [n for n in gm.graph.nodes if n.op == "output"], set()
    while stack:
        node = stack.pop()
        for arg in node.all_input_nodes:
            if arg in seen:
                continue
            seen.add(arg)
            if arg in activations:
                found.add(arg)
            else:
                stack.append(arg)
    return found


_POOL_ARG_NAMES = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_ADAPTIVE_POOL_ARG_NAMES = ("output_size", "return_indices")


def _pool_kwargs(node: fx.Node) -> dict:
    adaptive = issubclass(_MAXPOOL_FUNCTIONS[node.target], (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                                                             nn.AdaptiveMaxPool3d))
    names = _ADAPTIVE_POOL_ARG_NAMES if adaptive else _POOL_ARG_NAMES
    kwargs = dict(zip(names, node.args[1:]))
    kwargs.update(node.kwargs)
    return kwargs


def _pool_module_from_call(node: fx.Node) -> nn.Module:
    kwargs = _pool_kwargs(node)
    if any(isinstance(v, fx.Node) for v in kwargs.values()):
        raise UnsupportedNodeError(node, "max-pooling parameters must be constants")
    kwargs.pop("return_indices", None)
    return _MAXPOOL_FUNCTIONS[node.target](**kwargs)
