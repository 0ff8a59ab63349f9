"""Pretrained configurations: the SNN-MLP facts, the dataclass's validation, overlays, attachment to models."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from spikeforge.models import PRETRAINED_CFGS, PretrainedCfg, create_model, get_pretrained_cfg

SMALL = dict(embed_dim=8, depths=(1, 1, 1, 1), num_classes=10)
RELEASE = "https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/snnmlp/"


@pytest.mark.parametrize("name, file_name, top1", [
    ("snnmlp_t", "snnmlp_tiny_81.88.pt", 81.88),
    ("snnmlp_s", "snnmlp_small_83.30.pt", 83.30),
    ("snnmlp_b", "snnmlp_base_83.59.pt", 83.59),
])
def test_snnmlp_pretrained_cfgs(name, file_name, top1):
    # ../shared/specs/reference_models.md A4/A6: ImageNet-1k at 224, mean/std of torchvision, resize 256 bicubic
    # then crop 224, the release files on GitHub, top-1 in the file names.
    cfg = get_pretrained_cfg(name)
    assert cfg is PRETRAINED_CFGS[name] and cfg.architecture == name
    assert cfg.url == RELEASE + file_name and cfg.file_name == file_name and cfg.has_weights
    assert cfg.sha256 is None  # nobody has hashed the release files yet; no invented digest
    assert cfg.mean == (0.485, 0.456, 0.406) and cfg.std == (0.229, 0.224, 0.225)
    assert cfg.input_size == (3, 224, 224) and cfg.num_classes == 1000 and cfg.classifier == "head"
    assert cfg.crop_pct == 224 / 256 and cfg.interpolation == "bicubic"
    assert cfg.top1 == top1 and cfg.dataset == "imagenet-1k"
    assert cfg.paper_ids == "arXiv:2203.14679" and cfg.license.startswith("apache-2.0")


def test_models_carry_their_cfg():
    with torch.device("meta"):
        for name in ("snnmlp_t", "snnmlp_s", "snnmlp_b"):
            assert create_model(name).pretrained_cfg is PRETRAINED_CFGS[name]
    # the cfg describes the released weights, not the model as built
    model = create_model("snnmlp_t", **SMALL)
    assert model.num_classes == 10 and model.pretrained_cfg.num_classes == 1000
    # dict-style reads, for code written against a dict-valued pretrained_cfg
    assert model.pretrained_cfg["architecture"] == "snnmlp_t" and model.pretrained_cfg.get("crop_pct") == 0.875
    assert model.pretrained_cfg.get("no_such_field", "default") == "default"
    with pytest.raises(KeyError):
        model.pretrained_cfg["no_such_field"]


def test_pretrained_cfg_overlay():
    mirror = "https://mirror.example.org/weights/tiny.pt"
    model = create_model("snnmlp_t", pretrained_cfg_overlay={"url": mirror, "crop_pct": 1.0}, **SMALL)
    cfg = model.pretrained_cfg
    assert cfg.url == mirror and cfg.file_name == "tiny.pt" and cfg.crop_pct == 1.0
    assert cfg.mean == PRETRAINED_CFGS["snnmlp_t"].mean
    assert PRETRAINED_CFGS["snnmlp_t"].crop_pct == 0.875  # the registered data is untouched
    with pytest.raises(TypeError, match="no field"):
        create_model("snnmlp_t", pretrained_cfg_overlay={"mena": (0.5, 0.5, 0.5)}, **SMALL)


def test_pretrained_cfg_is_frozen_and_validated():
    cfg = PRETRAINED_CFGS["snnmlp_t"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.url = "https://elsewhere"
    digest = "AB" * 32
    assert cfg.replace(sha256=digest).sha256 == digest.lower()
    assert cfg.replace(file_name="mine.pt", url="https://x.org/a.pt").file_name == "mine.pt"
    assert cfg.to_dict()["input_size"] == (3, 224, 224)
    for bad in (dict(sha256="1234"), dict(sha256="g" * 64), dict(input_size=(224, 224)),
                dict(mean=(0.5, 0.5)), dict(crop_pct=0.0), dict(crop_pct=1.5), dict(interpolation="nearest")):
        with pytest.raises(ValueError):
            PretrainedCfg("toy", **bad)
    assert PretrainedCfg("toy").has_weights is False and PretrainedCfg("toy").file_name is None
