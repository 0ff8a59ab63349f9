"""Generic building blocks shared by the zoo architectures (NCHW layout throughout).

Submodule names are part of the checkpoints' state_dict names (``fc1``, ``fc2``, ``proj``, ``norm``,
``reduction``), so they do not change.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["DropPath", "drop_path", "Mlp", "PatchEmbed", "PatchMerging", "group_norm1", "to_2tuple"]


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
