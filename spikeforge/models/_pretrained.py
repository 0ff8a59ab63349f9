"""Pretrained configurations of the zoo: one frozen :class:`PretrainedCfg` per registered variant, kept as data.

A configuration says where the released weights live (``url``, the cached ``file_name``, their ``sha256`` when
it is known), how the weights expect their input (``input_size``, ``mean``/``std``, ``crop_pct``,
``interpolation``), what they classify (``num_classes``, the ``classifier`` module name) and where they come from
(``license``, the paper, the published ``top1``). :func:`~spikeforge.models.build_model_with_cfg` attaches it to
every model it builds as ``model.pretrained_cfg``.

Facts only: a hash is recorded after somebody computed it from the released file, never guessed. ``None`` means
"not known", and the weights are then loaded without a hash check.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlparse

__all__ = ["PretrainedCfg", "PRETRAINED_CFGS", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_INTERPOLATIONS = ("bicubic", "bilinear")


@dataclass(frozen=True)
class PretrainedCfg:
    """How one variant's released weights are fetched, fed and credited.

    Attributes:
        architecture: the registered model name this configuration belongs to.
        url: where ``pretrained=True`` downloads the weights; ``None`` if none are published.
        file_name: name of the cached copy under ``<torch.hub dir>/checkpoints`` (default: the url's last part).
        sha256: hex digest of the released file, checked after download and before loading; ``None`` if unknown.
        num_classes: outputs of the released classifier.
        classifier: name of the classifier module; its weights are skipped when the official weights are loaded
            into a model built with another ``num_classes``.
        input_size: ``(C, H, W)`` the weights were evaluated at.
        crop_pct: centre-crop fraction of the evaluation transform (224 of a 256 resize is 0.875).
        interpolation: resize filter of the evaluation transform, ``"bicubic"`` or ``"bilinear"``.
        mean, std: per-channel input normalisation.
        dataset: what the weights were trained on.
        top1: published top-1 accuracy in percent on that dataset's validation set; ``None`` if none is published.
        license: licence the weights are released under, as stated by their authors.
        paper_name, paper_ids: the paper (title, and identifiers such as ``"arXiv:2203.14679"``).
        origin_url: the repository the weights come from.
        notes: anything else a user should know about these weights.

    For code written against a dict-valued ``pretrained_cfg``, ``cfg["mean"]`` and ``cfg.get("mean", default)``
    read fields as well.
    """

    architecture: str
    url: str | None = None
    file_name: str | None = None
    sha256: str | None = None
    num_classes: int = 1000
    classifier: str | None = "head"
    input_size: tuple[int, int, int] = (3, 224, 224)
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    dataset: str = "imagenet-1k"
    top1: float | None = None
    license: str | None = None
    paper_name: str | None = None
    paper_ids: str | None = None
    origin_url: str | None = None
    notes: str = ""

    def __post_init__(self):
        def set_field(name, value):  # the dataclass is frozen; fields are normalised once, here
            object.__setattr__(self, name, value)

        if self.file_name is None and self.url is not None:
            set_field("file_name", os.path.basename(urlparse(self.url).path))
        if self.sha256 is not None:
            if not isinstance(self.sha256, str) or not _SHA256.fullmatch(self.sha256.lower()):
                raise ValueError(f"{self.architecture}: sha256 must be 64 hex digits or None, got {self.sha256!r}")
            set_field("sha256", self.sha256.lower())
        set_field("input_size", tuple(int(s) for s in self.input_size))
        set_field("mean", tuple(float(m) for m in self.mean))
        set_field("std", tuple(float(s) for s in self.std))
        if len(self.input_size) != 3 or min(self.input_size) < 1:
            raise ValueError(f"{self.architecture}: input_size must be (C, H, W), got {self.input_size!r}")
        if not len(self.mean) == len(self.std) == self.input_size[0]:
            raise ValueError(f"{self.architecture}: mean and std need one value per input channel "
                             f"({self.input_size[0]}), got {self.mean!r} and {self.std!r}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"{self.architecture}: crop_pct must be in (0, 1], got {self.crop_pct!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"{self.architecture}: interpolation must be one of {_INTERPOLATIONS}, "
                             f"got {self.interpolation!r}")

    @property
    def has_weights(self) -> bool:
        """Whether ``pretrained=True`` has something to download."""
        return self.url is not None

    def replace(self, **changes) -> PretrainedCfg:
        """A copy with some fields changed (``pretrained_cfg_overlay`` uses this); unknown fields are refused."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"PretrainedCfg has no field(s) {', '.join(sorted(unknown))}")
        if "url" in changes and "file_name" not in changes:
            changes["file_name"] = None  # derive it from the new url
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __getitem__(self, key: str):
        if not isinstance(key, str) or key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key) if isinstance(key, str) and key in self.__dataclass_fields__ else default


# ---------------------------------------------------------------------------------------------------------------
# SNN-MLP (huawei-noah/Efficient-AI-Backbones, snnmlp_pytorch): facts in ../shared/specs/reference_models.md, A4/A6.

_SNNMLP_RELEASE = "https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/snnmlp/"
_SNNMLP = dict(
    num_classes=1000, input_size=(3, 224, 224), crop_pct=224 / 256, interpolation="bicubic",
    mean=IMAGENET_MEAN, std=IMAGENET_STD, dataset="imagenet-1k",
    license="apache-2.0 (snnmlp_pytorch/License.txt; the release states no separate licence for the weights)",
    paper_name="Brain-inspired Multilayer Perceptron with Spiking Neurons (CVPR 2022)",
    paper_ids="arXiv:2203.14679", origin_url="https://github.com/huawei-noah/Efficient-AI-Backbones",
)
_SNNMLP_NOTE = ("top-1 as in the release file name; the reference README rounds it to {:.1f}. Evaluated with the "
                "group LIF on (lif=4), which the reference's own torch.hub entries switch off.")


def _snnmlp(name: str, file_name: str, top1: float) -> PretrainedCfg:
    return PretrainedCfg(architecture=name, url=_SNNMLP_RELEASE + file_name, sha256=None, top1=top1,
                         notes=_SNNMLP_NOTE.format(top1), **_SNNMLP)


# STBP-train-and-compression (ZLkanyo009): facts in ../shared/specs/reference_models.md, C4/C6. No weights are
# hosted (checkpoints stay in the git-ignored ./ckpt/); top-1 is the README's fp32 figure at T=2, None if none.
_STBP = dict(
    url=None, sha256=None, num_classes=10, crop_pct=1.0, interpolation="bilinear", license=None,
    paper_name="Spatio-Temporal Backpropagation for Training High-performance Spiking Neural Networks (STBP); "
               "tdBN: Going Deeper With Directly-Trained Larger Spiking Neural Networks (AAAI 2021)",
    paper_ids="arXiv:1706.02609, arXiv:2011.05280",
    origin_url="https://github.com/ZLkanyo009/STBP-train-and-compression",
    notes="Published figures are best-epoch test accuracies of older code (Adam, Vth 0.2); see the facts file, C4.",
)
_MNIST_NORM = dict(input_size=(1, 28, 28), mean=(0.1307,), std=(0.3081,), dataset="mnist")
_CIFAR_NORM = dict(input_size=(3, 32, 32), mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.243, 0.261),
                   dataset="cifar10")

_CFGS = [
    _snnmlp("snnmlp_t", "snnmlp_tiny_81.88.pt", 81.88),
    _snnmlp("snnmlp_s", "snnmlp_small_83.30.pt", 83.30),
    _snnmlp("snnmlp_b", "snnmlp_base_83.59.pt", 83.59),
    PretrainedCfg(architecture="stbp_mnistnet", classifier="fc2", top1=97.96, **_MNIST_NORM, **_STBP),
    PretrainedCfg(architecture="stbp_cifarnet", classifier="fc3", top1=None, **_CIFAR_NORM, **_STBP),
    PretrainedCfg(architecture="stbp_resnet18", classifier="fc2", top1=84.40, **_CIFAR_NORM, **_STBP),
]

#: registered name -> its pretrained configuration (read-only).
PRETRAINED_CFGS: Mapping[str, PretrainedCfg] = MappingProxyType({cfg.architecture: cfg for cfg in _CFGS})
