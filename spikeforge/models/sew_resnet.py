"""Spike-Element-Wise ResNet (Fang et al., "Deep Residual Learning in Spiking Neural Networks", NeurIPS 2021).

SpikingJelly's ``model.sew_resnet``: the residual sum of the spiking ResNet (:mod:`.spiking_resnet`) is replaced by
an element-wise function ``g`` of two *spike* tensors, so that a block can realise the identity mapping:

* basic block: ``A = SN2(BN2(Conv3x3(SN1(BN1(Conv3x3(x))))))``, ``S = x`` or ``SN_d(BN(Conv1x1/stride(x)))``,
  ``y = g(S, A)``;
* bottleneck: ``A = SN3(BN3(Conv1x1(SN2(BN2(Conv3x3(SN1(BN1(Conv1x1(x)))))))))``, ``y = g(A, S)``;

with the connect function ``cnf``

* ``'ADD'``: ``g(a, b) = a + b`` (the output counts spikes, 0, 1 or 2),
* ``'AND'``: ``g(a, b) = a · b``,
* ``'IAND'``: ``g(a, b) = a · (1 − b)``.

The argument order of ``g`` follows SpikingJelly 2.0 exactly (shortcut first in the basic block, residual first in
the bottleneck), which matters for the asymmetric ``'IAND'``. A block that changes the shape sends its shortcut
through ``downsample`` and then its own neuron ``downsample_sn``.

Everything else (stem, stages, head, initialisation, state_dict keys, torchvision weights, the builder and zoo
arguments) is as in :mod:`.spiking_resnet`. ``cnf`` may also be given as ``connect_f`` (the name in the SEW
paper's code); without either the blocks use ``'ADD'`` (SpikingJelly builds the network and fails at the first
forward).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from . import spiking_resnet
from ._registry import register_model
from .spiking_resnet import _documented, _neuron, _ResNetBase, build_sj_model, conv1x1, conv3x3, model_urls  # noqa: F401

# SpikingJelly's __all__ less SEWResNet34Config (its distributed-training builder)
__all__ = [
    "SEWResNet", "sew_resnet18", "sew_resnet34", "sew_resnet50", "sew_resnet101", "sew_resnet152",
    "sew_resnext50_32x4d", "sew_resnext101_32x8d", "sew_wide_resnet50_2", "sew_wide_resnet101_2",
]

CONNECT_FUNCTIONS = ("ADD", "AND", "IAND")


def sew_function(x: torch.Tensor, y: torch.Tensor, cnf: str) -> torch.Tensor:
    """The SEW connect function: ``x + y`` ('ADD'), ``x·y`` ('AND') or ``x·(1 − y)`` ('IAND')."""
    if cnf == "ADD":
        return x + y
    if cnf == "AND":
        return x * y
    if cnf == "IAND":
        return x * (1.0 - y)
    raise NotImplementedError(f"cnf (the SEW connect function) must be one of {CONNECT_FUNCTIONS}, got {cnf!r}")


def _check_cnf(cnf):
    if cnf not in CONNECT_FUNCTIONS:
        raise ValueError(f"cnf (the SEW connect function) must be one of {CONNECT_FUNCTIONS}, got {cnf!r}")
    return cnf


class BasicBlock(spiking_resnet.BasicBlock):
    """SEW basic block: ``g(S, SN2(BN2(conv2(SN1(BN1(conv1(x)))))))``: the layers of the spiking ResNet block, the
    second neuron before the shortcut, a neuron on the downsampled shortcut, and the connect function g."""

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1,
                 norm_layer=None, cnf: str | None = None, spiking_neuron: Callable | None = None, **kwargs):
        super().__init__(inplanes, planes, stride, downsample, groups, base_width, dilation, norm_layer,
                         spiking_neuron, **kwargs)
        _add_sew_shortcut(self, downsample, cnf, spiking_neuron, kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sn1(self.bn1(self.conv1(x)))
        out = self.sn2(self.bn2(self.conv2(out)))
        identity = x if self.downsample is None else self.downsample_sn(self.downsample(x))
        return sew_function(identity, out, self.cnf)

    def extra_repr(self) -> str:
        return super().extra_repr() + f"cnf={self.cnf}"


class Bottleneck(spiking_resnet.Bottleneck):
    """SEW bottleneck: ``g(SN3(BN3(conv3(...))), S)``, the spiking ResNet bottleneck's layers as in
    :class:`BasicBlock`."""

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1,
                 norm_layer=None, cnf: str | None = None, spiking_neuron: Callable | None = None, **kwargs):
        super().__init__(inplanes, planes, stride, downsample, groups, base_width, dilation, norm_layer,
                         spiking_neuron, **kwargs)
        _add_sew_shortcut(self, downsample, cnf, spiking_neuron, kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sn1(self.bn1(self.conv1(x)))
        out = self.sn2(self.bn2(self.conv2(out)))
        out = self.sn3(self.bn3(self.conv3(out)))
        identity = x if self.downsample is None else self.downsample_sn(self.downsample(x))
        return sew_function(out, identity, self.cnf)

    def extra_repr(self) -> str:
        return super().extra_repr() + f"cnf={self.cnf}"


def _add_sew_shortcut(block: nn.Module, downsample, cnf, spiking_neuron, kwargs) -> None:
    """The SEW additions to a spiking ResNet block: a neuron after the downsampling shortcut (registered after
    ``downsample``, as SpikingJelly's key order has it) and the checked connect function."""
    if downsample is not None:
        block.downsample_sn = _neuron(spiking_neuron, kwargs)
    block.cnf = _check_cnf("ADD" if cnf is None else cnf)


class SEWResNet(_ResNetBase):
    """SEW ResNet; arguments as SpikingJelly's ``SEWResNet`` (see :class:`.spiking_resnet.SpikingResNet`), plus
    ``cnf``: the connect function ``'ADD'``, ``'AND'`` or ``'IAND'`` (default ``'ADD'``)."""

    def __init__(self, block, layers, num_classes=1000, zero_init_residual=False, groups=1, width_per_group=64,
                 replace_stride_with_dilation=None, norm_layer=None, cnf: str | None = None,
                 spiking_neuron: Callable | None = None, **kwargs):
        super().__init__()
        self.cnf = _check_cnf("ADD" if cnf is None else cnf)
        self._build(block, layers, num_classes, zero_init_residual, groups, width_per_group,
                    replace_stride_with_dilation, norm_layer, spiking_neuron, {"cnf": self.cnf}, kwargs)


def _sew_resnet(variant, block, layers, pretrained, progress, cnf, spiking_neuron, **kwargs):
    connect_f = kwargs.pop("connect_f", None)
    if connect_f is not None:
        if cnf is not None and cnf != connect_f:
            raise ValueError(f"cnf={cnf!r} and connect_f={connect_f!r} disagree; connect_f is another name for cnf")
        cnf = connect_f
    return build_sj_model(SEWResNet, variant, pretrained, progress, "fc", block=block, layers=layers, cnf=cnf,
                          spiking_neuron=spiking_neuron, **kwargs)


_CNF_DOC = """
    SEW connect function ``cnf`` (or ``connect_f``): ``'ADD'`` (default), ``'AND'`` or ``'IAND'``."""


def _sew_documented(tv_name: str):
    def decorate(fn):
        fn.__doc__ = fn.__doc__ + _CNF_DOC
        return _documented(tv_name)(fn)
    return decorate


@register_model
@_sew_documented("resnet18")
def sew_resnet18(pretrained=False, progress=True, cnf: str | None = None, spiking_neuron: Callable | None = None,
                 **kwargs):
    """SEW ResNet-18 (BasicBlock [2, 2, 2, 2]; 11,689,512 parameters with IF neurons)."""
    return _sew_resnet("sew_resnet18", BasicBlock, [2, 2, 2, 2], pretrained, progress, cnf, spiking_neuron, **kwargs)


@register_model
@_sew_documented("resnet34")
def sew_resnet34(pretrained=False, progress=True, cnf: str | None = None, spiking_neuron: Callable | None = None,
                 **kwargs):
    """SEW ResNet-34 (BasicBlock [3, 4, 6, 3]; 21,797,672 parameters with IF neurons)."""
    return _sew_resnet("sew_resnet34", BasicBlock, [3, 4, 6, 3], pretrained, progress, cnf, spiking_neuron, **kwargs)


@register_model
@_sew_documented("resnet50")
def sew_resnet50(pretrained=False, progress=True, cnf: str | None = None, spiking_neuron: Callable | None = None,
                 **kwargs):
    """SEW ResNet-50 (Bottleneck [3, 4, 6, 3]; 25,557,032 parameters with IF neurons)."""
    return _sew_resnet("sew_resnet50", Bottleneck, [3, 4, 6, 3], pretrained, progress, cnf, spiking_neuron, **kwargs)


@register_model
@_sew_documented("resnet101")
def sew_resnet101(pretrained=False, progress=True, cnf: str | None = None, spiking_neuron: Callable | None = None,
                  **kwargs):
    """SEW ResNet-101 (Bottleneck [3, 4, 23, 3]; 44,549,160 parameters with IF neurons)."""
    return _sew_resnet("sew_resnet101", Bottleneck, [3, 4, 23, 3], pretrained, progress, cnf, spiking_neuron,
                       **kwargs)


@register_model
@_sew_documented("resnet152")
def sew_resnet152(pretrained=False, progress=True, cnf: str | None = None, spiking_neuron: Callable | None = None,
                  **kwargs):
    """SEW ResNet-152 (Bottleneck [3, 8, 36, 3]; 60,192,808 parameters with IF neurons)."""
    return _sew_resnet("sew_resnet152", Bottleneck, [3, 8, 36, 3], pretrained, progress, cnf, spiking_neuron,
                       **kwargs)


@register_model
@_sew_documented("resnext50_32x4d")
def sew_resnext50_32x4d(pretrained=False, progress=True, cnf: str | None = None,
                        spiking_neuron: Callable | None = None, **kwargs):
    """SEW ResNeXt-50 32x4d (32 groups of width 4; 25,028,904 parameters with IF neurons)."""
    kwargs["groups"] = 32
    kwargs["width_per_group"] = 4
    return _sew_resnet("sew_resnext50_32x4d", Bottleneck, [3, 4, 6, 3], pretrained, progress, cnf, spiking_neuron,
                       **kwargs)


@register_model
@_sew_documented("resnext101_32x8d")
def sew_resnext101_32x8d(pretrained=False, progress=True, cnf: str | None = None,
                         spiking_neuron: Callable | None = None, **kwargs):
    """SEW ResNeXt-101 32x8d (32 groups of width 8; 88,791,336 parameters with IF neurons)."""
    kwargs["groups"] = 32
    kwargs["width_per_group"] = 8
    return _sew_resnet("sew_resnext101_32x8d", Bottleneck, [3, 4, 23, 3], pretrained, progress, cnf,
                       spiking_neuron, **kwargs)


@register_model
@_sew_documented("wide_resnet50_2")
def sew_wide_resnet50_2(pretrained=False, progress=True, cnf: str | None = None,
                        spiking_neuron: Callable | None = None, **kwargs):
    """SEW Wide ResNet-50-2 (bottlenecks twice as wide; 68,883,240 parameters with IF neurons)."""
    kwargs["width_per_group"] = 64 * 2
    return _sew_resnet("sew_wide_resnet50_2", Bottleneck, [3, 4, 6, 3], pretrained, progress, cnf, spiking_neuron,
                       **kwargs)


@register_model
@_sew_documented("wide_resnet101_2")
def sew_wide_resnet101_2(pretrained=False, progress=True, cnf: str | None = None,
                         spiking_neuron: Callable | None = None, **kwargs):
    """SEW Wide ResNet-101-2 (bottlenecks twice as wide, [3, 4, 23, 3]; 126,886,696 parameters)."""
    kwargs["width_per_group"] = 64 * 2
    return _sew_resnet("sew_wide_resnet101_2", Bottleneck, [3, 4, 23, 3], pretrained, progress, cnf,
                       spiking_neuron, **kwargs)
