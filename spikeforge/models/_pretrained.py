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

# Meta-SpikeFormer (BICLab/Spike-Driven-Transformer-V2, classification/): facts in reference_models.md, B4/B6.
# The one released checkpoint ("55M_kd.pth", metaspikformer_8_512 with kd at T=4) is on Google Drive, which has no
# stable download address, so url stays None and the file is loaded by path (pretrained="55M_kd.pth").
_METASPIKFORMER = dict(
    url=None, sha256=None, num_classes=1000, input_size=(3, 224, 224), crop_pct=224 / 256,
    interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD, dataset="imagenet-1k", license=None,
    paper_name="Spike-driven Transformer V2: Meta Spiking Neural Network Architecture Inspiring the Design of "
               "Next-generation Neuromorphic Chips (ICLR 2024)",
    paper_ids="arXiv:2404.03663", origin_url="https://github.com/BICLab/Spike-Driven-Transformer-V2",
)
_METASPIKFORMER_DRIVE = ("Weights: Google Drive folder https://drive.google.com/drive/folders/"
                         "12JcIRG8BF6JcgPsXIetSS14udtHXeSSx (55M_kd.pth: kd=True, T=4); download it by hand and "
                         "pass pretrained='55M_kd.pth'.")

_CFGS = [
    _snnmlp("snnmlp_t", "snnmlp_tiny_81.88.pt", 81.88),
    _snnmlp("snnmlp_s", "snnmlp_small_83.30.pt", 83.30),
    _snnmlp("snnmlp_b", "snnmlp_base_83.59.pt", 83.59),
    PretrainedCfg(architecture="stbp_mnistnet", classifier="fc2", top1=97.96, **_MNIST_NORM, **_STBP),
    PretrainedCfg(architecture="stbp_cifarnet", classifier="fc3", top1=None, **_CIFAR_NORM, **_STBP),
    PretrainedCfg(architecture="stbp_resnet18", classifier="fc2", top1=84.40, **_CIFAR_NORM, **_STBP),
    PretrainedCfg(architecture="metaspikformer_tiny", top1=None, notes="A small configuration for demos; no "
                  "weights.", **_METASPIKFORMER),
    PretrainedCfg(architecture="metaspikformer_8_384", top1=None, notes="No released weights.",
                  **_METASPIKFORMER),
    PretrainedCfg(architecture="metaspikformer_8_512", top1=80.0, notes="top-1 of the README (T=4 with "
                  "distillation). " + _METASPIKFORMER_DRIVE, **_METASPIKFORMER),
    PretrainedCfg(architecture="metaspikformer_8_768", top1=None, notes="No released weights.",
                  **_METASPIKFORMER),
]

# SpikingJelly's model zoo (spiking_resnet / sew_resnet / spiking_vgg): torchvision's ImageNet-1k V1 ANN files, which
# SpikingJelly's pretrained=True loads into the spiking networks (same state_dict keys). The top-1 in the notes is
# the ANN's (torchvision's weights metadata); the spiking network has no published accuracy with these weights
# (they are an initialisation for fine-tuning), so top1 stays None. No sha256 is recorded: torch.hub checks the
# hash prefix in the file name (check_hash=True) when spiking_resnet.load_torchvision_weights fetches the file.
_TV = "https://download.pytorch.org/models/"
_SJ_TORCHVISION = dict(
    sha256=None, num_classes=1000, input_size=(3, 224, 224), crop_pct=224 / 256, interpolation="bilinear",
    mean=IMAGENET_MEAN, std=IMAGENET_STD, dataset="imagenet-1k", top1=None, license=None,
    origin_url="https://github.com/fangwei123456/spikingjelly",
)
_SJ_RESNET_PAPER = dict(paper_name="Deep Residual Learning for Image Recognition (CVPR 2016)",
                        paper_ids="arXiv:1512.03385")
_SJ_SEW_PAPER = dict(paper_name="Deep Residual Learning in Spiking Neural Networks (NeurIPS 2021)",
                     paper_ids="arXiv:2102.04159")
_SJ_VGG_PAPER = dict(paper_name="Very Deep Convolutional Networks for Large-Scale Image Recognition (ICLR 2015)",
                     paper_ids="arXiv:1409.1556")
_SJ_RESNETS = {  # torchvision name: (file, ANN top-1)
    "resnet18": ("resnet18-f37072fd.pth", 69.758), "resnet34": ("resnet34-b627a593.pth", 73.314),
    "resnet50": ("resnet50-0676ba61.pth", 76.13), "resnet101": ("resnet101-63fe2227.pth", 77.374),
    "resnet152": ("resnet152-394f9c45.pth", 78.312),
    "resnext50_32x4d": ("resnext50_32x4d-7cdf4587.pth", 77.618),
    "resnext101_32x8d": ("resnext101_32x8d-8ba56ff5.pth", 79.312),
    "wide_resnet50_2": ("wide_resnet50_2-95faca4d.pth", 78.468),
    "wide_resnet101_2": ("wide_resnet101_2-32ee1156.pth", 78.848),
}
_SJ_VGGS = {
    "vgg11": ("vgg11-8a719046.pth", 69.02), "vgg13": ("vgg13-19584684.pth", 69.928),
    "vgg16": ("vgg16-397923af.pth", 71.592), "vgg19": ("vgg19-dcbb9e9d.pth", 72.376),
    "vgg11_bn": ("vgg11_bn-6002323d.pth", 70.37), "vgg13_bn": ("vgg13_bn-abd245e5.pth", 71.586),
    "vgg16_bn": ("vgg16_bn-6c64b313.pth", 73.36), "vgg19_bn": ("vgg19_bn-c79401a0.pth", 74.218),
}


def _sj_torchvision(name: str, tv_name: str, file_name: str, ann_top1: float, classifier: str,
                    paper: dict) -> PretrainedCfg:
    return PretrainedCfg(architecture=name, url=_TV + file_name, classifier=classifier,
                         notes=f"torchvision's {tv_name} ANN weights (ANN top-1 {ann_top1} %); as in SpikingJelly "
                               "they initialise the spiking network, whose accuracy with them is not published.",
                         **paper, **_SJ_TORCHVISION)


_SJ_CFGS = (
    [_sj_torchvision(f"spiking_{tv}", tv, f, top1, "fc", _SJ_RESNET_PAPER) for tv, (f, top1) in _SJ_RESNETS.items()]
    + [_sj_torchvision(f"sew_{tv}", tv, f, top1, "fc", _SJ_SEW_PAPER) for tv, (f, top1) in _SJ_RESNETS.items()]
    + [_sj_torchvision(f"spiking_{tv}", tv, f, top1, "classifier.6", _SJ_VGG_PAPER)
       for tv, (f, top1) in _SJ_VGGS.items()]
)

#: registered name -> its pretrained configuration (read-only).
PRETRAINED_CFGS: Mapping[str, PretrainedCfg] = MappingProxyType({cfg.architecture: cfg
                                                                 for cfg in _CFGS + _SJ_CFGS})
