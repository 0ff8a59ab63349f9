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

from ._builder import build_model_with_cfg
from ._registry import register_model
from .layers import DropPath, Mlp, PatchEmbed, PatchMerging, group_norm1, to_2tuple

__all__ = ["SNNMLP", "GroupLIF", "group_lif", "snnmlp_t", "snnmlp_s", "snnmlp_b"]


def group_lif(x: torch.Tensor, tau, v_th, lif: int, dim: int) -> torch.Tensor:
    """Full-precision group LIF along axis ``dim`` of ``x`` (the reference's ``LIFSpike``).

    The scanned axis of length ``L`` is cut into ``L // lif`` consecutive groups of ``lif`` positions; inside a
    group the position index ``j = 0 .. lif-1`` plays the role of time, and the membrane restarts from zero in
    every group, independently for every other index. With ``o_j`` the membrane carried into step ``j`` and
    ``s_j`` the fire flag::

        u_0 = x_0
        u_j = tau * o_j + x_j,          o_j = (1 - s_{j-1}) * u_{j-1}     (hard reset to 0 after a fire)
        s_j = [u_j > V_th]                                                (strict: a tie does not fire)
        y_j = s_j * u_j + (1 - s_j) * V_th  =  max(u_j, V_th)

    The output is not binary: a position that fires emits its membrane, the others emit ``V_th``. The last
    ``L mod lif`` positions of every line do not fill a group and pass through unchanged (``y = x``); if
    ``L < lif`` the whole axis passes through.

    Backward has no surrogate: the fire mask ``s`` is a constant. With ``g = dL/dy``::

        dy_j/du_j     = s_j
        du_j/du_{j-1} = tau * (1 - s_{j-1})
        dL/dV_th      = sum over grouped positions of (1 - s) * g
        dL/dtau       = sum_j g_j * s_j * du_j/dtau,
        du_j/dtau     = (1 - s_{j-1}) * (u_{j-1} + tau * du_{j-1}/dtau),   du_0/dtau = 0

    which is exactly the autograd of the forward written with a detached mask; tails carry ``g`` straight through
    and contribute nothing to ``tau`` or ``V_th``.

    Args:
        x: tensor of any rank; typically ``[N, C, H, W]`` with ``dim=2`` (scan H) or ``dim=3`` (scan W).
        tau: decay, a float or a tensor broadcastable to one step (the reference keeps a shape-[1] parameter).
        v_th: threshold, same convention as ``tau``.
        lif: group size (number of LIF steps); ``-1`` means identity, as in the reference.
        dim: the scanned axis.

    The recurrence runs in at least float32 (float64 stays float64), so float16/bfloat16 inputs are safe; the
    result has the dtype of ``x``. Only the ``lif`` steps of a group are a Python loop.
    """
    if not isinstance(lif, int) or isinstance(lif, bool) or not (lif == -1 or lif >= 1):
        raise ValueError(f"lif must be -1 (identity) or a positive group size, got {lif!r}")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim={dim} is out of range for an input of rank {x.dim()}")
    dim = dim % x.dim()
    length = x.shape[dim]
    n_groups = length // lif if lif > 0 else 0
    if n_groups == 0:
        return x

    compute_dtype = torch.promote_types(x.dtype, torch.float32)
    tau = torch.as_tensor(tau, device=x.device).to(compute_dtype)
    v_th = torch.as_tensor(v_th, device=x.device).to(compute_dtype)
    if torch.is_grad_enabled() and (x.requires_grad or tau.requires_grad or v_th.requires_grad):
        return _group_lif_autograd(x, tau, v_th, lif, dim, n_groups, compute_dtype)
    return _group_lif_inplace(x, tau, v_th, lif, dim, n_groups, compute_dtype)


# Both implementations select with float masks and clamps instead of boolean ``where``: boolean selects are
# several times slower than arithmetic on CPU, and these forms stay exact for every finite or infinite input:
#   y       = max(u, V_th) * s + V_th * (1 - s)      (= u if fired, V_th otherwise)
#   o_{j+1} = min(u, V_th) * (1 - s)                 (= u if not fired, 0 otherwise; min() keeps +inf * 0 away)
# Their autograd matches the reference at ties too: clamp(min=V_th) passes the gradient to u only where u >= V_th,
# which is multiplied by s (u > V_th), and clamp(max=V_th) passes it to u where u <= V_th, i.e. exactly 1 - s.


def _steps_first(x, dim, n_groups, lif, compute_dtype):
    """The grouped part of ``x`` as a contiguous ``[lif, ...]`` tensor: step ``j`` of every group is ``[j]``.

    Elementwise ops on contiguous steps are several times faster than on the stride-``lif`` views of the
    original layout, which pays for this one copy (it also does the float32 upcast)."""
    grouped = x.narrow(dim, 0, n_groups * lif).unflatten(dim, (n_groups, lif)).movedim(dim + 1, 0)
    return grouped.to(compute_dtype, memory_format=torch.contiguous_format, copy=True)


def _group_lif_autograd(x, tau, v_th, lif, dim, n_groups, compute_dtype):
    length, grouped_len = x.shape[dim], n_groups * lif
    steps = _steps_first(x, dim, n_groups, lif, compute_dtype)
    outputs = []
    carried = None  # o_j: the membrane handed to step j, already zeroed where step j-1 fired
    for j in range(lif):
        u = steps[j] if carried is None else torch.addcmul(steps[j], carried, tau)
        rest = torch.le(u.detach(), v_th.detach()).to(compute_dtype)  # 1 - s_j, a constant for autograd
        outputs.append(u.clamp(min=v_th) * (1.0 - rest) + v_th * rest)
        if j < lif - 1:
            carried = u.clamp(max=v_th) * rest
    y = torch.stack(outputs).movedim(0, dim + 1).flatten(dim, dim + 1).to(x.dtype)
    if grouped_len == length:
        return y
    return torch.cat([y, x.narrow(dim, grouped_len, length - grouped_len)], dim)


def _group_lif_inplace(x, tau, v_th, lif, dim, n_groups, compute_dtype):
    # Inference: update the contiguous steps in place, then scatter them back next to the untouched tails.
    steps = _steps_first(x, dim, n_groups, lif, compute_dtype)
    rest, carried = torch.empty_like(steps[0]), torch.empty_like(steps[0])
    for j in range(lif):
        u = steps[j]
        if j > 0:
            u.addcmul_(carried, tau)
        if j < lif - 1:
            torch.le(u, v_th, out=rest)
            torch.clamp(u, max=v_th, out=carried).mul_(rest)
        u.clamp_(min=v_th)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    grouped_len, length = n_groups * lif, x.shape[dim]
    out.narrow(dim, 0, grouped_len).unflatten(dim, (n_groups, lif)).movedim(dim + 1, 0).copy_(steps)
    if grouped_len < length:
        out.narrow(dim, grouped_len, length - grouped_len).copy_(x.narrow(dim, grouped_len, length - grouped_len))
    return out


class GroupLIF(nn.Module):
    """Learnable full-precision group LIF scanning one spatial axis (reference class ``LIFSpike``).

    ``tau`` and ``Vth`` (capital V, as in the reference checkpoints) are shape-[1] parameters unless fixed, in
    which case they are plain floats and absent from the state_dict. See :func:`group_lif` for the equations.

    Args:
        lif: group size; ``-1`` disables the neuron (identity).
        fix_tau, fix_vth: keep ``tau`` / ``Vth`` constant instead of learning them.
        init_tau, init_vth: initial values (training used 0.25 and 0.1).
        dim: 2 scans H ("vertical"), 3 scans W ("horizontal").
    """

    def __init__(self, lif: int = 4, fix_tau: bool = False, fix_vth: bool = False, init_tau: float = 0.25,
                 init_vth: float = 0.1, dim: int = 2):
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 (scan H) or 3 (scan W), got {dim!r}")
        if not isinstance(lif, int) or isinstance(lif, bool) or not (lif == -1 or lif >= 1):
            raise ValueError(f"lif must be -1 (identity) or a positive group size, got {lif!r}")
        self.lif = lif
        self.dim = dim
        self.tau = float(init_tau) if fix_tau else nn.Parameter(torch.tensor([float(init_tau)]))
        self.Vth = float(init_vth) if fix_vth else nn.Parameter(torch.tensor([float(init_vth)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"GroupLIF expects x of shape [N, C, H, W], got {tuple(x.shape)}")
        if self.lif == -1:
            return x
        return group_lif(x, self.tau, self.Vth, self.lif, self.dim)

    def extra_repr(self) -> str:
        axis = "H" if self.dim == 2 else "W"
        return f"lif={self.lif}, scan={axis}"



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
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = activation_checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x if self.downsample is None else self.downsample(x)


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
            raise ValueError(f"SNNMLP expects images of shape [N, C, H, W], got {tuple(x.shape)}")
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
