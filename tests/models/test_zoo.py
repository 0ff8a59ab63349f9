"""Model zoo machinery: registry, weights loading, torch.hub, the ImageNet transform, classify and profile."""

from __future__ import annotations

import importlib.util
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import spikeforge.cli
from spikeforge.models import (
    SNNMLP,
    WeightsMismatchError,
    create_model,
    list_models,
    load_weights,
    register_model,
)
from spikeforge.models.transforms import imagenet_class_names, imagenet_eval_transform, load_image

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(__file__).resolve().parents[3] / "shared"
DOG = SHARED / "data" / "pytorch-hub" / "dog.jpg"
SMALL = dict(embed_dim=8, depths=(1, 1, 1, 1), num_classes=10)  # a 94k-parameter SNN-MLP, fast to build


def _small_state(seed=0):
    torch.manual_seed(seed)
    return create_model("snnmlp_t", **SMALL).state_dict()


def _assert_same_state(model, state):
    loaded = model.state_dict()
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


# ---------------------------------------------------------------------------------------------------------------
# registry


def test_registry_lists_and_builds():
    assert {"snnmlp_t", "snnmlp_s", "snnmlp_b"} <= set(list_models())
    assert list_models("snnmlp_*") == ["snnmlp_b", "snnmlp_s", "snnmlp_t"]
    assert list_models("nothing*") == []
    model = create_model("snnmlp_t", **SMALL)
    assert isinstance(model, SNNMLP) and model.pretrained_cfg["architecture"] == "snnmlp_t"
    with pytest.raises(ValueError, match="unknown model name 'mlp9000'.*snnmlp_t"):
        create_model("mlp9000")


def test_register_model_rejects_a_second_entry_with_the_same_name():
    def snnmlp_t(pretrained=None, **kwargs):  # same name as the real entry
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="already registered"):
        register_model(snnmlp_t)
    assert create_model("snnmlp_t", **SMALL).embed_dim == 8


# ---------------------------------------------------------------------------------------------------------------
# weights


@pytest.mark.parametrize("wrap", ["bare", "model", "module_prefix"])
def test_local_checkpoint_formats_load(tmp_path, wrap):
    state = _small_state(1)
    payload = {"bare": state, "model": {"model": state, "epoch": 300},
               "module_prefix": {f"module.{k}": v for k, v in state.items()}}[wrap]
    path = tmp_path / "weights.pt"
    torch.save(payload, path)
    torch.manual_seed(2)  # a different initialisation, so loading is visible
    _assert_same_state(create_model("snnmlp_t", pretrained=str(path), **SMALL), state)
    _assert_same_state(create_model("snnmlp_t", pretrained=path, **SMALL), state)


def test_wrong_checkpoint_gets_a_readable_diff(tmp_path):
    state = _small_state(1)
    state.pop("layers.0.blocks.0.lif_module.lif1.tau")
    state["head.weight"] = torch.zeros(7, 64)
    state["layers.0.blocks.0.attn.qkv.weight"] = torch.zeros(24, 8)
    path = tmp_path / "other.pt"
    torch.save(state, path)
    with pytest.raises(WeightsMismatchError) as info:
        create_model("snnmlp_t", pretrained=path, **SMALL)
    message = str(info.value)
    assert f"checkpoint {path} does not match model snnmlp_t" in message
    assert "missing from the checkpoint (1):\n    layers.0.blocks.0.lif_module.lif1.tau (1,)" in message
    assert "not in the model (1):\n    layers.0.blocks.0.attn.qkv.weight (24, 8)" in message
    assert "shape differs (1):\n    head.weight: checkpoint (7, 64) vs model (10, 64)" in message


def test_mismatch_diff_is_truncated_for_unrelated_files(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({f"layer{i}.weight": torch.zeros(2) for i in range(40)}, path)
    with pytest.raises(WeightsMismatchError, match=r"not in the model \(40\):[\s\S]*\.\.\. and 28 more"):
        create_model("snnmlp_t", pretrained=path, **SMALL)


@dataclass
class _TrainingConfig:  # stands in for the yacs config that training checkpoints carry
    lr: float = 1e-3


def test_checkpoint_with_python_objects_is_refused(tmp_path):
    path = tmp_path / "train_state.pt"
    torch.save({"model": _small_state(), "config": _TrainingConfig()}, path)
    with pytest.raises(ValueError, match=r"other than tensors[\s\S]*checkpoint\['model'\]"):
        create_model("snnmlp_t", pretrained=path, **SMALL)


def test_bad_pretrained_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrained"):
        create_model("snnmlp_t", pretrained=tmp_path / "absent.pt", **SMALL)
    with pytest.raises(TypeError, match="pretrained"):
        create_model("snnmlp_t", pretrained=3, **SMALL)
    not_a_state = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_a_state)
    with pytest.raises(ValueError, match="state_dict"):
        create_model("snnmlp_t", pretrained=not_a_state, **SMALL)
    with pytest.raises(ValueError, match="no official weights"):
        load_weights(torch.nn.Linear(2, 2), True)


@pytest.fixture
def hub_dir(tmp_path):
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


def test_pretrained_true_offline_error(hub_dir, monkeypatch):
    requested = []

    def offline(url, dst, *args, **kwargs):
        requested.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError) as info:
        create_model("snnmlp_s", pretrained=True)
    url = "https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/snnmlp/snnmlp_small_83.30.pt"
    assert requested == [url]
    message = str(info.value)
    assert url in message and "offline" in message and "pretrained='/path/to/snnmlp_small_83.30.pt'" in message
    assert str(hub_dir / "checkpoints" / "snnmlp_small_83.30.pt") in message


def test_pretrained_true_uses_the_hub_cache(hub_dir, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a cached file must not be downloaded again")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    state = _small_state(4)
    (hub_dir / "checkpoints").mkdir(parents=True)
    torch.save(state, hub_dir / "checkpoints" / "snnmlp_tiny_81.88.pt")
    _assert_same_state(create_model("snnmlp_t", pretrained=True, **SMALL), state)


# ---------------------------------------------------------------------------------------------------------------
# torch.hub


def test_torch_hub_local_checkout(tmp_path):
    # torch.hub.list/help only accept GitHub repositories, so read the hubconf module directly for those
    spec = importlib.util.spec_from_file_location("spikeforge_hubconf", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    assert hubconf.dependencies == ["torch", "numpy"]
    for name in ("snnmlp_t", "snnmlp_s", "snnmlp_b"):
        assert "group LIF size 4" in getattr(hubconf, name).__doc__
    state = _small_state(5)
    path = tmp_path / "hub_weights.pt"
    torch.save({"model": state}, path)
    model = torch.hub.load(str(REPO), "snnmlp_t", source="local", pretrained=str(path), **SMALL)
    _assert_same_state(model, state)
    assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 10)


# ---------------------------------------------------------------------------------------------------------------
# ImageNet transform


def _pil():
    return pytest.importorskip("PIL.Image", reason="Pillow is needed for the image transform tests")


def test_pil_transform_crop_and_normalisation_by_hand():
    Image = _pil()
    import numpy as np

    # short side already 256 -> no resampling; the crop starts at round((300-224)/2)=38, round((256-224)/2)=16
    gen = np.random.default_rng(0)
    pixels = gen.integers(0, 256, size=(256, 300, 3), dtype=np.uint8)
    out = imagenet_eval_transform(224, backend="pil")(Image.fromarray(pixels))
    window = torch.from_numpy(pixels[16:240, 38:262].astype(np.float32) / 255).permute(2, 0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    torch.testing.assert_close(out, (window - mean) / std, atol=1e-6, rtol=0)


def test_pil_transform_resizes_the_short_side():
    Image = _pil()
    # a constant image stays constant through bicubic resizing, whatever the aspect ratio
    for size in [(640, 480), (123, 777)]:
        out = imagenet_eval_transform(160, backend="pil")(Image.new("RGB", size, (255, 0, 128)))
        assert out.shape == (3, 160, 160)
        expected = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor([0.485, 0.456, 0.406])) / \
            torch.tensor([0.229, 0.224, 0.225])
        torch.testing.assert_close(out, expected.view(3, 1, 1).expand(3, 160, 160), atol=1e-6, rtol=0)


def test_pil_transform_matches_torchvision_values_on_dog():
    _pil()
    if not DOG.is_file():
        pytest.skip(f"{DOG} not found (the shared data directory is missing)")
    out = imagenet_eval_transform(224, backend="pil")(load_image(DOG))
    # Values produced by torchvision 0.29.1 (Resize(256, BICUBIC), CenterCrop(224), ToTensor, Normalize)
    # with Pillow 13 on this image.
    torch.testing.assert_close(out.double().mean((1, 2)),
                               torch.tensor([0.13798268, 0.38244888, 0.43043745], dtype=torch.float64),
                               atol=1e-6, rtol=0)
    expected = {(0, 0): [-1.9295316934585571, -1.8256301879882812, -1.6127233505249023],
                (17, 200): [-1.7240346670150757, -1.6855741739273071, -1.508148193359375],
                (111, 112): [2.1975338459014893, 2.3760502338409424, 2.5877127647399902],
                (223, 223): [-1.2445416450500488, -0.7226889729499817, -1.2815686464309692],
                (150, 31): [0.5878071784973145, 0.7128852605819702, 0.8796516060829163]}
    for (y, x), values in expected.items():
        torch.testing.assert_close(out[:, y, x], torch.tensor(values), atol=1e-6, rtol=0)


def test_pil_transform_equals_torchvision_when_installed():
    Image = _pil()
    pytest.importorskip("torchvision", reason="torchvision is optional; the PIL path is checked without it")
    image = Image.effect_mandelbrot((333, 517), (-2.0, -1.5, 1.0, 1.5), 60).convert("RGB")
    for interpolation in ("bicubic", "bilinear"):
        a = imagenet_eval_transform(224, interpolation=interpolation, backend="pil")(image)
        b = imagenet_eval_transform(224, interpolation=interpolation, backend="torchvision")(image)
        assert torch.equal(a, b)


def test_transform_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="img_size"):
        imagenet_eval_transform(0)
    with pytest.raises(ValueError, match="interpolation"):
        imagenet_eval_transform(224, interpolation="nearest")
    with pytest.raises(ValueError, match="backend"):
        imagenet_eval_transform(224, backend="opencv")
    with pytest.raises(FileNotFoundError, match="image file"):
        load_image(tmp_path / "missing.jpg")


def test_class_names_are_shipped():
    names = imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[207] == "golden retriever"


# ---------------------------------------------------------------------------------------------------------------
# command line


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("snnmlp_t")
    path = tmp_path_factory.mktemp("zoo") / "snnmlp_t_random.pt"
    torch.save(model.state_dict(), path)
    return path, model.eval()


def test_classify_prints_top5_of_the_dog(tiny_weights, capsys):
    _pil()
    if not DOG.is_file():
        pytest.skip(f"{DOG} not found (the shared data directory is missing)")
    path, model = tiny_weights
    assert spikeforge.cli.main(["classify", str(DOG), "--model", "snnmlp_t", "--weights", str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(str(DOG)) and "snnmlp_t" in lines[0]
    ranked = lines[1:]
    assert len(ranked) == 5
    names = imagenet_class_names()
    with torch.no_grad():
        probs = model(imagenet_eval_transform(224)(load_image(DOG))[None]).softmax(-1)[0]
    top_p, top_i = probs.topk(5)
    for rank, (line, p, i) in enumerate(zip(ranked, top_p.tolist(), top_i.tolist()), start=1):
        label, prob = line.strip().removeprefix(f"{rank}.").rsplit(None, 1)
        assert label.strip() == names[i]
        assert float(prob) == pytest.approx(p, abs=1e-4)


def test_classify_refuses_without_weights(capsys):
    assert spikeforge.cli.main(["classify", "any.jpg", "--model", "snnmlp_t"]) == 2
    err = capsys.readouterr().err
    assert "no weights given" in err and "--random-weights" in err


def test_classify_reports_bad_inputs(tiny_weights, tmp_path, capsys):
    path, _ = tiny_weights
    assert spikeforge.cli.main(["classify", str(tmp_path / "nope.jpg"), "--weights", str(path)]) == 2
    assert "IMAGE" in capsys.readouterr().err
    assert spikeforge.cli.main(["classify", "x.jpg", "--model", "vgg", "--random-weights"]) == 2
    assert "unknown --model 'vgg'" in capsys.readouterr().err
    small = tmp_path / "small.pt"
    torch.save(_small_state(), small)
    assert spikeforge.cli.main(["classify", "x.jpg", "--weights", str(small)]) == 2
    assert "does not match model snnmlp_t" in capsys.readouterr().err


def test_profile_command(capsys):
    assert spikeforge.cli.main(["profile", "--model", "snnmlp_b"]) == 0
    out = capsys.readouterr().out
    assert "params: 87,897,288" in out and "(15.154 G)" in out and "3x224x224" in out
    assert spikeforge.cli.main(["profile", "--model", "snnmlp_t", "--img-size", "100"]) == 2
    assert "--img-size 100" in capsys.readouterr().err
