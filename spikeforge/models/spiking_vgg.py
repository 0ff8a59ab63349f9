"""Spiking VGG (SpikingJelly's ``model.spiking_vgg``): torchvision's VGG (Simonyan & Zisserman 2015) with every
ReLU a spiking neuron.

At every time step (single-step, or multi-step after ``functional.set_step_mode(net, 'm')``):

* features: for each entry of the configuration, ``x = SN(Conv3x3(x))`` (``SN(BN(Conv3x3(x)))`` for the ``_bn``
  variants) or ``x = MaxPool2x2(x)`` at an ``'M'``;
* head: ``x = AdaptiveAvgPool(7x7)(x)``, flattened, then ``FC(25088→4096), SN, Dropout, FC(4096→4096), SN, Dropout,
  FC(4096→num_classes)``.

The configurations are VGG's A (11 layers), B (13), D (16) and E (19). ``layer.Dropout`` draws one mask per sequence
(all time steps drop the same units; p = 0.5). Initialisation is torchvision's (Kaiming-normal convolutions,
N(0, 0.01) linear layers, zero biases), skipped when weights are loaded, as in SpikingJelly.

Compatibility: the module tree (``features``, ``avgpool``, ``classifier``) and state_dict keys are SpikingJelly 2.0's
and torchvision's, so torchvision's ImageNet files load strictly (``pretrained=True``: through the torch.hub cache,
``weights_only=True``; or a local path / state_dict); see :mod:`.spiking_resnet` for the loading rules and the
builder arguments (``spiking_neuron``, ``norm_layer`` for the ``_bn`` variants, neuron keyword arguments).
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy

import torch
import torch.nn as nn

from .. import layer
from ..neuron import IFNode
from ._registry import register_model
from .spiking_resnet import _STATEFUL_EXPORT_NOTE, _documented, build_sj_model

__all__ = [  # SpikingJelly's
    "SpikingVGG",
    "spiking_vgg11", "spiking_vgg11_bn", "spiking_vgg13", "spiking_vgg13_bn",
    "spiking_vgg16", "spiking_vgg16_bn", "spiking_vgg19", "spiking_vgg19_bn",
]

_TORCHVISION = "https://download.pytorch.org/models/"
#: torchvision's ImageNet-1k (V1) files, the ones SpikingJelly's ``pretrained=True`` loads.
model_urls = {
    "vgg11": _TORCHVISION + "vgg11-8a719046.pth",
    "vgg13": _TORCHVISION + "vgg13-19584684.pth",
    "vgg16": _TORCHVISION + "vgg16-397923af.pth",
    "vgg19": _TORCHVISION + "vgg19-dcbb9e9d.pth",
    "vgg11_bn": _TORCHVISION + "vgg11_bn-6002323d.pth",
    "vgg13_bn": _TORCHVISION + "vgg13_bn-abd245e5.pth",
    "vgg16_bn": _TORCHVISION + "vgg16_bn-6c64b313.pth",
    "vgg19_bn": _TORCHVISION + "vgg19_bn-c79401a0.pth",
}

#: VGG configurations: output channels of each 3x3 convolution, ``'M'`` for a 2x2 max-pool.
cfgs = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def _make_neuron(spiking_neuron, kwargs):
    return (IFNode if spiking_neuron is None else spiking_neuron)(**deepcopy(dict(kwargs)))


class SpikingVGG(nn.Module):
    """Spiking VGG; arguments as SpikingJelly's ``SpikingVGG`` (``**kwargs`` go to every neuron).

    Args:
        cfg: a list as in :data:`cfgs`.
        batch_norm: a BatchNorm after every convolution.
        norm_layer: its factory (default :class:`spikeforge.layer.BatchNorm2d`).
        num_classes: outputs of the last linear layer.
        init_weights: torchvision's initialisation (off when weights are loaded).
        spiking_neuron: neuron class (default :class:`spikeforge.neuron.IFNode`).
    """

    export_unsupported = _STATEFUL_EXPORT_NOTE

    def __init__(self, cfg, batch_norm=False, norm_layer=None, num_classes=1000, init_weights=True,
                 spiking_neuron: Callable | None = None, **kwargs):
        super().__init__()
        self.num_classes = num_classes
        self.features = self.make_layers(cfg=cfg, batch_norm=batch_norm, norm_layer=norm_layer,
                                         neuron=spiking_neuron, **kwargs)
        self.avgpool = layer.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            layer.Linear(512 * 7 * 7, 4096),
            _make_neuron(spiking_neuron, kwargs),
            layer.Dropout(),
            layer.Linear(4096, 4096),
            _make_neuron(spiking_neuron, kwargs),
            layer.Dropout(),
            layer.Linear(4096, num_classes),
        )
        if init_weights:
            self._initialize_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        x = torch.flatten(x, 1 if self.avgpool.step_mode == "s" else 2)
        return self.classifier(x)

    def _initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    @staticmethod
    def make_layers(cfg, batch_norm=False, norm_layer=None, neuron: Callable | None = None, **kwargs):
        """The ``features`` stack of a configuration (SpikingJelly's static method, same arguments)."""
        if norm_layer is None:
            norm_layer = layer.BatchNorm2d
        layers = []
        in_channels = 3
        for v in cfg:
            if v == "M":
                layers.append(layer.MaxPool2d(kernel_size=2, stride=2))
                continue
            conv = layer.Conv2d(in_channels, v, kernel_size=3, padding=1)
            layers += [conv, norm_layer(v)] if batch_norm else [conv]
            layers.append(_make_neuron(neuron, kwargs))
            in_channels = v
        return nn.Sequential(*layers)


def _spiking_vgg(variant, cfg, batch_norm, pretrained, progress, norm_layer=None, spiking_neuron=None, **kwargs):
    if pretrained is not None and pretrained is not False:
        kwargs["init_weights"] = False
    norm_layer = norm_layer if batch_norm else None
    return build_sj_model(SpikingVGG, variant, pretrained, progress, "classifier.6", cfg=cfgs[cfg],
                          batch_norm=batch_norm, norm_layer=norm_layer, spiking_neuron=spiking_neuron, **kwargs)


@register_model
@_documented(model_urls["vgg11"])
def spiking_vgg11(pretrained=False, progress=True, spiking_neuron: Callable | None = None, **kwargs):
    """Spiking VGG-11 (configuration A; 132,863,336 parameters with IF neurons)."""
    return _spiking_vgg("spiking_vgg11", "A", False, pretrained, progress, None, spiking_neuron, **kwargs)


@register_model
@_documented(model_urls["vgg11_bn"])
def spiking_vgg11_bn(pretrained=False, progress=True, norm_layer: Callable | None = None,
                     spiking_neuron: Callable | None = None, **kwargs):
    """Spiking VGG-11 with BatchNorm (configuration A; 132,868,840 parameters with IF neurons)."""
    return _spiking_vgg("spiking_vgg11_bn", "A", True, pretrained, progress, norm_layer, spiking_neuron, **kwargs)


@register_model
@_documented(model_urls["vgg13"])
def spiking_vgg13(pretrained=False, progress=True, spiking_neuron: Callable | None = None, **kwargs):
    """Spiking VGG-13 (configuration B; 133,047,848 parameters with IF neurons)."""
    return _spiking_vgg("spiking_vgg13", "B", False, pretrained, progress, None, spiking_neuron, **kwargs)


@register_model
@_documented(model_urls["vgg13_bn"])
def spiking_vgg13_bn(pretrained=False, progress=True, norm_layer: Callable | None = None,
                     spiking_neuron: Callable | None = None, **kwargs):
    """Spiking VGG-13 with BatchNorm (configuration B; 133,053,736 parameters with IF neurons)."""
    return _spiking_vgg("spiking_vgg13_bn", "B", True, pretrained, progress, norm_layer, spiking_neuron, **kwargs)


@register_model
@_documented(model_urls["vgg16"])
def spiking_vgg16(pretrained=False, progress=True, spiking_neuron: Callable | None = None, **kwargs):
    """Spiking VGG-16 (configuration D; 138,357,544 parameters with IF neurons)."""
    return _spiking_vgg("spiking_vgg16", "D", False, pretrained, progress, None, spiking_neuron, **kwargs)


@register_model
@_documented(model_urls["vgg16_bn"])
def spiking_vgg16_bn(pretrained=False, progress=True, norm_layer: Callable | None = None,
                     spiking_neuron: Callable | None = None, **kwargs):
    """Spiking VGG-16 with BatchNorm (configuration D; 138,365,992 parameters with IF neurons)."""
    return _spiking_vgg("spiking_vgg16_bn", "D", True, pretrained, progress, norm_layer, spiking_neuron, **kwargs)


@register_model
@_documented(model_urls["vgg19"])
def spiking_vgg19(pretrained=False, progress=True, spiking_neuron: Callable | None = None, **kwargs):
    """Spiking VGG-19 (configuration E; 143,667,240 parameters with IF neurons)."""
    return _spiking_vgg("spiking_vgg19", "E", False, pretrained, progress, None, spiking_neuron, **kwargs)


@register_model
@_documented(model_urls["vgg19_bn"])
def spiking_vgg19_bn(pretrained=False, progress=True, norm_layer: Callable | None = None,
                     spiking_neuron: Callable | None = None, **kwargs):
    """Spiking VGG-19 with BatchNorm (configuration E; 143,678,248 parameters with IF neurons)."""
    return _spiking_vgg("spiking_vgg19_bn", "E", True, pretrained, progress, norm_layer, spiking_neuron, **kwargs)
