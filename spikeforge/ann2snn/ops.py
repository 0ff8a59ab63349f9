"""Which traced operations convert, and into what: the op tables and :func:`_classify`.

An operation converts when it keeps its meaning on time-averaged signals: linear/affine maps, pooling,
additions, concatenation, reshapes, products with constants ("pass"). ReLU-like activations become IF neurons
("act", with the clip of ReLU6 / Hardtanh(0, a) / clamp(0, a)), max-pooling becomes a spiking max-pool,
Dropout is removed and BatchNorm is folded. Everything else raises :class:`UnsupportedNodeError`.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as TF

from .tracing import UnsupportedNodeError

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

_POOL_ARG_NAMES = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_ADAPTIVE_POOL_ARG_NAMES = ("output_size", "return_indices")

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


def _pool_kwargs(node: fx.Node) -> dict:
    """The keyword arguments of a functional max-pool call, positional ones named."""
    adaptive = issubclass(_MAXPOOL_FUNCTIONS[node.target], (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                                                             nn.AdaptiveMaxPool3d))
    names = _ADAPTIVE_POOL_ARG_NAMES if adaptive else _POOL_ARG_NAMES
    kwargs = dict(zip(names, node.args[1:]))
    kwargs.update(node.kwargs)
    return kwargs


def _pool_module_from_call(node: fx.Node) -> nn.Module:
    """The ``nn.MaxPool*`` module equivalent to a functional max-pool call (constant parameters only)."""
    kwargs = _pool_kwargs(node)
    if any(isinstance(v, fx.Node) for v in kwargs.values()):
        raise UnsupportedNodeError(node, "max-pooling parameters must be constants")
    kwargs.pop("return_indices", None)
    return _MAXPOOL_FUNCTIONS[node.target](**kwargs)
