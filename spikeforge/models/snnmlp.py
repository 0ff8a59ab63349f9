"""SNN-MLP: "Brain-inspired Multilayer Perceptron with Spiking Neurons" (Li, Chen, Guo, Zhang, Wang; CVPR 2022).

An MLP-style backbone in four Swin-like stages that mixes tokens with *full-precision group LIF* neurons: along
one spatial axis, consecutive positions are treated as the time steps of a leaky integrate-and-fire neuron.
Everything stays NCHW and every token-wise linear layer is a 1x1 convolution, so there is no token flattening.

Token mixing block (``LIFModule``) for an input ``x`` with ``C`` channels::

    z   = GELU(GN(DWConv3x3(GELU(GN(Conv1x1(x))))))
    y_v = GELU(Conv1x1(LIF_H(z)))            # groups of ``lif`` rows    (reference name: x_lr)
    y_h = GELU(Conv1x1(LIF_W(z)))            # groups of ``lif`` columns (reference name: x_td)
    out = Conv1x1(GN(y_v + y_h))

``GN`` is ``GroupNorm(1, C)`` everywhere (the reference's ``MyNorm``). A block is the usual pre-norm residual
pair ``x = x + DropPath(LIFModule(GN(x)))``, ``x = x + DropPath(MLP(GN(x)))``.

The released ImageNet weights were trained with group size ``lif=4``. The reference's own ``torch.hub`` entries
build the model with ``lif=-1`` (both LIFs are identity), so they do not reproduce the published accuracy;
``snnmlp_t/s/b`` here build ``lif=4``. Parameter and state_dict names follow the reference exactly, so its
checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils import checkpoint as activation_checkpoint

from .. import functional as F
from ..neuron.group import GroupLIF
from ..spec import group_lif_spec
from ._builder import build_model_with_cfg
from ._registry import register_model
from .layers import DropPath, Mlp, PatchEmbed, PatchMerging, group_norm1, to_2tuple

__all__ = ["SNNMLP", "GroupLIF", "group_lif", "snnmlp_t", "snnmlp_s", "snnmlp_b"]


def group_lif(x: torch.Tensor, tau, v_th, lif: int, dim: int) -> torch.Tensor:
    """Full-precision group LIF along axis ``dim`` of ``x`` (the reference's ``LIFSpike``), groups of ``lif``.

    The neuron lives in the neuron package (:class:`spikeforge.neuron.GroupLIF`, equations in
    :mod:`spikeforge.kernels.group`); this function runs it through :func:`spikeforge.functional.group_lif`
    with ``tau`` and ``v_th`` as floats or tensors broadcastable to one step. ``lif=-1`` is the identity.
    """
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim={dim} is out of range for an input of rank {x.dim()}")
    return F.group_lif(x, tau, v_th, group_lif_spec(group_size=lif, dim=dim))


class LIFModule(nn.Module):
    """Token mixing with a vertical and a horizontal group LIF (equations in the module docstring)."""

    def __init__(self, dim: int, lif_bias: bool = True, lif: int = 4, lif_fix_tau: bool = False,
                 lif_fix_vth: bool = False, lif_init_tau: float = 0.25, lif_init_vth: float = 0.1):
        super().__init__()
        self.dim = dim
        self.conv1 = nn.Conv2d(dim, dim, 1, bias=lif_bias)
        self.conv2_1 = nn.Conv2d(dim, dim, 1, bias=lif_bias)
        self.conv2_2 = nn.Conv2d(dim, dim, 1, bias=lif_bias)
        self.conv3 = nn.Conv2d(dim, dim, 1, bias=lif_bias)
        self.actn = nn.GELU()
        self.norm1 = group_norm1(dim)
        self.norm2 = group_norm1(dim)
        self.norm3 = group_norm1(dim)
        neuron = dict(lif=lif, fix_tau=lif_fix_tau, fix_vth=lif_fix_vth, init_tau=lif_init_tau,
                      init_vth=lif_init_vth)
        self.lif1 = GroupLIF(dim=2, **neuron)
        self.lif2 = GroupLIF(dim=3, **neuron)
        self.dw1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=lif_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.actn(self.norm1(self.conv1(x)))
        x = self.actn(self.norm2(self.dw1(x)))
        vertical = self.actn(self.conv2_1(self.lif1(x)))
        horizontal = self.actn(self.conv2_2(self.lif2(x)))
        return self.conv3(self.norm3(vertical + horizontal))


class LIFBlock(nn.Module):
    """``x + DropPath(LIFModule(GN(x)))`` followed by ``x + DropPath(MLP(GN(x)))``."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, lif_bias: bool = True, drop: float = 0.0,
                 drop_path: float = 0.0, norm_layer: Callable[[int], nn.Module] = group_norm1, **lif_kwargs):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.lif_module = LIFModule(dim, lif_bias=lif_bias, **lif_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.lif_module(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    """One stage: ``depth`` LIF blocks, then (except in the last stage) patch merging."""

    def __init__(self, dim: int, depth: int, drop_path: Sequence[float], downsample: bool,
                 use_checkpoint: bool = False, norm_layer: Callable[[int], nn.Module] = group_norm1,
                 **block_kwargs):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(LIFBlock(dim, drop_path=drop_path[i], norm_layer=norm_layer, **block_kwargs)
                                    for i in range(depth))
        self.downsample = PatchMerging(dim, norm_layer) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            # TorchScript has no activation checkpointing: a scripted stage runs its blocks plainly (same values)
            if self.use_checkpoint and torch.is_grad_enabled() and not torch.jit.is_scripting():
                x = self._checkpointed(i, x)
            else:
                x = block(x)
        return x if self.downsample is None else self.downsample(x)

    @torch.jit.unused
    def _checkpointed(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return activation_checkpoint.checkpoint(self.blocks[index], x, use_reentrant=False)


class SNNMLP(nn.Module):
    """SNN-MLP backbone with the reference constructor's hyper-parameter names.

    Stage ``i`` has ``embed_dim * 2**i`` channels at stride ``patch_size * 2**i``; with ``patch_size=4`` a 224
    input gives 56, 28, 14 and 7. The head is ``GN -> global average pool -> Linear``.

    Args:
        img_size: nominal input size (int or (H, W)); recorded only. Any H, W works as long as the stage-0..2
            sizes are even (patch merging halves them).
        patch_size, in_chans, num_classes, embed_dim, depths, mlp_ratio: as in the reference.
        lif_bias: bias on the LIF module's convolutions.
        drop_rate: dropout after the stem and inside the MLPs.
        drop_path_rate: stochastic depth, increasing linearly from 0 over all blocks.
        patch_norm: GroupNorm after the stem.
        use_checkpoint: activation checkpointing of every block while training.
        lif: group size of every LIF (4 in the released models; -1 makes the LIFs identity).
        lif_fix_tau, lif_fix_vth, lif_init_tau, lif_init_vth: LIF parameter handling. The defaults here are the
            training values (0.25, 0.1); the reference class defaults are ``lif=-1, lif_init_vth=-1``.
        norm_layer: ``channels -> module`` for the block, stem, patch-merging and final norms (default
            ``GroupNorm(1, C)``, the reference's ``MyNorm``); the three norms inside the LIF module are always
            ``GroupNorm(1, C)``, as in the reference.
    """

    def __init__(self, img_size=224, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2), mlp_ratio: float = 4.0,
                 lif_bias: bool = True, drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 patch_norm: bool = True, use_checkpoint: bool = False, lif: int = 4, lif_fix_tau: bool = False,
                 lif_fix_vth: bool = False, lif_init_tau: float = 0.25, lif_init_vth: float = 0.1,
                 norm_layer: Callable[[int], nn.Module] | None = None, **kwargs):
        super().__init__()
        norm_layer = group_norm1 if norm_layer is None else norm_layer
        if not callable(norm_layer):
            raise TypeError(f"norm_layer must be a callable channels -> module, got {norm_layer!r}")
        if kwargs:
            raise TypeError(f"SNNMLP got unexpected arguments: {', '.join(sorted(kwargs))}")
        depths = list(depths)
        if not depths or any(int(d) < 1 for d in depths):
            raise ValueError(f"depths must be a non-empty list of positive block counts, got {depths!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        self.img_size = to_2tuple(img_size)
        self.num_classes = num_classes
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.embed_dim_list = [int(embed_dim * 2**i) for i in range(self.num_layers)]
        self.num_features = self.embed_dim_list[-1]
        self.lif = lif

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, norm_layer if patch_norm else None)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        lif_kwargs = dict(lif=lif, lif_fix_tau=lif_fix_tau, lif_fix_vth=lif_fix_vth, lif_init_tau=lif_init_tau,
                          lif_init_vth=lif_init_vth)
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            first = sum(depths[:i])
            self.layers.append(BasicLayer(
                self.embed_dim_list[i], depth, drop_path=rates[first:first + depth],
                downsample=i < self.num_layers - 1, use_checkpoint=use_checkpoint, mlp_ratio=mlp_ratio,
                lif_bias=lif_bias, drop=drop_rate, norm_layer=norm_layer, **lif_kwargs))
        self.norm = norm_layer(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # As in the reference, only the Linear head is re-initialised; convolutions keep PyTorch's defaults.
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[N, num_features]``."""
        if x.dim() != 4:
            raise ValueError(f"SNNMLP expects images of shape [N, C, H, W], got {list(x.shape)}")
        x = self.pos_drop(self.patch_embed(x))
        for layer in self.layers:
            x = layer(x)
        return torch.flatten(self.avgpool(self.norm(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def extra_repr(self) -> str:
        return f"img_size={self.img_size}, lif={self.lif}, num_classes={self.num_classes}"


def _create_snnmlp(variant: str, pretrained, model_args: dict, kwargs: dict) -> SNNMLP:
    # The released configurations: patch 4, MLP ratio 4, group LIF size 4 with the training initialisation;
    # ``model_args`` holds the per-size values (drop-path rates are the training ones). ``kwargs`` override both.
    args = dict(img_size=224, patch_size=4, num_classes=1000, mlp_ratio=4.0, lif=4, lif_init_tau=0.25,
                lif_init_vth=0.1, **model_args)
    args.update(kwargs)
    return build_model_with_cfg(SNNMLP, variant, pretrained, **args)


@register_model
def snnmlp_t(pretrained=None, **kwargs) -> SNNMLP:
    """SNN-MLP tiny (28.3M parameters, 4.4 GMACs at 224, 81.88% ImageNet top-1), group LIF size 4.

    Args:
        pretrained: ``True`` downloads the official release into the torch.hub cache; a path loads a local file
            (bare state_dict or ``{"model": state_dict}``); a state_dict is loaded as is; ``None``/``False`` keeps
            the random initialisation.
        **kwargs: override any :class:`SNNMLP` constructor argument; ``pretrained_cfg_overlay`` changes fields of
            the pretrained configuration (see :func:`~spikeforge.models.build_model_with_cfg`).
    """
    return _create_snnmlp("snnmlp_t", pretrained, dict(embed_dim=96, depths=(2, 2, 6, 2), drop_path_rate=0.2),
                          kwargs)


@register_model
def snnmlp_s(pretrained=None, **kwargs) -> SNNMLP:
    """SNN-MLP small (49.7M parameters, 8.5 GMACs at 224, 83.30% ImageNet top-1), group LIF size 4.

    Args:
        pretrained: ``True`` downloads the official release into the torch.hub cache; a path loads a local file
            (bare state_dict or ``{"model": state_dict}``); a state_dict is loaded as is; ``None``/``False`` keeps
            the random initialisation.
        **kwargs: override any :class:`SNNMLP` constructor argument; ``pretrained_cfg_overlay`` changes fields of
            the pretrained configuration (see :func:`~spikeforge.models.build_model_with_cfg`).
    """
    return _create_snnmlp("snnmlp_s", pretrained, dict(embed_dim=96, depths=(2, 2, 18, 2), drop_path_rate=0.3),
                          kwargs)


@register_model
def snnmlp_b(pretrained=None, **kwargs) -> SNNMLP:
    """SNN-MLP base (87.9M parameters, 15.2 GMACs at 224, 83.59% ImageNet top-1), group LIF size 4.

    Args:
        pretrained: ``True`` downloads the official release into the torch.hub cache; a path loads a local file
            (bare state_dict or ``{"model": state_dict}``); a state_dict is loaded as is; ``None``/``False`` keeps
            the random initialisation.
        **kwargs: override any :class:`SNNMLP` constructor argument; ``pretrained_cfg_overlay`` changes fields of
            the pretrained configuration (see :func:`~spikeforge.models.build_model_with_cfg`).
    """
    return _create_snnmlp("snnmlp_b", pretrained, dict(embed_dim=128, depths=(2, 2, 18, 2), drop_path_rate=0.5),
                          kwargs)
