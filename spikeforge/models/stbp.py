"""STBP models: MNISTNet, CifarNet and STBP's ResNet18 ("Train SNN with STBP in fp32 and low bit").

The reference (ZLkanyo009/STBP-train-and-compression, ``models/ExampleNet.py`` and ``models/ResNet.py``) builds
its networks from ``tdLayer`` (a stateless layer applied at every time step, optionally followed by
``tdBatchNorm``) and ``LIFSpike`` (u_t = τ·u_{t−1}·(1 − o_{t−1}) + x_t, o_t = 1[u_t > V_th]). Here the same
modules come from :mod:`spikeforge.layer` and :mod:`spikeforge.neuron`, time-first, with ``steps``, ``v_th``
and ``tau`` held by each instance instead of module globals.

Input: images ``[N, C, H, W]`` are repeated ``steps`` times (direct coding, as the reference's ``main.py``
broadcasts them); a sequence ``[T, N, C, H, W]`` is taken as it is. Output: the firing rate of the last spiking
layer, ``[N, num_classes]`` (mean of its spikes over time; values in {0, 1/T, ..., 1}).

Architectures (facts: ``../shared/specs/reference_models.md`` section C):

* **MNISTNet** (606,685 parameters): conv5x5 1→15 (pad 2, no bias), LIF, avgpool 2, LIF, conv5x5 15→40, LIF,
  avgpool 2, LIF, fc 1960→300, LIF, fc 300→classes, LIF.
* **CifarNet** (45,005,450): conv3x3 (no bias) + tdBN each: 3→128, LIF, 128→256, LIF, avgpool, LIF, 256→512, LIF,
  avgpool, LIF, 512→1024, LIF, 1024→512, LIF; fc 32768→1024, LIF, fc 1024→512, LIF, fc 512→classes, LIF.
* **ResNet18** (12,630,858), STBP's own variant: stem conv3x3 3→64 + tdBN, LIF; three stages of BasicBlocks
  [3, 3, 2] at 128, 256 (stride 2), 512 (stride 2); the first block of each stage has a 1x1 conv + tdBN
  (α = 1/√2) shortcut; per-step global average pool, fc 512→256, LIF, fc 256→classes, LIF. A block is
  ``LIF(tdBN_{1/√2}(conv2(LIF(tdBN(conv1(x))))) + shortcut(x))``. The reference hard-codes 10 outputs and
  ignores ``num_classes``; here ``num_classes`` is honoured (10 by default, the same model).

State dicts: every layer is registered twice, as in the reference (``self.conv1`` and
``self.conv1_s = tdLayer(self.conv1, self.bn1)``), so ``state_dict()`` holds both aliases of every tensor
(``conv1.weight`` and ``conv1_s.layer.weight``; ``bn0.*`` and ``conv0_s.bn.*``) and a reference checkpoint
(``{"model": sd, "acc", "epoch"}`` or bare) loads strictly with :func:`spikeforge.models.load_weights`.
Loading checks the aliases: two names of one tensor with different values are refused
(:class:`AliasMismatchError`) instead of letting the last one silently win; a state_dict carrying only one
alias of a tensor is completed by :func:`checkpoint_filter_fn` (and by ``load_state_dict`` itself).

Neurons: one ``LIFSpike`` per activation (the reference reuses one stateless instance; outputs are the same),
so that a quantiser can give each call site its own integer threshold. Surrogate: spikeforge's STBP rectangle,
centred at V_th as in the paper (the reference centres it at u = 0 by a bug, see C3 of the facts file).

Integer deployment: :meth:`STBPNet.integer_graph` describes each network as plain data (which synapse feeds
which neuron, pools, residual sums) for :mod:`spikeforge.quantize`, which imports nothing from here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from ..layer import tdBatchNorm, tdLayer
from ..neuron import LIFSpike
from ._builder import build_model_with_cfg
from ._registry import register_model
from ._weights import WeightsMismatchError

__all__ = ["STBPNet", "MNISTNet", "CifarNet", "STBPResNet18", "BasicBlock", "AliasMismatchError",
           "checkpoint_filter_fn", "tensor_aliases", "stbp_mnistnet", "stbp_cifarnet", "stbp_resnet18"]


class AliasMismatchError(WeightsMismatchError, ValueError):
    """Two names of one tensor (``conv1.weight`` / ``conv1_s.layer.weight``) hold different values."""


# ------------------------------------------------------------------------------------------------ aliases
def tensor_aliases(model: nn.Module) -> list[list[str]]:
    """Groups of state_dict names that refer to the same tensor of ``model`` (only groups of two or more).

    A module registered under several names (the reference's ``self.conv1`` and ``self.conv1_s.layer``) puts
    each of its parameters and buffers into ``state_dict()`` once per name.
    """
    by_module: dict[int, list[str]] = {}
    modules: dict[int, nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        by_module.setdefault(id(module), []).append(name)
        modules[id(module)] = module
    groups = []
    for key, names in by_module.items():
        if len(names) < 2:
            continue
        module = modules[key]
        local = [n for n, _ in module.named_parameters(recurse=False)]
        local += [n for n, b in module.named_buffers(recurse=False)
                  if n not in module._non_persistent_buffers_set]
        for entry in local:
            groups.append([f"{prefix}.{entry}" if prefix else entry for prefix in names])
    return groups


def _complete_aliases(state: dict, groups: list[list[str]], prefix: str = "") -> None:
    """Check that aliases agree and fill in the missing ones, in place (``prefix``: a parent's key prefix)."""
    for group in groups:
        keys = [prefix + k for k in group]
        present = [k for k in keys if k in state]
        if not present:
            continue
        first = state[present[0]]
        for other in present[1:]:
            value = state[other]
            same = (isinstance(value, torch.Tensor) and isinstance(first, torch.Tensor)
                    and value.shape == first.shape and torch.equal(value.to(first.dtype), first))
            if not same:
                raise AliasMismatchError(
                    f"the checkpoint holds different values under {present[0]!r} and {other!r}, which are two "
                    f"names of the same tensor in this model (the reference registers every layer twice); "
                    f"refusing to load an inconsistent checkpoint")
        for k in keys:
            if k not in state:
                state[k] = first


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state_dict`` made ready for a strict load into ``model``.

    Unwraps ``{"model": sd}`` / ``{"state_dict": sd}`` / ``{"net": sd}`` (the reference's and the training
    engine's checkpoints), checks that the aliases of every tensor agree (:class:`AliasMismatchError`
    otherwise) and adds the aliases that are missing, so a de-duplicated state_dict loads too.
    """
    if isinstance(state_dict, Mapping):
        for wrapper in ("model", "state_dict", "net"):
            if isinstance(state_dict.get(wrapper), Mapping):
                state_dict = state_dict[wrapper]
                break
    state = dict(state_dict)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    _complete_aliases(state, tensor_aliases(model))
    return state


# ------------------------------------------------------------------------------------------------ base class
class STBPNet(nn.Module):
    """Common part of the STBP models: direct coding, rate readout, per-instance neuron parameters."""

    # torch.export and torch.compile work (the fused LIF is a custom op); TorchScript cannot compile the
    # charge-fire-reset kernel road (an autograd.Function / custom op dispatch chosen from the spec)
    export_unsupported = {"script": "LIFSpike runs the fused kernels through spikeforge.functional, which "
                                    "TorchScript cannot compile; use torch.export or torch.compile"}

    def __init__(self, num_classes: int, steps: int, v_th: float, tau: float, backend: str | None = None):
        super().__init__()
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps (time steps) must be an integer >= 1, got {steps!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        self.num_classes = num_classes
        self.steps = steps
        self.v_th = float(v_th)
        self.tau = float(tau)
        self.backend = backend
        self._register_load_state_dict_pre_hook(self._check_aliases_on_load)

    # neurons and batch norms read the model's v_th / tau once, when they are built
    def _lif(self) -> LIFSpike:
        return LIFSpike(tau=self.tau, v_th=self.v_th, backend=self.backend)

    def _bn(self, channels: int, alpha: float = 1.0) -> tdBatchNorm:
        return tdBatchNorm(channels, alpha=alpha, v_th=self.v_th)

    def _check_aliases_on_load(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                               error_msgs):
        _complete_aliases(state_dict, tensor_aliases(self), prefix)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` → ``[steps, N, C, H, W]`` (direct coding); a 5-D ``[T, N, C, H, W]`` passes."""
        if x.dim() == 4:
            return x.unsqueeze(0).expand(self.steps, *x.shape)
        if x.dim() == 5:
            return x
        raise ValueError(f"{type(self).__name__} expects images [N, C, H, W] or a sequence [T, N, C, H, W], "
                         f"got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Firing rate ``[N, num_classes]`` of the output layer."""
        return self.forward_spikes(self.encode(x)).mean(0)

    def forward_spikes(self, x_seq: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Output spikes ``[T, N, num_classes]`` for an input sequence ``[T, N, C, H, W]``."""
        raise NotImplementedError

    def integer_graph(self) -> list:  # pragma: no cover - abstract
        """The network as plain data for :mod:`spikeforge.quantize` (see :class:`MNISTNet`)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, steps={self.steps}, v_th={self.v_th}, tau={self.tau}"


def _flatten(x_seq: torch.Tensor) -> torch.Tensor:
    # [T, N, C, H, W] -> [T, N, C*H*W], C-major like the reference's x.view(N, -1, T)
    return x_seq.flatten(2)


# ------------------------------------------------------------------------------------------------ MNISTNet
class MNISTNet(STBPNet):
    """STBP's MNISTNet (606,685 parameters with 10 classes), 1×28×28 input.

    ``integer_graph()`` is a list of steps, each a tuple ``(kind, ...)`` naming modules of this model:

    * ``("synapse", layer)``: a Conv2d/Linear (its tdBatchNorm, if any, is named by ``("synapse", layer, bn)``);
    * ``("pool", tdlayer)``: average pooling (a sum over k×k, scaled by 1/k²);
    * ``("neuron", lif)``: a LIFSpike fed by the current of the steps since the previous neuron;
    * ``("flatten",)``; ``("block", main_steps, shortcut_steps_or_identity, lif)`` (a residual block,
      ResNet18): ``LIF(main(x) + shortcut(x))``, ``shortcut`` being steps or ``("identity", module)``.
    """

    def __init__(self, num_classes: int = 10, steps: int = 2, v_th: float = 0.4, tau: float = 0.25,
                 backend: str | None = None):
        super().__init__(num_classes, steps, v_th, tau, backend)
        self.conv1 = nn.Conv2d(1, 15, 5, 1, 2, bias=False)
        self.conv2 = nn.Conv2d(15, 40, 5, 1, 2, bias=False)
        self.fc1 = nn.Linear(7 * 7 * 40, 300)
        self.fc2 = nn.Linear(300, num_classes)
        self.conv1_s = tdLayer(self.conv1)
        self.conv2_s = tdLayer(self.conv2)
        self.pool1_s = tdLayer(nn.AvgPool2d(2))
        self.pool2_s = tdLayer(nn.AvgPool2d(2))
        self.fc1_s = tdLayer(self.fc1)
        self.fc2_s = tdLayer(self.fc2)
        self.conv1_lif, self.pool1_lif, self.conv2_lif = self._lif(), self._lif(), self._lif()
        self.pool2_lif, self.fc1_lif, self.fc2_lif = self._lif(), self._lif(), self._lif()

    def forward_spikes(self, x_seq: torch.Tensor) -> torch.Tensor:
        x = self.conv1_lif(self.conv1_s(x_seq))
        x = self.pool1_lif(self.pool1_s(x))
        x = self.conv2_lif(self.conv2_s(x))
        x = self.pool2_lif(self.pool2_s(x))
        x = self.fc1_lif(self.fc1_s(_flatten(x)))
        return self.fc2_lif(self.fc2_s(x))

    def integer_graph(self) -> list:
        return [("synapse", "conv1"), ("neuron", "conv1_lif"),
                ("pool", "pool1_s"), ("neuron", "pool1_lif"),
                ("synapse", "conv2"), ("neuron", "conv2_lif"),
                ("pool", "pool2_s"), ("neuron", "pool2_lif"),
                ("flatten",),
                ("synapse", "fc1"), ("neuron", "fc1_lif"),
                ("synapse", "fc2"), ("neuron", "fc2_lif")]


# ------------------------------------------------------------------------------------------------ CifarNet
class CifarNet(STBPNet):
    """STBP's CifarNet (45,005,450 parameters with 10 classes), 3×32×32 input; convolutions with tdBN."""

    _widths = ((3, 128), (128, 256), (256, 512), (512, 1024), (1024, 512))

    def __init__(self, num_classes: int = 10, steps: int = 2, v_th: float = 0.4, tau: float = 0.25,
                 backend: str | None = None):
        super().__init__(num_classes, steps, v_th, tau, backend)
        # registration order = the reference's key order: conv0, bn0, ..., conv4, bn4, fc1..fc3, then the tdLayers
        for i, (cin, cout) in enumerate(self._widths):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, 3, 1, 1, bias=False))
            setattr(self, f"bn{i}", self._bn(cout))
        self.fc1 = nn.Linear(8 * 8 * 512, 1024)
        self.fc2 = nn.Linear(1024, 512)
        self.fc3 = nn.Linear(512, num_classes)
        for i in range(len(self._widths)):
            setattr(self, f"conv{i}_s", tdLayer(getattr(self, f"conv{i}"), getattr(self, f"bn{i}")))
        self.pool1_s = tdLayer(nn.AvgPool2d(2))
        self.pool2_s = tdLayer(nn.AvgPool2d(2))
        self.fc1_s = tdLayer(self.fc1)
        self.fc2_s = tdLayer(self.fc2)
        self.fc3_s = tdLayer(self.fc3)
        self.lifs = nn.ModuleList(self._lif() for _ in range(10))

    def forward_spikes(self, x_seq: torch.Tensor) -> torch.Tensor:
        lif = iter(self.lifs)
        x = next(lif)(self.conv0_s(x_seq))
        x = next(lif)(self.conv1_s(x))
        x = next(lif)(self.pool1_s(x))
        x = next(lif)(self.conv2_s(x))
        x = next(lif)(self.pool2_s(x))
        x = next(lif)(self.conv3_s(x))
        x = next(lif)(self.conv4_s(x))
        x = next(lif)(self.fc1_s(_flatten(x)))
        x = next(lif)(self.fc2_s(x))
        return next(lif)(self.fc3_s(x))

    def integer_graph(self) -> list:
        return [("synapse", "conv0", "bn0"), ("neuron", "lifs.0"),
                ("synapse", "conv1", "bn1"), ("neuron", "lifs.1"),
                ("pool", "pool1_s"), ("neuron", "lifs.2"),
                ("synapse", "conv2", "bn2"), ("neuron", "lifs.3"),
                ("pool", "pool2_s"), ("neuron", "lifs.4"),
                ("synapse", "conv3", "bn3"), ("neuron", "lifs.5"),
                ("synapse", "conv4", "bn4"), ("neuron", "lifs.6"),
                ("flatten",),
                ("synapse", "fc1"), ("neuron", "lifs.7"),
                ("synapse", "fc2"), ("neuron", "lifs.8"),
                ("synapse", "fc3"), ("neuron", "lifs.9")]


# ------------------------------------------------------------------------------------------------ ResNet18
_RESIDUAL_ALPHA = 1.0 / math.sqrt(2.0)


class BasicBlock(nn.Module):
    """STBP's BasicBlock: ``LIF(tdBN_{1/√2}(conv2(LIF(tdBN(conv1(x))))) + shortcut(x))``."""

    def __init__(self, net: STBPNet, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = net._bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = net._bn(planes, _RESIDUAL_ALPHA)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = tdLayer(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                      net._bn(planes, _RESIDUAL_ALPHA))
        self.conv1_s = tdLayer(self.conv1, self.bn1)
        self.conv2_s = tdLayer(self.conv2, self.bn2)
        self.identity = nn.Identity()  # the identity shortcut as a module (an integer gain after quantisation)
        self.lif1 = net._lif()
        self.lif2 = net._lif()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2_s(self.lif1(self.conv1_s(x)))
        shortcut = self.downsample(x) if self.downsample is not None else self.identity(x)
        return self.lif2(out + shortcut)

    def integer_graph(self, prefix: str) -> tuple:
        main = [("synapse", f"{prefix}conv1", f"{prefix}bn1"), ("neuron", f"{prefix}lif1"),
                ("synapse", f"{prefix}conv2", f"{prefix}bn2")]
        if self.downsample is not None:
            shortcut = [("synapse", f"{prefix}downsample.layer", f"{prefix}downsample.bn")]
        else:
            shortcut = ("identity", f"{prefix}identity")
        return ("block", main, shortcut, f"{prefix}lif2")


class STBPResNet18(STBPNet):
    """STBP's "ResNet18" (12,630,858 parameters with 10 classes), 3×32×32 input; blocks [3, 3, 2]."""

    def __init__(self, num_classes: int = 10, steps: int = 2, v_th: float = 0.4, tau: float = 0.25,
                 num_blocks: tuple[int, int, int] = (3, 3, 2), backend: str | None = None):
        super().__init__(num_classes, steps, v_th, tau, backend)
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = self._bn(64)
        self.conv1_s = tdLayer(self.conv1, self.bn1)
        self.in_planes = 64
        self.layer1 = self._make_layer(128, num_blocks[0], 1)
        self.layer2 = self._make_layer(256, num_blocks[1], 2)
        self.layer3 = self._make_layer(512, num_blocks[2], 2)
        self.avgpool = tdLayer(nn.AdaptiveAvgPool2d((1, 1)))
        self.fc1 = nn.Linear(512, 256)
        self.fc1_s = tdLayer(self.fc1)
        self.fc2 = nn.Linear(256, num_classes)
        self.fc2_s = tdLayer(self.fc2)
        self.lif_stem = self._lif()
        self.lif_fc1 = self._lif()
        self.lif_fc2 = self._lif()

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self, self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward_spikes(self, x_seq: torch.Tensor) -> torch.Tensor:
        x = self.lif_stem(self.conv1_s(x_seq))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = _flatten(self.avgpool(x))
        x = self.lif_fc1(self.fc1_s(x))
        return self.lif_fc2(self.fc2_s(x))

    def integer_graph(self) -> list:
        steps = [("synapse", "conv1", "bn1"), ("neuron", "lif_stem")]
        for stage in ("layer1", "layer2", "layer3"):
            for i, block in enumerate(getattr(self, stage)):
                steps.append(block.integer_graph(f"{stage}.{i}."))
        steps += [("pool", "avgpool"), ("flatten",), ("synapse", "fc1"), ("neuron", "lif_fc1"),
                  ("synapse", "fc2"), ("neuron", "lif_fc2")]
        return steps


# ------------------------------------------------------------------------------------------------ the zoo
_DOC_ARGS = """
    Args:
        pretrained: ``None``/``False`` keeps the initialisation; a path loads a local checkpoint (the
            reference's ``{"model": state_dict, "acc", "epoch"}`` or a bare state_dict, both aliases of every
            tensor, checked to agree); a state_dict is loaded as is. No weights are published.
        num_classes: outputs of the last layer.
        steps: time steps T of the direct coding (the reference's ``--timestep``, 2).
        v_th: firing threshold of every LIF and the V_th factor of tdBN (the reference's ``Vth``, 0.4).
        tau: retention factor of the membrane per step (the reference's ``tau``, 0.25).
        backend: neuron kernel (``None``: ``SPIKEFORGE_BACKEND`` or the fastest available).
"""


def _with_args_doc(fn):
    fn.__doc__ = (fn.__doc__ or "") + _DOC_ARGS
    return fn


@register_model
@_with_args_doc
def stbp_mnistnet(pretrained=None, **kwargs) -> MNISTNet:
    """STBP MNISTNet (606,685 parameters; published 97.96 % fp32 / 97.57 % 8-bit / 97.56 % 4-bit on MNIST, T=2).
    """
    return build_model_with_cfg(MNISTNet, "stbp_mnistnet", pretrained, **kwargs)


@register_model
@_with_args_doc
def stbp_cifarnet(pretrained=None, **kwargs) -> CifarNet:
    """STBP CifarNet (45,005,450 parameters; five 3x3 convolutions with tdBN and three fc layers, CIFAR-10).
    """
    return build_model_with_cfg(CifarNet, "stbp_cifarnet", pretrained, **kwargs)


@register_model
@_with_args_doc
def stbp_resnet18(pretrained=None, **kwargs) -> STBPResNet18:
    """STBP ResNet18 (12,630,858 parameters; STBP's own [3, 3, 2]-block variant, 84.40 % CIFAR-10 fp32, T=2).
    """
    return build_model_with_cfg(STBPResNet18, "stbp_resnet18", pretrained, **kwargs)
