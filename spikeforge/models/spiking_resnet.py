"""Spiking ResNet (SpikingJelly's ``model.spiking_resnet``): torchvision's ResNet with every ReLU a spiking neuron.

The network is torchvision's ResNet (He et al. 2016, the "v1.5" bottleneck with the stride on the 3x3
convolution) built from :mod:`spikeforge.layer` modules, so it runs single-step ([N, C, H, W] per call) or, after
``functional.set_step_mode(net, 'm')``, multi-step ([T, N, C, H, W] per call). Each ReLU of the ANN is replaced by
a spiking neuron ``SN`` (``spiking_neuron(**kwargs)``, e.g. :class:`spikeforge.neuron.IFNode`); at every time step

* stem: ``s = MaxPool(SN(BN(Conv7x7/2(x))))``;
* basic block: ``y = SN(BN(Conv3x3(SN(BN(Conv3x3(x))))) + D(x))``;
* bottleneck: ``y = SN(BN(Conv1x1(SN(BN(Conv3x3(SN(BN(Conv1x1(x)))))))) + D(x))``;
* head: ``logits = FC(AvgPool(s))`` (no neuron after the classifier; average the ``T`` outputs for a rate);

with ``D`` the identity, or ``BN(Conv1x1/stride(x))`` where the shape changes. The sum is taken on the membrane
input of the last neuron ("spiking ResNet", the SEW paper's baseline; see :mod:`.sew_resnet` for the
spike-element-wise block). The neurons keep their state between calls, as in SpikingJelly: call
:func:`spikeforge.functional.reset_net` after each batch.

Compatibility: the constructor arguments, the module tree (``conv1, bn1, sn1, maxpool, layer1..4, avgpool, fc``,
blocks with ``conv1, bn1, sn1, conv2, bn2, sn2[, conv3, bn3, sn3], downsample``), the initialisation and the
state_dict keys are SpingJelly 2.0's, which are torchvision's plus the neurons' own parameters (none for IF/LIF).
Hence torchvision's ImageNet state_dicts load strictly: ``pretrained=True`` takes them from the torch.hub cache
(downloading once, the file name's hash prefix checked, read with ``weights_only=True``), ``pretrained=path``
from a local file, ``pretrained=state_dict`` from memory. torchvision itself is never imported.

The same functions are SpikingJelly-style builders (``spiking_resnet18(pretrained=False, progress=True,
spiking_neuron=neuron.IFNode, surrogate_function=surrogate.ATan(), detach_reset=True)``, also importable as
``spikeforge.model.spiking_resnet``) and zoo entries (``create_model("spiking_resnet18", num_classes=10)``).
Extra keyword arguments go to ``SpikingResNet`` when it names them (``num_classes``, ``zero_init_residual``,
``groups``, ``width_per_group``, ``replace_stride_with_dilation``, ``norm_layer``) and to every neuron otherwise.
Without ``spiking_neuron`` the neurons are :class:`~spikeforge.neuron.IFNode` (SpikingJelly requires the argument).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from copy import deepcopy

import torch
import torch.nn as nn

from .. import layer
from ..base import MemoryModule
from ..neuron import IFNode
from ._builder import build_model_with_cfg
from ._registry import register_model
from ._weights import WeightsDownloadError, WeightsFileError, WeightsHashError, load_checkpoint, load_weights

# SpikingJelly's __all__ (its training script picks models by `name in spiking_resnet.__all__`)
__all__ = [
    "SpikingResNet", "spiking_resnet18", "spiking_resnet34", "spiking_resnet50", "spiking_resnet101",
    "spiking_resnet152",
    "spiking_resnext50_32x4d", "spiking_resnext101_32x8d", "spiking_wide_resnet50_2", "spiking_wide_resnet101_2",
]

_logger = logging.getLogger(__name__)

_TORCHVISION = "https://download.pytorch.org/models/"
#: torchvision's ImageNet-1k (V1) files, the ones SpikingJelly's ``pretrained=True`` loads.
model_urls = {
    "resnet18": _TORCHVISION + "resnet18-f37072fd.pth",
    "resnet34": _TORCHVISION + "resnet34-b627a593.pth",
    "resnet50": _TORCHVISION + "resnet50-0676ba61.pth",
    "resnet101": _TORCHVISION + "resnet101-63fe2227.pth",
    "resnet152": _TORCHVISION + "resnet152-394f9c45.pth",
    "resnext50_32x4d": _TORCHVISION + "resnext50_32x4d-7cdf4587.pth",
    "resnext101_32x8d": _TORCHVISION + "resnext101_32x8d-8ba56ff5.pth",
    "wide_resnet50_2": _TORCHVISION + "wide_resnet50_2-95faca4d.pth",
    "wide_resnet101_2": _TORCHVISION + "wide_resnet101_2-32ee1156.pth",
}

# TorchScript cannot compile the neurons' kernel road; the other two routes are checked from a reset state in
# tests/compat/test_model_zoo_sj.py, because the generic zoo check calls the model repeatedly without a reset.
_STATEFUL_EXPORT_NOTE = {
    "script": "the spiking neurons run the fused kernels through spikeforge.functional, which TorchScript cannot "
              "compile; use torch.export or torch.compile",
    "export": "the neurons keep their membrane state between calls (SpikingJelly semantics: reset_net between "
              "samples), so repeated calls differ by design; export from a reset state is checked in "
              "tests/compat/test_model_zoo_sj.py",
    "compile": "the neurons keep their membrane state between calls (SpikingJelly semantics: reset_net between "
               "samples), so repeated calls differ by design; compile from a reset state is checked in "
               "tests/compat/test_model_zoo_sj.py",
}


# --------------------------------------------------------------------------------------------- building blocks
def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Module:
    """3x3 convolution, padding = dilation, no bias."""
    return layer.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, groups=groups,
                        bias=False, dilation=dilation)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Module:
    """1x1 convolution, no bias."""
    return layer.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def _neuron(spiking_neuron: Callable[..., nn.Module] | None, kwargs: Mapping) -> nn.Module:
    # every neuron gets its own copy of the keyword arguments (a surrogate instance is not shared)
    return (IFNode if spiking_neuron is None else spiking_neuron)(**deepcopy(dict(kwargs)))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN stages; the shortcut joins before the second neuron: ``SN2(BN2(conv2(SN1(...))) + D(x))``."""

    expansion = 1
    _last_bn = "bn2"  # zero_init_residual sets its weight to 0

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1,
                 norm_layer=None, spiking_neuron: Callable | None = None, **kwargs):
        super().__init__()
        if norm_layer is None:
            norm_layer = layer.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.sn1 = _neuron(spiking_neuron, kwargs)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.sn2 = _neuron(spiking_neuron, kwargs)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sn1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.sn2(out + identity)


class Bottleneck(nn.Module):
    """1x1 → 3x3 (stride, groups) → 1x1 (x4 channels) conv-BN stages; the shortcut joins before the third neuron."""

    expansion = 4
    _last_bn = "bn3"

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1,
                 norm_layer=None, spiking_neuron: Callable | None = None, **kwargs):
        super().__init__()
        if norm_layer is None:
            norm_layer = layer.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.sn1 = _neuron(spiking_neuron, kwargs)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.sn2 = _neuron(spiking_neuron, kwargs)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.sn3 = _neuron(spiking_neuron, kwargs)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sn1(self.bn1(self.conv1(x)))
        out = self.sn2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.sn3(out + identity)


# --------------------------------------------------------------------------------------------- the network
def _flatten_features(x: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    # [N, C, 1, 1] -> [N, C] in single-step mode, [T, N, C, 1, 1] -> [T, N, C] in multi-step mode
    return torch.flatten(x, 1 if pool.step_mode == "s" else 2)


class _ResNetBase(nn.Module):
    """Stem, four stages and head shared by :class:`SpikingResNet` and SEW ResNet (``block_kwargs`` differ)."""

    export_unsupported = _STATEFUL_EXPORT_NOTE

    def _build(self, block, layers, num_classes, zero_init_residual, groups, width_per_group,
               replace_stride_with_dilation, norm_layer, spiking_neuron, block_kwargs, kwargs):
        if norm_layer is None:
            norm_layer = layer.BatchNorm2d
        self._norm_layer = norm_layer
        self.num_classes = num_classes
        self.inplanes = 64
        self.dilation = 1
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError("replace_stride_with_dilation should be None "
                             f"or a 3-element tuple, got {replace_stride_with_dilation}")
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = layer.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.sn1 = _neuron(spiking_neuron, kwargs)
        self.maxpool = layer.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages = []
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stages.append(self._make_layer(block, planes, blocks, stride=1 if i == 0 else 2,
                                           dilate=False if i == 0 else replace_stride_with_dilation[i - 1],
                                           spiking_neuron=spiking_neuron, block_kwargs=block_kwargs, **kwargs))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = layer.AdaptiveAvgPool2d((1, 1))
        self.fc = layer.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:  # each residual branch starts at zero (Goyal et al. 2017)
            for m in self.modules():
                last_bn = getattr(type(m), "_last_bn", None)
                if last_bn is not None:
                    nn.init.constant_(getattr(m, last_bn).weight, 0)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False, spiking_neuron=None, block_kwargs=None,
                    **kwargs):
        norm_layer = self._norm_layer
        block_kwargs = dict(block_kwargs or {})
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       norm_layer(planes * block.expansion))
        blocks_ = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width, previous_dilation,
                         norm_layer, spiking_neuron=spiking_neuron, **block_kwargs, **kwargs)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            blocks_.append(block(self.inplanes, planes, groups=self.groups, base_width=self.base_width,
                                 dilation=self.dilation, norm_layer=norm_layer, spiking_neuron=spiking_neuron,
                                 **block_kwargs, **kwargs))
        return nn.Sequential(*blocks_)

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.sn1(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = _flatten_features(self.avgpool(x), self.avgpool)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_impl(x)


class SpikingResNet(_ResNetBase):
    """Spiking ResNet; arguments as SpikingJelly's ``SpikingResNet`` (``**kwargs`` go to every neuron).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``[2, 2, 2, 2]`` for ResNet-18.
        num_classes: outputs of ``fc``.
        zero_init_residual: start the last BatchNorm of every block at weight 0.
        groups, width_per_group: ResNeXt / wide-ResNet bottleneck width (``int(planes·width/64)·groups``).
        replace_stride_with_dilation: three booleans, one per stage 2-4.
        norm_layer: normalisation factory (default :class:`spikeforge.layer.BatchNorm2d`).
        spiking_neuron: neuron class (default :class:`spikeforge.neuron.IFNode`), built as
            ``spiking_neuron(**kwargs)`` at every activation.
    """

    def __init__(self, block, layers, num_classes=1000, zero_init_residual=False, groups=1, width_per_group=64,
                 replace_stride_with_dilation=None, norm_layer=None, spiking_neuron: Callable | None = None,
                 **kwargs):
        super().__init__()
        self._build(block, layers, num_classes, zero_init_residual, groups, width_per_group,
                    replace_stride_with_dilation, norm_layer, spiking_neuron, {}, kwargs)


# --------------------------------------------------------------------------------------------- weights
def _neuron_modules(model: nn.Module) -> list[str]:
    """Names of the stateful modules (neurons, ...) that hold parameters of their own (PLIF's ``w``)."""
    return [name for name, m in model.named_modules()
            if isinstance(m, MemoryModule) and any(True for _ in m.parameters(recurse=False))]


def _download_torchvision(url: str, file_name: str | None, progress: bool) -> dict[str, torch.Tensor]:
    # torch.hub caches under <hub dir>/checkpoints and, with check_hash, checks the sha256 prefix in the file name
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=progress, check_hash=True,
                                                   file_name=file_name, weights_only=True)
    except (OSError, ValueError) as err:  # URLError / HTTPError are OSErrors
        target = f"{torch.hub.get_dir()}/checkpoints/{file_name}"
        raise WeightsDownloadError(
            f"could not download pretrained weights from {url} ({err}).\nIf this machine is offline, fetch the file "
            f"elsewhere and either place it at {target} or pass pretrained='/path/to/{file_name}'.") from err
    except RuntimeError as err:
        if "hash" in str(err):
            raise WeightsHashError(f"{url}: {err} (the cached or downloaded file is not the released one; "
                                   f"delete it from {torch.hub.get_dir()}/checkpoints and try again)") from err
        raise WeightsFileError(f"pretrained: the file from {url} cannot be read as plain tensors ({err})") from err
    if not isinstance(state, Mapping):
        raise WeightsFileError(f"pretrained: the file from {url} does not hold a state_dict")
    return dict(state)


def load_torchvision_weights(model: nn.Module, pretrained, *, url: str | None = None,
                             file_name: str | None = None, progress: bool = True,
                             classifier: str | None = None, released_classes: int = 1000) -> nn.Module:
    """Load an ANN state_dict (torchvision's key names) into a spiking model built with the same layout.

    ``pretrained`` is ``True`` (``url`` through the torch.hub cache), a file path, or a state_dict. Loading is
    strict, with two allowances: neurons with parameters of their own (PLIF's ``w``) keep their initialisation
    when the checkpoint has no neuron entries at all (an ANN file); with ``pretrained=True`` and a model built
    with another ``num_classes`` the ``classifier`` keeps its initialisation (fine-tuning).
    """
    if pretrained is True:
        if url is None:
            raise WeightsFileError("pretrained=True, but no weights are published for this model")
        state = _download_torchvision(url, file_name, progress)
    elif isinstance(pretrained, Mapping):
        state = dict(pretrained)
    else:
        state = load_checkpoint(pretrained)
    skip = []
    neurons = _neuron_modules(model)
    if neurons and not any(k.startswith(tuple(n + "." for n in neurons)) for k in state):
        skip += neurons
        _logger.info("the checkpoint has no neuron parameters (an ANN file): %d neuron(s) keep their "
                     "initialisation", len(neurons))
    if pretrained is True and classifier and getattr(model, "num_classes", released_classes) != released_classes:
        skip.append(classifier)
    return load_weights(model, state, skip_mismatched=skip)


def build_sj_model(model_cls, variant: str, pretrained, progress: bool, classifier: str, **kwargs) -> nn.Module:
    """Build a SpikingJelly-layout zoo model and load ``pretrained`` (see :func:`load_torchvision_weights`)."""
    overlay = kwargs.pop("pretrained_cfg_overlay", None)
    model = build_model_with_cfg(model_cls, variant, None, pretrained_cfg_overlay=overlay, **kwargs)
    if pretrained is None or pretrained is False:
        return model
    cfg = model.pretrained_cfg
    return load_torchvision_weights(model, pretrained, url=cfg.url, file_name=cfg.file_name, progress=progress,
                                    classifier=classifier, released_classes=cfg.num_classes)


def _spiking_resnet(variant, block, layers, pretrained, progress, spiking_neuron, **kwargs):
    return build_sj_model(SpikingResNet, variant, pretrained, progress, "fc", block=block, layers=layers,
                          spiking_neuron=spiking_neuron, **kwargs)


_ARGS = """

    Args:
        pretrained: ``False``/``None``: random initialisation (SpikingJelly's). ``True``: torchvision's ImageNet
            ANN weights ({tv}), from the torch.hub cache or downloaded once. A path or a state_dict: those weights.
        progress: show a download progress bar.
        spiking_neuron: neuron class, built at every activation as ``spiking_neuron(**kwargs)`` (default IFNode).
        **kwargs: ``num_classes`` and the other network arguments, then the neurons' keyword arguments
            (``surrogate_function=surrogate.ATan(), detach_reset=True``, ...).
    """


def _documented(tv_name: str):
    def decorate(fn):
        fn.__doc__ = fn.__doc__ + _ARGS.format(tv=model_urls.get(tv_name, tv_name))
        # known without building the network (hundreds of MB for the large variants): see _STATEFUL_EXPORT_NOTE
        fn.export_unsupported = _STATEFUL_EXPORT_NOTE
        return fn
    return decorate


@register_model
@_documented("resnet18")
def spiking_resnet18(pretrained=False, progress=True, spiking_neuron: Callable | None = None, **kwargs):
    """Spiking ResNet-18 (BasicBlock [2, 2, 2, 2]; 11,689,512 parameters with IF neurons)."""
    return _spiking_resnet("spiking_resnet18", BasicBlock, [2, 2, 2, 2], pretrained, progress, spiking_neuron,
                           **kwargs)


@register_model
@_documented("resnet34")
def spiking_resnet34(pretrained=False, progress=True, spiking_neuron: Callable | None = None, **kwargs):
    """Spiking ResNet-34 (BasicBlock [3, 4, 6, 3]; 21,797,672 parameters with IF neurons)."""
    return _spiking_resnet("spiking_resnet34", BasicBlock, [3, 4, 6, 3], pretrained, progress, spiking_neuron,
                           **kwargs)


@register_model
@_documented("resnet50")
def spiking_resnet50(pretrained=False, progress=True, spiking_neuron: Callable | None = None, **kwargs):
    """Spiking ResNet-50 (Bottleneck [3, 4, 6, 3]; 25,557,032 parameters with IF neurons)."""
    return _spiking_resnet("spiking_resnet50", Bottleneck, [3, 4, 6, 3], pretrained, progress, spiking_neuron,
                           **kwargs)


@register_model
@_documented("resnet101")
def spiking_resnet101(pretrained=False, progress=True, spiking_neuron: Callable | None = None, **kwargs):
    """Spiking ResNet-101 (Bottleneck [3, 4, 23, 3]; 44,549,160 parameters with IF neurons)."""
    return _spiking_resnet("spiking_resnet101", Bottleneck, [3, 4, 23, 3], pretrained, progress, spiking_neuron,
                           **kwargs)


@register_model
@_documented("resnet152")
def spiking_resnet152(pretrained=False, progress=True, spiking_neuron: Callable | None = None, **kwargs):
    """Spiking ResNet-152 (Bottleneck [3, 8, 36, 3]; 60,192,808 parameters with IF neurons)."""
    return _spiking_resnet("spiking_resnet152", Bottleneck, [3, 8, 36, 3], pretrained, progress, spiking_neuron,
                           **kwargs)


@register_model
@_documented("resnext50_32x4d")
def spiking_resnext50_32x4d(pretrained=False, progress=True, spiking_neuron: Callable | None = None, **kwargs):
    """Spiking ResNeXt-50 32x4d (Bottleneck [3, 4, 6, 3], 32 groups of width 4; 25,028,904 parameters)."""
    kwargs["groups"] = 32
    kwargs["width_per_group"] = 4
    return _spiking_resnet("spiking_resnext50_32x4d", Bottleneck, [3, 4, 6, 3], pretrained, progress,
                           spiking_neuron, **kwargs)


@register_model
@_documented("resnext101_32x8d")
def spiking_resnext101_32x8d(pretrained=False, progress=True, spiking_neuron: Callable | None = None, **kwargs):
    """Spiking ResNeXt-101 32x8d (Bottleneck [3, 4, 23, 3], 32 groups of width 8; 88,791,336 parameters)."""
    kwargs["groups"] = 32
    kwargs["width_per_group"] = 8
    return _spiking_resnet("spiking_resnext101_32x8d", Bottleneck, [3, 4, 23, 3], pretrained, progress,
                           spiking_neuron, **kwargs)


@register_model
@_documented("wide_resnet50_2")
def spiking_wide_resnet50_2(pretrained=False, progress=True, spiking_neuron: Callable | None = None, **kwargs):
    """Spiking Wide ResNet-50-2 (Zagoruyko & Komodakis 2016; bottlenecks twice as wide; 68,883,240 parameters)."""
    kwargs["width_per_group"] = 64 * 2
    return _spiking_resnet("spiking_wide_resnet50_2", Bottleneck, [3, 4, 6, 3], pretrained, progress,
                           spiking_neuron, **kwargs)


@register_model
@_documented("wide_resnet101_2")
def spiking_wide_resnet101_2(pretrained=False, progress=True, spiking_neuron: Callable | None = None, **kwargs):
    """Spiking Wide ResNet-101-2 (bottlenecks twice as wide, [3, 4, 23, 3]; 126,886,696 parameters)."""
    kwargs["width_per_group"] = 64 * 2
    return _spiking_resnet("spiking_wide_resnet101_2", Bottleneck, [3, 4, 23, 3], pretrained, progress,
                           spiking_neuron, **kwargs)
