"""Meta-SpikeFormer: "Spike-driven Transformer V2: Meta Spiking Neural Network Architecture Inspiring the Design of
Next-generation Neuromorphic Chips" (Yao, Hu, Zhou, Yuan, Tian, Xu, Li; ICLR 2024), BICLab's ``Spiking_vit_MetaFormer``.

A four-stage spiking MetaFormer: two convolutional stages of ``MS_ConvBlock`` and two transformer stages of
``MS_Block`` with spike-driven linear attention. Everything is multi-step: tensors are ``[T, N, C, H, W]``, the
image is repeated ``T`` times (direct coding, ``model.T``), and the convolutions run on the time-flattened batch
``[T*N, C, H, W]``. The residuals are *membrane shortcuts* ("ms"): real-valued pre-LIF values are added, and every
block starts with its own LIF.

**Neuron** (every ``SN`` below; :class:`MultiStepLIF`, a :class:`spikeforge.neuron.LIFNode` with tau = 2, hard
reset to 0, ``detach_reset``, decay_input, Sigmoid(4) surrogate, state 0 at the start of every forward)::

    H_t = V_{t-1} + (X_t - V_{t-1}) / 2,    S_t = [H_t >= V_th],    V_t = H_t (1 - S_t)

with ``V_th = 1`` except ``attn_lif`` (``V_th = 0.5``). A tie ``H == V_th`` fires.

**Stages** (``C_0..C_3 = embed_dim``; ``DS`` = conv + BN, preceded by ``SN`` except the first)::

    DS_7x7/2(3 -> C_0/2)   ConvBlock(C_0/2)   DS_3x3/2(C_0)   ConvBlock(C_0)                 stage 1, /4
    DS_3x3/2(C_1)          ConvBlock(C_1) x 2                                                  stage 2, /8
    DS_3x3/2(C_2)          Block(C_2) x 6                                                       stage 3, /16
    DS_3x3/1(C_3)          Block(C_3) x 2                                                       stage 4, /16
    y = mean_t Linear(SN(mean_{hw} x))            (kd: a second Linear ``head_kd`` on the same spikes)

**ConvBlock(C)** (``MS_ConvBlock``; SepConv is MobileNetV2's inverted separable convolution)::

    x = x + BN(PW_{2C->C}(DW7x7(SN(BN(PW_{C->2C}(SN(x)))))))           # SepConv, no SN between DW and PW
    x = x + BN(Conv3x3_{4C->C}(SN(BN(Conv3x3_{C->4C}(SN(x))))))

**Block(C)** (``MS_Block``): ``x = x + Attn(x)``, ``x = x + MLP(x)`` with
``MLP = BN(Conv1d_{4C->C}(SN(BN(Conv1d_{C->4C}(SN(x))))))`` over tokens and the spike-driven attention::

    s = SN(x);   Q = SN(BN(RepConv(s))),  K = SN(BN(RepConv(s))),  V = SN(BN(RepConv(s)))      # binary
    A_h = Q_h (K_h^T V_h) * 0.125        per head h (d = C / heads), K^T V first, no softmax
    Attn(x) = BN(RepConv(SN_{V_th=0.5}(concat_h A_h)))

``RepConv`` (:class:`~spikeforge.models.layers.RepConv`) is ``1x1 -> BN with a BN(0) border -> DW3x3 -> 1x1 ->
BN``; :meth:`MetaSpikeFormer.reparameterize` folds it (and every Conv-BN pair) into single convolutions.

Module and state_dict names follow the reference exactly (``downsample1_1.encode_conv``,
``ConvBlock1_1.0.Conv.pwconv1``, ``block3.0.attn.q_conv.0.body.1.bn``, ``head_kd``), so its checkpoints
load unchanged. Facts: ``shared/specs/reference_models.md`` section B.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .. import functional as F
from .. import surrogate
from ..errors import UsageError
from ..neuron import LIFNode
from ._builder import build_model_with_cfg
from ._registry import register_model
from ._weights import read_checkpoint, state_dict_of
from .layers import FeatureInfo, RepConv, fuse_conv_bn

__all__ = ["MetaSpikeFormer", "MetaSpikeFormerFeatures", "MultiStepLIF", "SepConv", "MSConvBlock", "MSMLP",
           "MSAttention", "MSBlock", "MSDownSampling", "metaspikformer_tiny", "metaspikformer_8_384",
           "metaspikformer_8_512", "metaspikformer_8_768"]

_logger = logging.getLogger(__name__)


class MultiStepLIF(LIFNode):
    """The reference's neuron (SpikingJelly 0.0.0.0.12 ``MultiStepLIFNode(tau=2.0, detach_reset=True)``) as a
    spikeforge :class:`~spikeforge.neuron.LIFNode`: multi-step, tau 2, ``V_reset = 0``, Sigmoid(alpha=4)
    surrogate, fused kernels. Each call is one whole sequence ``[T, ...]`` starting from ``V = 0`` (the reference
    resets the network after every batch; here every call starts from rest), so the module keeps no state
    between calls (``v`` stays at rest; ``store_v_seq=True`` keeps the last call's membrane in ``v_seq``). No
    state is written during a forward, which keeps ``torch.export`` and ``torch.compile`` graphs pure."""

    def __init__(self, v_threshold: float = 1.0, backend: str | None = None):
        super().__init__(tau=2.0, decay_input=True, v_threshold=v_threshold, v_reset=0.0,
                         surrogate_function=surrogate.Sigmoid(alpha=4.0), detach_reset=True, step_mode="m",
                         backend=backend)

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        F.check_sequence(x_seq, "x_seq")
        spike_seq, _, v_seq = F.neuron_multi_step(x_seq, 0.0, self._kernel_spec(), None, self.store_v_seq,
                                                  self.backend)
        if self.store_v_seq:
            self.v_seq = v_seq
        return spike_seq

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("MultiStepLIF runs whole sequences [T, ...]; keep step_mode='m'")


def _merge(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(0, 1)


def _split(x: torch.Tensor, t: int) -> torch.Tensor:
    return x.reshape(t, -1, *x.shape[1:])


class SepConv(nn.Module):
    """``BN(PW_{2C->C}(DW7x7(SN(BN(PW_{C->2C}(SN(x)))))))``, convolutions bias-free (the reference's defaults)."""

    def __init__(self, dim: int, expansion_ratio: float = 2, bias: bool = False, kernel_size: int = 7,
                 padding: int = 3):
        super().__init__()
        med = int(expansion_ratio * dim)
        self.lif1 = MultiStepLIF()
        self.pwconv1 = nn.Conv2d(dim, med, kernel_size=1, stride=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(med)
        self.lif2 = MultiStepLIF()
        self.dwconv = nn.Conv2d(med, med, kernel_size=kernel_size, padding=padding, groups=med, bias=bias)
        self.pwconv2 = nn.Conv2d(med, dim, kernel_size=1, stride=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[0]
        x = _split(self.bn1(self.pwconv1(_merge(self.lif1(x)))), t)
        x = self.dwconv(_merge(self.lif2(x)))
        return _split(self.bn2(self.pwconv2(x)), t)

    def _fuse(self, mode: str) -> None:
        self.pwconv1, self.bn1 = fuse_conv_bn(self.pwconv1, self.bn1), nn.Identity()
        self.pwconv2, self.bn2 = fuse_conv_bn(self.pwconv2, self.bn2), nn.Identity()


class MSConvBlock(nn.Module):
    """``MS_ConvBlock``: ``x += SepConv(x)``, then ``x += BN(Conv3x3(SN(BN(Conv3x3(SN(x))))))`` via ``r*C``."""

    def __init__(self, dim: int, mlp_ratio: int = 4):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.Conv = SepConv(dim=dim)
        self.lif1 = MultiStepLIF()
        self.conv1 = nn.Conv2d(dim, hidden, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.lif2 = MultiStepLIF()
        self.conv2 = nn.Conv2d(hidden, dim, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[0]
        x = self.Conv(x) + x
        y = _split(self.bn1(self.conv1(_merge(self.lif1(x)))), t)
        y = _split(self.bn2(self.conv2(_merge(self.lif2(y)))), t)
        return x + y

    def _fuse(self, mode: str) -> None:
        self.conv1, self.bn1 = fuse_conv_bn(self.conv1, self.bn1), nn.Identity()
        self.conv2, self.bn2 = fuse_conv_bn(self.conv2, self.bn2), nn.Identity()


class MSMLP(nn.Module):
    """``MS_MLP`` on tokens ``[T, N, C, H*W]``: ``BN1d(Conv1d_{h->C}(SN(BN1d(Conv1d_{C->h}(SN(x))))))``,
    convolutions with bias."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1_conv = nn.Conv1d(in_features, hidden_features, kernel_size=1, stride=1)
        self.fc1_bn = nn.BatchNorm1d(hidden_features)
        self.fc1_lif = MultiStepLIF()
        self.fc2_conv = nn.Conv1d(hidden_features, out_features, kernel_size=1, stride=1)
        self.fc2_bn = nn.BatchNorm1d(out_features)
        self.fc2_lif = MultiStepLIF()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, n, c, h, w = x.shape
        y = self.fc1_lif(x.flatten(3))
        y = _split(self.fc1_bn(self.fc1_conv(_merge(y))), t)
        y = self.fc2_lif(y)
        y = self.fc2_bn(self.fc2_conv(_merge(y)))
        return y.reshape(t, n, -1, h, w)

    def _fuse(self, mode: str) -> None:
        self.fc1_conv, self.fc1_bn = fuse_conv_bn(self.fc1_conv, self.fc1_bn), nn.Identity()
        self.fc2_conv, self.fc2_bn = fuse_conv_bn(self.fc2_conv, self.fc2_bn), nn.Identity()


class MSAttention(nn.Module):
    """``MS_Attention_RepConv_qkv_id``: spike-driven linear attention ``Q (K^T V) * 0.125`` (module docstring).

    ``q_conv``/``k_conv``/``v_conv``/``proj_conv`` are ``Sequential(RepConv, BatchNorm2d)``; the scale is the
    reference's fixed 0.125 whatever the head size. ``qkv_bias``, ``qk_scale``, ``attn_drop``, ``proj_drop`` and
    ``sr_ratio`` are accepted and unused, as in the reference.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_scale=None, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, sr_ratio: int = 1):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.scale = 0.125
        self.head_lif = MultiStepLIF()
        self.q_conv = nn.Sequential(RepConv(dim, dim), nn.BatchNorm2d(dim))
        self.k_conv = nn.Sequential(RepConv(dim, dim), nn.BatchNorm2d(dim))
        self.v_conv = nn.Sequential(RepConv(dim, dim), nn.BatchNorm2d(dim))
        self.q_lif = MultiStepLIF()
        self.k_lif = MultiStepLIF()
        self.v_lif = MultiStepLIF()
        self.attn_lif = MultiStepLIF(v_threshold=0.5)
        self.proj_conv = nn.Sequential(RepConv(dim, dim), nn.BatchNorm2d(dim))

    def _heads(self, s: torch.Tensor) -> torch.Tensor:
        # [T, N, C, H, W] -> [T, N, heads, H*W, d], channel c = head * d + j
        t, n, c = s.shape[:3]
        return s.flatten(3).reshape(t, n, self.num_heads, c // self.num_heads, -1).transpose(-1, -2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, n, c, h, w = x.shape
        s = _merge(self.head_lif(x))
        q = self._heads(self.q_lif(_split(self.q_conv(s), t)))
        k = self._heads(self.k_lif(_split(self.k_conv(s), t)))
        v = self._heads(self.v_lif(_split(self.v_conv(s), t)))
        a = (q @ (k.transpose(-2, -1) @ v)) * self.scale            # [T, N, heads, H*W, d]
        a = a.transpose(-1, -2).reshape(t, n, c, h * w)
        a = self.attn_lif(a).reshape(t * n, c, h, w)
        return _split(self.proj_conv(a), t)

    def _fuse(self, mode: str) -> None:
        for name in ("q_conv", "k_conv", "v_conv", "proj_conv"):
            rep, bn = getattr(self, name)
            setattr(self, name, rep.fuse(bn, mode=mode))


class MSBlock(nn.Module):
    """``MS_Block``: ``x = x + Attn(x)``, ``x = x + MLP(x)`` (no norm layer, no drop path in the forward)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False, qk_scale=None,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, norm_layer=None,
                 sr_ratio: int = 1):
        super().__init__()
        self.attn = MSAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                attn_drop=attn_drop, proj_drop=drop, sr_ratio=sr_ratio)
        self.mlp = MSMLP(in_features=dim, hidden_features=int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class MSDownSampling(nn.Module):
    """``MS_DownSampling``: ``BN(Conv(SN(x)))`` (conv with bias); the first one has no ``SN`` (real image in)."""

    def __init__(self, in_channels: int = 2, embed_dims: int = 256, kernel_size: int = 3, stride: int = 2,
                 padding: int = 1, first_layer: bool = True):
        super().__init__()
        self.encode_conv = nn.Conv2d(in_channels, embed_dims, kernel_size=kernel_size, stride=stride,
                                     padding=padding)
        self.encode_bn = nn.BatchNorm2d(embed_dims)
        self.encode_lif = None if first_layer else MultiStepLIF()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[0]
        if self.encode_lif is not None:
            x = self.encode_lif(x)
        return _split(self.encode_bn(self.encode_conv(_merge(x))), t)

    def _fuse(self, mode: str) -> None:
        self.encode_conv, self.encode_bn = fuse_conv_bn(self.encode_conv, self.encode_bn), nn.Identity()


_REPARAM_MODES = ("single", "factorized")
# (stage index) -> modules that make it, in forward order; a stage's output is its last module's output
_STAGES = (
    ("downsample1_1", "ConvBlock1_1", "downsample1_2", "ConvBlock1_2"),
    ("downsample2", "ConvBlock2_1", "ConvBlock2_2"),
    ("downsample3", "block3"),
    ("downsample4", "block4"),
)
_STAGE_REDUCTIONS = (4, 8, 16, 16)


def _reparameterize(model: nn.Module, mode: str) -> None:
    if mode not in _REPARAM_MODES:
        raise UsageError(f"reparameterize: mode must be one of {', '.join(_REPARAM_MODES)}, got {mode!r}")
    if getattr(model, "reparameterized", None):
        return
    for module in list(model.modules()):
        if isinstance(module, (SepConv, MSConvBlock, MSMLP, MSAttention, MSDownSampling)):
            module._fuse(mode)
    model.reparameterized = mode


def _run_stage(model: nn.Module, names: Sequence[str], x: torch.Tensor) -> torch.Tensor:
    for name in names:
        module = getattr(model, name)
        if isinstance(module, nn.ModuleList):
            for block in module:
                x = block(x)
        else:
            x = module(x)
    return x


class MetaSpikeFormer(nn.Module):
    """Meta-SpikeFormer (the reference's ``Spiking_vit_MetaFormer``, "ms" model); equations in the module docstring.

    Args:
        embed_dim: the four stage widths ``[C_0, C_1, C_2, C_3]`` (stage 1 starts at ``C_0 / 2``).
        num_heads: attention heads in stages 3 and 4 (``C_2`` and ``C_3`` must divide by it).
        mlp_ratios: hidden-width ratio of the ConvBlocks and the MLPs (the reference only runs with 4).
        in_channels: image channels.
        num_classes: classifier outputs (0: no classifier, ``forward`` returns the time-averaged spikes' head
            input).
        kd: add the distillation head ``head_kd`` (training returns ``(out, out_kd)``, eval their mean).
        T: time steps (direct coding; also settable later as ``model.T``).
        backend: neuron kernel backend (``None``: chosen per device by the dispatcher).
        img_size_h, img_size_w, patch_size, qkv_bias, qk_scale, drop_rate, attn_drop_rate, drop_path_rate,
        norm_layer, depths, sr_ratios: accepted for the reference's signature and unused, as there (the block
            counts 1, 1, 2 | 6 | 2 are fixed; the reference never applies its drop path).

    ``forward(x)``: ``x`` is ``[N, C, H, W]`` (repeated ``T`` times) or ``[T, N, C, H, W]``; returns ``[N,
    num_classes]`` logits averaged over time. Every neuron starts from rest at each call.
    """

    # torch.export and torch.compile work (the fused LIF is a custom op); TorchScript cannot compile the
    # kernel road of spikeforge.functional (an autograd.Function / custom op chosen from the neuron spec)
    export_unsupported = {"script": "the LIF neurons run the fused kernels through spikeforge.functional, which "
                                    "TorchScript cannot compile; use torch.export or torch.compile"}

    def __init__(self, img_size_h: int = 224, img_size_w: int = 224, patch_size: int = 16, in_channels: int = 3,
                 num_classes: int = 1000, embed_dim: Sequence[int] = (128, 256, 512, 640), num_heads: int = 8,
                 mlp_ratios: int = 4, qkv_bias: bool = False, qk_scale=None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, norm_layer=None, depths: int = 8,
                 sr_ratios: int = 1, kd: bool = False, T: int = 1, backend: str | None = None):
        super().__init__()
        embed_dim = [int(c) for c in embed_dim]
        if len(embed_dim) != 4 or min(embed_dim) < 2:
            raise UsageError(f"MetaSpikeFormer: embed_dim must be four stage widths >= 2, got {embed_dim}")
        for c in embed_dim[2:]:
            if c % num_heads:
                raise UsageError(f"MetaSpikeFormer: embed_dim {embed_dim[2:]} (stages 3 and 4) must be divisible "
                                 f"by num_heads={num_heads}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise UsageError(f"MetaSpikeFormer: num_classes must be an integer >= 0, got {num_classes!r}")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.depths = depths
        self.T = T
        self.kd = bool(kd)
        c0, c1, c2, c3 = embed_dim
        block_args = dict(num_heads=num_heads, mlp_ratio=mlp_ratios, qkv_bias=qkv_bias, qk_scale=qk_scale,
                          drop=drop_rate, attn_drop=attn_drop_rate, sr_ratio=sr_ratios)

        self.downsample1_1 = MSDownSampling(in_channels, c0 // 2, kernel_size=7, stride=2, padding=3,
                                            first_layer=True)
        self.ConvBlock1_1 = nn.ModuleList([MSConvBlock(c0 // 2, mlp_ratios)])
        self.downsample1_2 = MSDownSampling(c0 // 2, c0, 3, 2, 1, first_layer=False)
        self.ConvBlock1_2 = nn.ModuleList([MSConvBlock(c0, mlp_ratios)])
        self.downsample2 = MSDownSampling(c0, c1, 3, 2, 1, first_layer=False)
        self.ConvBlock2_1 = nn.ModuleList([MSConvBlock(c1, mlp_ratios)])
        self.ConvBlock2_2 = nn.ModuleList([MSConvBlock(c1, mlp_ratios)])
        self.downsample3 = MSDownSampling(c1, c2, 3, 2, 1, first_layer=False)
        self.block3 = nn.ModuleList([MSBlock(c2, **block_args) for _ in range(6)])
        self.downsample4 = MSDownSampling(c2, c3, 3, 1, 1, first_layer=False)
        self.block4 = nn.ModuleList([MSBlock(c3, **block_args) for _ in range(2)])
        self.lif = MultiStepLIF()
        self.head = nn.Linear(c3, num_classes) if num_classes > 0 else nn.Identity()
        if self.kd:
            self.head_kd = nn.Linear(c3, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        if backend is not None:
            for module in self.modules():
                if isinstance(module, MultiStepLIF):
                    module.backend = backend

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):  # everything else keeps PyTorch's initialisation, as in the reference
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @property
    def T(self) -> int:
        """Time steps of the direct coding (the image is repeated ``T`` times)."""
        return self._T

    @T.setter
    def T(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"MetaSpikeFormer: T (time steps) must be an integer >= 1, got {value!r}")
        self._T = value

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` -> ``[T, N, C, H, W]`` (the image repeated); a ``[T, N, C, H, W]`` input passes."""
        if x.dim() == 4:
            return x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        if x.dim() == 5:
            return x
        raise ValueError(f"MetaSpikeFormer expects images [N, C, H, W] or sequences [T, N, C, H, W], "
                         f"got {list(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, C, H, W]`` -> the ``block4`` output ``[T, N, C_3, H/16, W/16]`` (membrane-shortcut values)."""
        for names in _STAGES:
            x = _run_stage(self, names, x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        """``block4`` output -> logits: mean over tokens, ``lif``, ``head`` (and ``head_kd``), mean over time.

        ``pre_logits=True`` returns the final spikes ``[T, N, C_3]`` instead.
        """
        s = self.lif(x.flatten(3).mean(3))
        if pre_logits:
            return s
        out = self.head(s).mean(0)
        if not self.kd:
            return out
        out_kd = self.head_kd(s).mean(0)
        if self.training:
            return out, out_kd
        return (out + out_kd) / 2

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(self.encode(x)))

    def reparameterize(self, mode: str = "single") -> MetaSpikeFormer:
        """Fold every BatchNorm into the convolution before it, for inference (eval-mode statistics).

        Each ``Sequential(RepConv, BN)`` becomes one ``Conv2d(C, C, 3, padding=1)`` with bias (``mode="single"``;
        see :meth:`~spikeforge.models.layers.RepConv.fuse`), or keeps its 1x1 / depthwise / 1x1 factors with the
        BatchNorms folded (``mode="factorized"``, fewer MACs); every other Conv-BN pair becomes one convolution
        with bias. The outputs are those of the eval-mode model up to float rounding (a membrane within
        rounding of a threshold may flip its spike). The state_dict names change (BatchNorms disappear), so load
        checkpoints before this. In place; returns the model.

        Speed: the single 3x3 fold multiplies those layers' MACs by about 4.5, so at the released widths it is
        slower on CPU (0.73-0.81x measured, ``bench/metaspikformer_reparam.py``); ``"factorized"`` is the
        faster choice there (1.00-1.06x), the single fold wins only on very small models.
        """
        _reparameterize(self, mode)
        return self

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, T={self.T}, kd={self.kd}, num_classes={self.num_classes}"


class MetaSpikeFormerFeatures(nn.Module):
    """The four stage outputs of a :class:`MetaSpikeFormer` (``create_model(..., features_only=True)``).

    Stages end after ``ConvBlock1_2`` (``C_0``, stride 4), ``ConvBlock2_2`` (``C_1``, 8), ``block3`` (``C_2``,
    16) and ``block4`` (``C_3``, 16). The outputs are the membrane-shortcut values (real-valued, before any LIF),
    averaged over time (``feature_time="mean"``: ``[N, C, H, W]``) or all of them (``"all"``:
    ``[T, N, C, H, W]``). The classifier (``lif``, ``head``, ``head_kd``) is dropped; the other module names are
    the classifier's, so its state_dict (minus the head) loads here.
    """

    export_unsupported = MetaSpikeFormer.export_unsupported

    def __init__(self, model: MetaSpikeFormer, out_indices: Sequence[int] = (0, 1, 2, 3),
                 feature_time: str = "mean"):
        super().__init__()
        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices or any(not 0 <= i < len(_STAGES) for i in out_indices) or \
                len(set(out_indices)) != len(out_indices):
            raise UsageError(f"out_indices must be distinct stage indices in 0..{len(_STAGES) - 1}, "
                             f"got {out_indices}")
        if feature_time not in ("mean", "all"):
            raise UsageError(f"feature_time must be 'mean' (time-averaged [N, C, H, W]) or 'all' "
                             f"([T, N, C, H, W]), got {feature_time!r}")
        self.out_indices = tuple(sorted(out_indices))
        self.feature_time = feature_time
        self._T = model.T
        self.embed_dim = list(model.embed_dim)
        self.pretrained_cfg = getattr(model, "pretrained_cfg", None)
        last = max(self.out_indices)
        for names in _STAGES[:last + 1]:
            for name in names:
                self.add_module(name, getattr(model, name))
        self.feature_info = FeatureInfo(
            [dict(num_chs=self.embed_dim[i], reduction=_STAGE_REDUCTIONS[i], module=_STAGES[i][-1])
             for i in self.out_indices], self.out_indices)

    T = MetaSpikeFormer.T
    encode = MetaSpikeFormer.encode

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.encode(x)
        outs = []
        for i, names in enumerate(_STAGES[:max(self.out_indices) + 1]):
            x = _run_stage(self, names, x)
            if i in self.out_indices:
                outs.append(x.mean(0) if self.feature_time == "mean" else x)
        return outs

    def reparameterize(self, mode: str = "single") -> MetaSpikeFormerFeatures:
        """As :meth:`MetaSpikeFormer.reparameterize`."""
        _reparameterize(self, mode)
        return self


# ------------------------------------------------------------------------------------------------ the zoo entries
_CHECKPOINT_HINT = "a state_dict, or the reference's training checkpoint {model, optimizer, epoch, scaler, args}"


def _read_pretrained(pretrained) -> tuple[dict, object]:
    """The state_dict and the stored training arguments (or None) of a local file or a mapping."""
    if isinstance(pretrained, (str, os.PathLike)):
        obj = read_checkpoint(pretrained)
        where = f"checkpoint {pretrained}"
    else:
        obj = pretrained
        where = "the given mapping"
    args = obj.get("args") if isinstance(obj, Mapping) else None
    return state_dict_of(obj, where), args


def _stored_time_steps(args) -> int | None:
    value = args.get("time_steps") if isinstance(args, Mapping) else getattr(args, "time_steps", None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def _create(variant: str, pretrained, embed_dim: Sequence[int], kwargs: dict, num_heads: int = 8):
    kwargs = dict(kwargs)
    features_only = bool(kwargs.pop("features_only", False))
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    feature_time = kwargs.pop("feature_time", "mean")
    T = kwargs.pop("T", None)
    args = dict(img_size_h=224, img_size_w=224, patch_size=16, embed_dim=list(embed_dim), num_heads=num_heads,
                mlp_ratios=4, in_channels=3, num_classes=1000, qkv_bias=False, depths=8, sr_ratios=1)
    if pretrained is not None and pretrained is not False and pretrained is not True:
        if not isinstance(pretrained, (str, os.PathLike, Mapping)):
            raise TypeError("pretrained must be None, False, True, a file path or a state_dict, "
                            f"got {type(pretrained).__name__}")
        state, stored_args = _read_pretrained(pretrained)
        has_kd = "head_kd.weight" in state or "head_kd.bias" in state
        if "kd" not in kwargs:
            kwargs["kd"] = has_kd
            _logger.info("%s: the checkpoint %s head_kd.*, so the model is built with kd=%s", variant,
                         "has" if has_kd else "has no", has_kd)
        elif bool(kwargs["kd"]) != has_kd:
            raise UsageError(f"{variant}: kd={kwargs['kd']} but the checkpoint {'has' if has_kd else 'lacks'} the "
                             f"distillation head head_kd.*; leave kd out and it is taken from the checkpoint")
        steps = _stored_time_steps(stored_args)
        if T is None and steps is not None:
            T = steps
            _logger.info("%s: T=%d, the time steps stored in the checkpoint's args", variant, steps)
        pretrained = state
    args.update(kwargs)
    model = build_model_with_cfg(MetaSpikeFormer, variant, pretrained, **args)
    if T is not None:
        model.T = T
    if features_only:
        return MetaSpikeFormerFeatures(model, out_indices, feature_time)
    return model


_ENTRY_ARGS = """
    Args:
        pretrained: ``None``/``False`` keeps the random initialisation; a path loads a local file: a bare
            state_dict, ``{"model": state_dict}``, or the reference's training checkpoint (``55M_kd.pth``:
            ``{model, optimizer, epoch, scaler, args}`` with ``args`` an ``argparse.Namespace``), read with
            ``weights_only=True`` (only ``argparse.Namespace`` is allowed beyond tensors and plain data; a file
            that would run code is refused). ``kd`` is taken from the keys (``head_kd.*``) unless given, and ``T``
            from ``args.time_steps`` when stored. No official weights can be downloaded (they are on Google Drive).
        **kwargs: :class:`MetaSpikeFormer` arguments (``num_classes``, ``kd``, ``T``, ``in_channels``, ...), and
            ``features_only=True`` with ``out_indices`` (default ``(0, 1, 2, 3)``) and ``feature_time``
            (``"mean"`` or ``"all"``) for the backbone (:class:`MetaSpikeFormerFeatures`).
"""


def _doc(summary: str):
    def decorate(fn):
        fn.__doc__ = summary + "\n" + _ENTRY_ARGS
        return fn
    return decorate


@register_model
@_doc("Meta-SpikeFormer tiny, embed_dim (16, 32, 64, 80), num_heads 1: a small configuration for CPU demos, "
      "tests and small images (not in the paper; 981,864 parameters with 1000 classes). One head keeps the "
      "head dimension at 64, the released models' value: the linear attention ``q (k^T v) / 8`` counts "
      "coincident q/k/v spikes over tokens and channels, and with the paper's 8 heads of 8 channels and the few "
      "tokens of a small image (4 x 4 at 64 px) ``attn_lif`` would never reach its threshold.")
def metaspikformer_tiny(pretrained=None, **kwargs) -> MetaSpikeFormer:
    return _create("metaspikformer_tiny", pretrained, (16, 32, 64, 80), kwargs, num_heads=1)


@register_model
@_doc("Meta-SpikeFormer 8-384, embed_dim (96, 192, 384, 480): 31,333,864 parameters (31,814,864 with kd).")
def metaspikformer_8_384(pretrained=None, **kwargs) -> MetaSpikeFormer:
    return _create("metaspikformer_8_384", pretrained, (96, 192, 384, 480), kwargs)


@register_model
@_doc("Meta-SpikeFormer 8-512, embed_dim (128, 256, 512, 640): 55,350,248 parameters (55,991,248 with kd); "
      "the released \"55M\" model, 80.0% ImageNet top-1 at T=4 with distillation.")
def metaspikformer_8_512(pretrained=None, **kwargs) -> MetaSpikeFormer:
    return _create("metaspikformer_8_512", pretrained, (128, 256, 512, 640), kwargs)


@register_model
@_doc("Meta-SpikeFormer 8-768, embed_dim (192, 384, 768, 960): 123,741,160 parameters (124,702,160 with kd).")
def metaspikformer_8_768(pretrained=None, **kwargs) -> MetaSpikeFormer:
    return _create("metaspikformer_8_768", pretrained, (192, 384, 768, 960), kwargs)

