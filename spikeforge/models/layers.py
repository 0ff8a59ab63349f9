"""Generic building blocks shared by the zoo architectures (NCHW layout throughout).

Submodule names are part of the checkpoints' state_dict names (``fc1``, ``fc2``, ``proj``, ``norm``,
``reduction``), so they do not change.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["DropPath", "drop_path", "Mlp", "PatchEmbed", "PatchMerging", "group_norm1", "to_2tuple",
           "BNAndPadLayer", "RepConv", "bn_affine", "fuse_conv_bn", "FeatureInfo"]


def to_2tuple(value) -> tuple:
    """``v -> (v, v)`` for an int; a sequence becomes a tuple."""
    return (value, value) if isinstance(value, int) else tuple(value)


def group_norm1(channels: int) -> nn.GroupNorm:
    """``GroupNorm(1, channels)``: LayerNorm over (C, H, W) with a per-channel affine (SNN-MLP's ``MyNorm``)."""
    return nn.GroupNorm(1, channels)


def drop_path(x: torch.Tensor, p: float = 0.0, training: bool = False,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic depth: while ``training``, zero each sample (index 0 of ``x``) with probability ``p`` and scale
    the others by ``1 / (1 - p)``, so the expectation is ``x``. Outside training, or with ``p == 0``, ``x`` itself
    is returned. ``generator`` draws the per-sample keep mask (default: the global generator)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop path probability must be in [0, 1), got {p}")
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty([x.shape[0]] + [1] * (x.dim() - 1)).bernoulli_(keep, generator=generator)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """:func:`drop_path` as a module; active in training mode only."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p!r}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Channel MLP on NCHW maps: ``Conv1x1(C -> hidden) -> act -> dropout -> Conv1x1(hidden -> out) -> dropout``.

    Args:
        in_features: input channels C.
        hidden_features: hidden channels (default C).
        out_features: output channels (default C).
        act_layer: activation constructor (default exact GELU).
        drop: dropout probability after the activation and after the output conv.
        bias: bias on both convolutions.
    """

    def __init__(self, in_features: int, hidden_features: int | None = None, drop: float = 0.0, *,
                 out_features: int | None = None, act_layer: Callable[[], nn.Module] = nn.GELU, bias: bool = True):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden_features, out_features, 1, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class PatchEmbed(nn.Module):
    """Stem: a non-overlapping ``patch_size`` convolution to ``embed_dim`` channels, then ``norm_layer`` if given.

    ``[N, in_chans, H, W] -> [N, embed_dim, H / patch_size, W / patch_size]`` (floor division).
    """

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96,
                 norm_layer: Callable[[int], nn.Module] | None = None):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return x if self.norm is None else self.norm(x)


class PatchMerging(nn.Module):
    """2x downsampling: stack the four 2x2 sub-grids on channels, ``norm_layer(4C)``, bias-free ``Conv1x1(4C->2C)``.

    Sub-grid order (even-h, even-w), (odd-h, even-w), (even-h, odd-w), (odd-h, odd-w), as in Swin and SNN-MLP.
    """

    def __init__(self, dim: int, norm_layer: Callable[[int], nn.Module] = group_norm1):
        super().__init__()
        self.reduction = nn.Conv2d(4 * dim, 2 * dim, 1, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 2 != 0 or x.shape[-1] % 2 != 0:
            raise ValueError(f"PatchMerging needs even H and W, got {list(x.shape[-2:])}")
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], 1)
        return self.reduction(self.norm(x))


# ---------------------------------------------------------------------------------------------------------------
# Re-parameterisable convolutions (Meta-SpikeFormer) and Conv-BN folding


def bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode BatchNorm as ``y = a * x + c`` per channel: ``a = gamma / sqrt(var + eps)``,
    ``c = beta - mean * a`` (``gamma = 1``, ``beta = 0`` without affine). Returned detached, in float64."""
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    a = torch.rsqrt(var + bn.eps)
    if bn.affine:
        a = a * bn.weight.detach().double()
        c = bn.bias.detach().double() - mean * a
    else:
        c = -mean * a
    return a, c


def fuse_conv_bn(conv: nn.Conv1d | nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm | None) -> nn.Module:
    """One convolution with bias computing ``bn(conv(x))`` in eval mode (or ``conv(x)`` when ``bn`` is None).

    ``W' = a[o] * W[o]``, ``b' = a[o] * b[o] + c[o]`` with ``(a, c)`` from :func:`bn_affine`; the arithmetic is
    done in float64 and stored in the convolution's dtype.
    """
    fused = type(conv)(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                       padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                       padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else weight.new_zeros(conv.out_channels)
    if bn is not None:
        a, c = bn_affine(bn)
        weight = weight * a.view(-1, *([1] * (weight.dim() - 1)))
        bias = a * bias + c
    with torch.no_grad():
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
    return fused


class BNAndPadLayer(nn.Module):
    """BatchNorm2d, then a border of ``pad_pixels`` filled with what the BatchNorm gives for a zero input.

    Interior: ``y = BN(x)``. Border: ``beta - mu * gamma / sqrt(sigma^2 + eps)`` per channel, from the running
    statistics (in training mode too) with the affine parameters detached, so the border carries no gradient.
    Padding with this value instead of zero makes ``BN(pad0(x)) == pad_BN(BN(x))``: the preceding 1x1
    convolution and this layer commute with zero padding, which is what lets :class:`RepConv` fold into one
    3x3 convolution with ordinary zero padding. The BatchNorm is the child ``bn`` (state_dict ``<name>.bn.*``).
    """

    def __init__(self, pad_pixels: int, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps, momentum, affine, track_running_stats)
        self.pad_pixels = int(pad_pixels)

    def border_value(self) -> torch.Tensor:
        """The per-channel border, ``BN(0)`` with detached parameters."""
        bn = self.bn
        std = torch.sqrt(bn.running_var + bn.eps)
        if bn.affine:  # the operation order of the reference, so the border is bit-identical to it
            return bn.bias.detach() - bn.running_mean * bn.weight.detach() / std
        return -bn.running_mean / std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(x)
        p = self.pad_pixels
        if p <= 0:
            return y
        n, c, h, w = y.shape
        out = self.border_value().to(y.dtype).view(1, c, 1, 1).expand(n, c, h + 2 * p, w + 2 * p).clone()
        out[:, :, p:p + h, p:p + w] = y
        return out

    def extra_repr(self) -> str:
        return f"pad_pixels={self.pad_pixels}"


class RepConv(nn.Module):
    """Meta-SpikeFormer's sequential re-parameterisable convolution, all bias-free::

        RepConv(x) = BN_2(PW_{C->C_out}(DW3x3_pad0(BNPad_1(PW_{C->C}(x)))))

    ``body = Sequential(conv1x1, BNAndPadLayer, Sequential(depthwise3x3, conv1x1, BatchNorm2d))`` (the
    reference's state_dict names). With ``BN_i(z) = a_i z + c_i``, the whole thing is one 3x3 convolution of
    ``x`` with zero padding 1 (:meth:`fuse`)::

        K[o, i] = a_2[o] * sum_c W_2[o, c] * a_1[c] * D[c] * W_1[c, i]
        b[o]    = a_2[o] * sum_c W_2[o, c] * c_1[c] * sum(D[c]) + c_2[o]
    """

    def __init__(self, in_channel: int, out_channel: int, bias: bool = False):
        super().__init__()
        self.in_channel, self.out_channel = int(in_channel), int(out_channel)
        self.body = nn.Sequential(
            nn.Conv2d(in_channel, in_channel, 1, 1, 0, bias=False),
            BNAndPadLayer(pad_pixels=1, num_features=in_channel),
            nn.Sequential(
                nn.Conv2d(in_channel, in_channel, 3, 1, 0, groups=in_channel, bias=False),
                nn.Conv2d(in_channel, out_channel, 1, 1, 0, bias=False),
                nn.BatchNorm2d(out_channel),
            ),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def fuse(self, bn: nn.BatchNorm2d | None = None, mode: str = "single") -> nn.Module:
        """Eval-mode equivalent of ``bn(self(x))`` (``bn`` optional: a BatchNorm that follows).

        ``mode="single"``: one ``Conv2d(C, C_out, 3, padding=1)`` with bias (the formula above).
        ``mode="factorized"``: ``Sequential(Conv1x1 padding=1 + bias, DW3x3, Conv1x1 + bias)``, BatchNorms
        folded but the low-rank structure kept (``C^2 + 9C + C*C_out`` MACs per pixel instead of
        ``9*C*C_out``): the 1x1 convolution's bias is ``c_1``, so its padding-1 border is exactly the BN-pad
        border.
        """
        conv1, bnpad, (dw, pw, bn2) = self.body[0], self.body[1], self.body[2]
        a1, c1 = bn_affine(bnpad.bn)
        a2, c2 = bn_affine(bn2)
        if bn is not None:  # fold the trailing BatchNorm into BN_2
            a3, c3 = bn_affine(bn)
            a2, c2 = a3 * a2, a3 * c2 + c3
        w1 = conv1.weight.detach().double()[:, :, 0, 0]          # [C, C_in]
        d = dw.weight.detach().double()[:, 0]                    # [C, 3, 3]
        w2 = pw.weight.detach().double()[:, :, 0, 0]             # [C_out, C]
        dtype, device = pw.weight.dtype, pw.weight.device
        if mode == "single":
            kernel = torch.einsum("oc,c,cuv,ci->oiuv", w2, a1, d, w1) * a2.view(-1, 1, 1, 1)
            bias = a2 * (w2 @ (c1 * d.sum((1, 2)))) + c2
            fused = nn.Conv2d(w1.shape[1], w2.shape[0], 3, padding=1, bias=True, device=device, dtype=dtype)
            with torch.no_grad():
                fused.weight.copy_(kernel)
                fused.bias.copy_(bias)
            return fused
        if mode == "factorized":
            first = nn.Conv2d(w1.shape[1], w1.shape[0], 1, padding=1, bias=True, device=device, dtype=dtype)
            last = nn.Conv2d(w2.shape[1], w2.shape[0], 1, bias=True, device=device, dtype=dtype)
            depthwise = nn.Conv2d(d.shape[0], d.shape[0], 3, groups=d.shape[0], bias=False, device=device,
                                  dtype=dtype)
            with torch.no_grad():
                first.weight.copy_((a1.view(-1, 1) * w1)[:, :, None, None])
                first.bias.copy_(c1)
                depthwise.weight.copy_(dw.weight.detach())
                last.weight.copy_((a2.view(-1, 1) * w2)[:, :, None, None])
                last.bias.copy_(c2)
            return nn.Sequential(first, depthwise, last)
        raise ValueError(f"RepConv.fuse: mode must be 'single' or 'factorized', got {mode!r}")

    def extra_repr(self) -> str:
        return f"{self.in_channel} -> {self.out_channel}"


# ---------------------------------------------------------------------------------------------------------------
# features_only backbones


class FeatureInfo:
    """What a ``features_only`` model returns, stage by stage (timm's ``model.feature_info`` interface).

    ``info`` holds one dict per output, ``{"num_chs", "reduction", "module"}``; :meth:`channels`,
    :meth:`reduction` and :meth:`module_name` read one field for every output (or the ``idx``-th).
    """

    def __init__(self, info: list[dict], out_indices: tuple[int, ...]):
        self.info = [dict(entry) for entry in info]
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: int | None = None):
        if idx is None:
            return [entry[key] for entry in self.info]
        return self.info[idx][key]

    def get_dicts(self) -> list[dict]:
        return [dict(entry) for entry in self.info]

    def channels(self, idx: int | None = None):
        return self.get("num_chs", idx)

    def reduction(self, idx: int | None = None):
        return self.get("reduction", idx)

    def module_name(self, idx: int | None = None):
        return self.get("module", idx)

    def __len__(self) -> int:
        return len(self.info)

    def __getitem__(self, idx: int) -> dict:
        return self.info[idx]

    def __repr__(self) -> str:
        return f"FeatureInfo({self.info})"
