"""build_model_with_cfg: the cfg it attaches, the weights it loads (state_dict, file, download with sha256) and
the differences it reports; create_model's timm-like keyword arguments."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from spikeforge.models import (
    PretrainedCfg,
    WeightsHashError,
    WeightsMismatchError,
    build_model_with_cfg,
    create_model,
)

URL = "https://example.org/releases/toy-5cls.pt"
SMALL = dict(embed_dim=8, depths=(1, 1, 1, 1), num_classes=10)


class Toy(nn.Module):
    def __init__(self, num_classes: int = 5, width: int = 4):
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Linear(3, width)
        self.norm = nn.BatchNorm1d(width)
        self.head = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()


def _cfg(**changes) -> PretrainedCfg:
    return PretrainedCfg("toy", url=URL, num_classes=5, **changes)


def _state(seed: int, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return Toy(**kwargs).state_dict()


def _build(pretrained=None, cfg=None, **kwargs) -> Toy:
    return build_model_with_cfg(Toy, "toy", pretrained, pretrained_cfg=cfg or _cfg(), **kwargs)


def _same(model: nn.Module, state, keys=None) -> bool:
    loaded = model.state_dict()
    return all(torch.equal(loaded[k], state[k]) for k in (keys or state))


@pytest.fixture
def hub_dir(tmp_path):
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


@pytest.fixture
def fake_release(hub_dir, monkeypatch):
    """Serve ``release["file"]`` (bytes) at any url through a mocked torch.hub download; counts the requests."""
    release = {"file": b"", "requests": []}

    def download(url, dst, *args, **kwargs):
        release["requests"].append(url)
        with open(dst, "wb") as f:
            f.write(release["file"])

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    return release


def _serialised(state, tmp_path) -> bytes:
    path = tmp_path / "serialised.pt"
    torch.save(state, path)
    return path.read_bytes()


# ---------------------------------------------------------------------------------------------------------------
# configuration


def test_cfg_is_attached_and_resolved():
    model = _build(width=6)
    assert isinstance(model, Toy) and model.body.out_features == 6
    assert model.pretrained_cfg == _cfg()
    from_mapping = build_model_with_cfg(Toy, "toy", pretrained_cfg={"num_classes": 5, "crop_pct": 1.0})
    assert from_mapping.pretrained_cfg.architecture == "toy" and from_mapping.pretrained_cfg.crop_pct == 1.0
    overlaid = _build(pretrained_cfg_overlay={"interpolation": "bilinear"})
    assert overlaid.pretrained_cfg.interpolation == "bilinear" and overlaid.pretrained_cfg.url == URL
    with pytest.raises(KeyError, match="no pretrained configuration for 'toy'"):
        build_model_with_cfg(Toy, "toy")
    with pytest.raises(TypeError, match="pretrained_cfg"):
        build_model_with_cfg(Toy, "toy", pretrained_cfg="imagenet")


# ---------------------------------------------------------------------------------------------------------------
# weights from a state_dict or a file


def test_state_dict_and_file_load_with_weights_only(tmp_path, monkeypatch):
    state = _state(1)
    assert _same(_build(state), state)
    assert _same(_build({"model": {f"module.{k}": v for k, v in state.items()}}), state)

    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    path = tmp_path / "toy.pt"
    torch.save(state, path)
    assert _same(_build(path), state) and _same(_build(str(path)), state)
    assert calls == [True, True]


def test_wrong_state_dict_reports_missing_unexpected_and_reshaped_keys():
    state = _state(2)
    del state["norm.running_var"]
    state["body.weight"] = torch.zeros(4, 7)
    state["extra.scale"] = torch.ones(2)
    with pytest.raises(WeightsMismatchError) as info:
        _build(state)
    message = str(info.value)
    assert message.startswith("the given state_dict does not match model toy:\n")
    assert "  missing from the checkpoint (1):\n    norm.running_var (4,)" in message
    assert "  not in the model (1):\n    extra.scale (2,)" in message
    assert "  shape differs (1):\n    body.weight: checkpoint (4, 7) vs model (4, 3)" in message
    with pytest.raises(ValueError, match="state_dict"):
        _build({"body.weight": [1.0, 2.0]})


# ---------------------------------------------------------------------------------------------------------------
# official weights: download, cache, sha256


def test_download_is_cached_and_hash_checked(fake_release, hub_dir, tmp_path):
    state = _state(3)
    fake_release["file"] = _serialised(state, tmp_path)
    digest = hashlib.sha256(fake_release["file"]).hexdigest()
    assert _same(_build(True, _cfg(sha256=digest)), state)
    assert (hub_dir / "checkpoints" / "toy-5cls.pt").is_file()
    assert _same(_build(True, _cfg(sha256=digest)), state)  # from the cache
    assert _same(_build(True, _cfg(sha256=None)), state)  # unknown hash: loaded unchecked
    assert fake_release["requests"] == [URL]


def test_corrupted_download_is_refused_and_deleted(fake_release, hub_dir, tmp_path):
    good = _serialised(_state(4), tmp_path)
    digest = hashlib.sha256(good).hexdigest()
    fake_release["file"] = good[:-64] + bytes(64)  # damaged in transit
    with pytest.raises(WeightsHashError) as info:
        _build(True, _cfg(sha256=digest))
    message = str(info.value)
    assert f"the file downloaded from {URL}" in message and digest in message and "deleted" in message
    assert hashlib.sha256(fake_release["file"]).hexdigest() in message
    assert not (hub_dir / "checkpoints" / "toy-5cls.pt").exists()
    # the next attempt downloads again and, with the intact file, succeeds
    fake_release["file"] = good
    assert _same(_build(True, _cfg(sha256=digest)), _state(4))
    assert fake_release["requests"] == [URL, URL]


def test_corrupted_cached_file_is_refused(fake_release, hub_dir, tmp_path):
    good = _serialised(_state(5), tmp_path)
    cached = hub_dir / "checkpoints" / "toy-5cls.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(_serialised(_state(6), tmp_path))  # some other file under the release's name
    with pytest.raises(WeightsHashError, match=rf"cached copy of {URL}[\s\S]*Delete {cached}"):
        _build(True, _cfg(sha256=hashlib.sha256(good).hexdigest()))
    assert fake_release["requests"] == [] and cached.is_file()


def test_snnmlp_refuses_a_corrupted_download(fake_release, hub_dir, tmp_path):
    # the real entry point, its release url, and a sha256 given through pretrained_cfg_overlay
    torch.manual_seed(0)
    fake_release["file"] = _serialised(create_model("snnmlp_t", **SMALL).state_dict(), tmp_path)
    expected = hashlib.sha256(b"the released file").hexdigest()
    with pytest.raises(WeightsHashError, match=expected):
        create_model("snnmlp_t", pretrained=True, pretrained_cfg_overlay={"sha256": expected}, **SMALL)
    assert fake_release["requests"] == [
        "https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/snnmlp/snnmlp_tiny_81.88.pt"]
    assert not (hub_dir / "checkpoints" / "snnmlp_tiny_81.88.pt").exists()


def test_no_url_means_no_official_weights():
    with pytest.raises(ValueError, match="no official weights are published for toy"):
        _build(True, PretrainedCfg("toy", url=None, num_classes=5))


# ---------------------------------------------------------------------------------------------------------------
# official weights into a model with another number of classes


@pytest.mark.parametrize("num_classes", [3, 0])
def test_official_weights_with_a_new_classifier(fake_release, tmp_path, num_classes):
    official = _state(7)  # 5 classes, as the cfg says
    fake_release["file"] = _serialised(official, tmp_path)
    torch.manual_seed(8)
    fresh_head = Toy(num_classes=num_classes).head.state_dict()
    torch.manual_seed(8)
    model = _build(True, num_classes=num_classes)
    body = [k for k in official if not k.startswith("head.")]
    assert _same(model, official, body)
    assert all(torch.equal(v, model.head.state_dict()[k]) for k, v in fresh_head.items())  # initialisation kept
    assert model.num_classes == num_classes and model.pretrained_cfg.num_classes == 5


def test_new_classifier_does_not_excuse_other_differences(fake_release, tmp_path):
    official = _state(9, width=6)  # a different body
    fake_release["file"] = _serialised(official, tmp_path)
    with pytest.raises(WeightsMismatchError, match=r"shape differs \(6\)") as info:
        _build(True, num_classes=3)
    assert "head." not in str(info.value)
    # a local file is taken as the model's own: its classifier must fit
    path = tmp_path / "five.pt"
    torch.save(_state(10), path)
    with pytest.raises(WeightsMismatchError, match=r"head.weight: checkpoint \(5, 4\) vs model \(3, 4\)"):
        _build(path, num_classes=3)


# ---------------------------------------------------------------------------------------------------------------
# create_model


def test_create_model_keywords():
    model = create_model("snnmlp_t", drop_path_rate=None, num_classes=7, embed_dim=8, depths=(1, 1, 1, 1))
    assert model.head.out_features == 7 and model.num_classes == 7
    assert model.layers[3].blocks[0].drop_path.p == pytest.approx(0.2)  # None: the variant's own rate
    state = model.state_dict()
    assert _same(create_model("snnmlp_t", pretrained=state, num_classes=7, embed_dim=8, depths=(1, 1, 1, 1)), state)
