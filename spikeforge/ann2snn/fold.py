r"""BatchNorm folding, on plain modules and on ``torch.fx`` graphs.

An eval-mode BatchNorm is the per-channel affine map ``y = x·s + t`` with

    s = γ/√(σ²+ε),    t = β − μ·s

(μ, σ² the running mean and variance, γ, β the weight and bias; no weight means γ = 1, no bias β = 0).
Folded into the Conv/Linear ``W, b`` feeding it:

    W' = W·γ/√(σ²+ε),    b' = (b−μ)·γ/√(σ²+ε)+β

with the scale applied along the output channel (dim 0 of W). Everything is computed in float64 and cast back
to the layer's dtype once, so folding adds a single rounding.

* :func:`bn_affine` gives ``(s, t)``; :func:`fold_conv_bn` returns a folded copy of one Conv/Linear (no fx
  needed, e.g. for quantisation);
* :func:`fold_batchnorm` rewrites a traced graph in place; a BatchNorm with nothing to fold into becomes a
  :class:`~spikeforge.ann2snn.modules.ChannelAffine` with the same eval output.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn

from .modules import ChannelAffine
from .ops import _BN_MODULES, _FOLDABLE_INTO
from .tracing import UnsupportedNodeError, _call_sites, _unique_name

__all__ = ["bn_affine", "fold_conv_bn", "fold_batchnorm"]


def bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` in float64 with ``bn(x) == x * scale + shift`` per channel in eval mode.

    ``scale = γ/√(σ²+ε)`` and ``shift = β − μ·scale``, from the running statistics whatever ``bn.training`` is.
    """
    if getattr(bn, "running_var", None) is None or getattr(bn, "running_mean", None) is None:
        raise ValueError(f"{type(bn).__name__} has no running statistics (track_running_stats=False): "
                         "it normalises with batch statistics and has no fixed affine form")
    inv_std = torch.rsqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(inv_std)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(inv_std)
    scale = gamma * inv_std
    return scale, beta - bn.running_mean.double() * scale


def fold_conv_bn(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of ``conv`` (Conv1d/2d/3d or Linear) computing ``bn(conv(x))`` of the eval-mode ``bn``.

    ``W' = W·γ/√(σ²+ε)``, ``b' = (b−μ)·γ/√(σ²+ε)+β`` (a missing bias counts as 0). ``conv`` and ``bn`` are not
    modified; the copy always has a bias, in the weight's dtype, with the weight's ``requires_grad``.
    """
    if not isinstance(conv, _FOLDABLE_INTO):
        raise TypeError(f"can fold BatchNorm only into Conv1d/2d/3d or Linear, got {type(conv).__name__}")
    if bn.num_features != conv.weight.shape[0]:
        raise ValueError(f"{type(bn).__name__} has {bn.num_features} channels but {type(conv).__name__} "
                         f"has {conv.weight.shape[0]} outputs")
    scale, shift = bn_affine(bn)
    fused = copy.deepcopy(conv)
    weight = fused.weight.detach().double()
    bias = fused.bias.detach().double() if fused.bias is not None else torch.zeros_like(scale)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    new_weight = weight * scale.view(shape)
    new_bias = bias * scale + shift
    dtype = conv.weight.dtype
    fused.weight = nn.Parameter(new_weight.to(dtype), requires_grad=conv.weight.requires_grad)
    fused.bias = nn.Parameter(new_bias.to(dtype), requires_grad=conv.weight.requires_grad)
    return fused


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
            fused = fold_conv_bn(modules[source.target], bn)
            name = source.target if sites[source.target] == 1 else _unique_name(gm, source.target + "_bn")
            gm.add_submodule(name, fused)
            with gm.graph.inserting_after(source):
                new = gm.graph.call_module(name, source.args, source.kwargs)
            new.meta = dict(source.meta)
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            gm.graph.erase_node(source)
        else:
            scale, shift = bn_affine(bn)
            name = _unique_name(gm, node.target + "_affine")
            gm.add_submodule(name, ChannelAffine(scale.float(), shift.float()))
            node.target = name
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
