"""Meta-SpikeFormer: the reference vectors, keys and parameter counts, kd heads, reparameterisation, the backbone,
and loading the released checkpoint format safely.

The vectors and key lists live in ``../shared/specs`` (skipped when absent); everything else is checked against
hand-computed traces and float64 identities that need no files.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from spikeforge.errors import UsageError, UserError
from spikeforge.models import MetaSpikeFormer, MetaSpikeFormerFeatures, create_model, list_models
from spikeforge.models._weights import WeightsFileError, WeightsMismatchError
from spikeforge.models.layers import BNAndPadLayer, RepConv
from spikeforge.models.metaspikformer import MultiStepLIF
from spikeforge.spec import NeuronKind

SHARED = Path(__file__).resolve().parents[3] / "shared" / "specs"
# the shared specs beside the checkout, else a copy in tests/data (sha256 fd304fc5...)
VECTORS = next((p for p in (SHARED / "vectors" / "metaspikformer_public.pt",
                            Path(__file__).resolve().parents[1] / "data" / "metaspikformer_public.pt")
                if p.is_file()), SHARED / "vectors" / "metaspikformer_public.pt")
KEY_LISTS = {("metaspikformer_8_512", False): SHARED / "checkpoints" / "metaspikformer_8_512.txt",
             ("metaspikformer_8_384", True): SHARED / "checkpoints" / "metaspikformer_8_384_kd.txt"}
SMALL = dict(embed_dim=[8, 16, 32, 40], num_classes=10)  # the vectors' widths


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors; as the vectors were made
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vectors():
    if not VECTORS.is_file():
        pytest.skip(f"reference vectors not found at {VECTORS} (the shared specs directory is missing)")
    return torch.load(VECTORS, weights_only=True)


def _vector_model(vectors, **overrides) -> MetaSpikeFormer:
    config = {k: v for k, v in vectors["config"].items() if k != "norm_layer"}  # stored as a description
    config.update(overrides)
    model = MetaSpikeFormer(**config)
    state = dict(vectors["state_dict"])
    if config.get("kd"):
        state["head_kd.weight"] = state["head.weight"].clone()
        state["head_kd.bias"] = state["head.bias"].clone()
    model.load_state_dict(state)
    return model.eval()


def _run_recording(model, x):
    """Output, per-LIF spike counts (forward order) and the final LIF's input."""
    counts, pooled, hooks = {}, {}, []
    for name, module in model.named_modules():
        if isinstance(module, MultiStepLIF):
            hooks.append(module.register_forward_hook(
                lambda m, i, o, name=name: counts.__setitem__(name, int(o.sum().item()))))
    if hasattr(model, "lif"):
        hooks.append(model.lif.register_forward_hook(lambda m, i, o: pooled.__setitem__("x", i[0].detach())))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return out, counts, pooled.get("x")


# ---------------------------------------------------------------------------------------------------------------
# the neuron and the blocks, by hand (no files)


def test_neuron_is_the_reference_lif_by_hand():
    lif = MultiStepLIF()
    spec = lif.spec
    assert spec.kind is NeuronKind.LIF and spec.leak.value == 2.0 and spec.v_reset == 0.0
    assert spec.detach_reset and spec.decay_input and spec.fire_on_tie and spec.v_threshold == 1.0
    assert spec.surrogate.alpha == 4.0
    # H = V + (X - V)/2; S = [H >= 1]; V = H (1 - S):  X = 2 -> H 1 (tie fires) | 1 -> .5 | 1 -> .75 | 3 -> 1.875
    x = torch.tensor([2.0, 1.0, 1.0, 3.0]).view(4, 1)
    assert lif(x).view(-1).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert lif(x).view(-1).tolist() == [1.0, 0.0, 0.0, 1.0]  # every call starts from rest
    attn = MultiStepLIF(v_threshold=0.5)
    assert attn(torch.tensor([[1.0, 0.999]])).tolist() == [[1.0, 0.0]]  # T=1 fires iff X >= 2 V_th
    assert sum(isinstance(m, MultiStepLIF) for m in MetaSpikeFormer(**SMALL).modules()) == 77


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g, dtype=m.weight.dtype) * 1.5 + 0.5
            m.bias.data = torch.rand(n, generator=g, dtype=m.weight.dtype) - 0.5
            m.running_mean = torch.randn(n, generator=g, dtype=m.weight.dtype)
            m.running_var = torch.rand(n, generator=g, dtype=m.weight.dtype) + 0.5


def test_bn_pad_border_is_bn_of_zero():
    layer = BNAndPadLayer(pad_pixels=1, num_features=3).eval()
    _randomise_bn(layer)
    x = torch.randn(2, 3, 4, 5)
    y = layer(x)
    assert y.shape == (2, 3, 6, 7)
    torch.testing.assert_close(y[:, :, 1:-1, 1:-1], layer.bn(x), rtol=0, atol=0)
    zero = layer.bn(torch.zeros(1, 3, 1, 1)).view(3)
    for border in (y[:, :, 0], y[:, :, -1], y[:, :, :, 0], y[:, :, :, -1]):
        torch.testing.assert_close(border, zero.view(1, 3, 1).expand_as(border), rtol=1e-6, atol=1e-6)
    # what makes the fold possible: BN-pad(BN(conv1x1(x))) == BN(conv1x1(zero-pad(x)))
    conv = nn.Conv2d(3, 3, 1, bias=False)
    torch.testing.assert_close(layer(conv(x)), layer.bn(conv(nn.functional.pad(x, [1] * 4))), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("mode", ["single", "factorized"])
def test_repconv_fuses_into_convolutions(mode):
    torch.manual_seed(0)
    block = nn.Sequential(RepConv(6, 5), nn.BatchNorm2d(5)).double().eval()
    _randomise_bn(block)
    fused = block[0].fuse(block[1], mode=mode)
    convs = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == (1 if mode == "single" else 3)
    if mode == "single":
        assert convs[0].kernel_size == (3, 3) and convs[0].padding == (1, 1) and convs[0].bias is not None
    x = torch.randn(2, 6, 7, 4, dtype=torch.float64)
    torch.testing.assert_close(fused(x), block(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["single", "factorized"])
def test_reparameterize_keeps_the_outputs_float64(mode):
    # in float64 the folded model's spikes cannot flip, so logits and the final LIF input agree closely
    torch.manual_seed(1)
    model = MetaSpikeFormer(**SMALL, T=2).double()
    _randomise_bn(model, seed=2)
    model.eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64) * 2
    out, counts, pooled = _run_recording(model, x)
    folded = copy.deepcopy(model).reparameterize(mode)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert not any(isinstance(m, RepConv) for m in folded.modules())
    f_out, f_counts, f_pooled = _run_recording(folded, x)
    assert f_counts == counts and sum(counts.values()) > 0
    torch.testing.assert_close(f_pooled, pooled, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(f_out, out, rtol=1e-9, atol=1e-9)
    with pytest.raises(UsageError, match="mode"):
        MetaSpikeFormer(**SMALL).reparameterize("fast")


# ---------------------------------------------------------------------------------------------------------------
# registered sizes: keys and parameter counts (meta device: nothing is allocated)

COUNTS = {"metaspikformer_8_384": (31_333_864, 31_814_864), "metaspikformer_8_512": (55_350_248, 55_991_248),
          "metaspikformer_8_768": (123_741_160, 124_702_160)}


@pytest.mark.parametrize("kd", [False, True], ids=["plain", "kd"])
@pytest.mark.parametrize("name", sorted(COUNTS))
def test_registered_sizes_have_the_reference_parameter_counts(name, kd):
    with torch.device("meta"):
        model = create_model(name, kd=kd)
    assert sum(p.numel() for p in model.parameters()) == COUNTS[name][kd]
    state = model.state_dict()
    assert len(state) == (827 if kd else 825)
    assert ("head_kd.weight" in state) == kd
    key_list = KEY_LISTS.get((name, kd))
    if key_list is not None and key_list.is_file():
        expected = []
        for line in key_list.read_text().splitlines():
            key, shape = re.fullmatch(r"(\S+) \(([\d, ]*)\)", line.strip()).groups()
            expected.append((key, tuple(int(s) for s in shape.replace(" ", "").split(",") if s)))
        assert [(k, tuple(v.shape)) for k, v in state.items()] == expected


def test_registry_and_small_variant():
    assert {"metaspikformer_tiny", *COUNTS} <= set(list_models("metaspikformer_*"))
    model = create_model("metaspikformer_tiny", num_classes=10, T=2)
    assert model.embed_dim == [16, 32, 64, 80] and model.T == 2 and model.pretrained_cfg.url is None
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert model(torch.randn(2, 1, 3, 32, 32)).shape == (1, 10)  # a [T, N, C, H, W] sequence is used as is
    with pytest.raises(UsageError, match="T"):
        model.T = 0
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        model(torch.randn(3, 32, 32))
    # the reference's unused arguments are accepted
    MetaSpikeFormer(**SMALL, img_size_h=7, img_size_w=9, patch_size=3, qkv_bias=True, depths=4, sr_ratios=2,
                    norm_layer=nn.LayerNorm, drop_path_rate=0.1)


# ---------------------------------------------------------------------------------------------------------------
# the public reference vectors


@pytest.mark.parametrize("kd", [False, True], ids=["plain", "kd"])
def test_public_vectors(vectors, kd):
    model = _vector_model(vectors, kd=kd)
    assert len(vectors["state_dict"]) == 825
    for case in vectors["cases"]:
        model.T = case["T"]
        out, counts, pooled = _run_recording(model, vectors["input"])
        expected = {name: stats["spikes"] for name, stats in case["lif_stats"].items()}
        assert list(counts) == list(expected), "LIF layers differ in names or forward order"
        wrong = [(n, counts[n], expected[n]) for n in expected if counts[n] != expected[n]]
        assert not wrong, f"T={case['T']}: first layers whose spike counts differ: {wrong[:3]}"
        torch.testing.assert_close(pooled, case["pooled_features"], rtol=1e-5, atol=1e-5)
        # kd: head_kd is a copy of head here, so eval's (head + head_kd) / 2 is the plain logits
        torch.testing.assert_close(out, case["output"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vectors["output"], vectors["cases"][0]["output"], rtol=0, atol=0)


def test_kd_heads_train_and_eval(vectors):
    model = _vector_model(vectors, kd=True, T=2)
    nn.init.normal_(model.head_kd.weight)
    out, _, _ = _run_recording(model, vectors["input"])
    with torch.no_grad():
        spikes = model.forward_head(model.forward_features(model.encode(vectors["input"])), pre_logits=True)
        expected = (model.head(spikes).mean(0) + model.head_kd(spikes).mean(0)) / 2
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close((out * 2 - model.head_kd(spikes).mean(0)), vectors["output"], rtol=1e-5, atol=1e-5)
    model.train()
    both = model(vectors["input"])
    assert isinstance(both, tuple) and len(both) == 2 and both[0].shape == both[1].shape == (2, 10)


@pytest.mark.parametrize("mode", ["single", "factorized"])
def test_reparameterized_model_matches_the_vectors(vectors, mode):
    model = _vector_model(vectors).reparameterize(mode)
    for case in vectors["cases"]:
        model.T = case["T"]
        out, counts, pooled = _run_recording(model, vectors["input"])
        assert counts == {name: stats["spikes"] for name, stats in case["lif_stats"].items()}
        torch.testing.assert_close(pooled, case["pooled_features"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out, case["output"], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# backbone for dense prediction


def test_features_only_shapes_info_and_gradients():
    torch.manual_seed(0)
    model = create_model("metaspikformer_tiny", features_only=True, T=2)
    assert isinstance(model, MetaSpikeFormerFeatures)
    assert model.feature_info.channels() == [16, 32, 64, 80]
    assert model.feature_info.reduction() == [4, 8, 16, 16]
    assert not any(k.startswith(("head", "lif")) for k in model.state_dict())
    # 8 x 4 tokens in stages 3-4: with fewer, attn_lif stays silent at initialisation, the BatchNorm after it
    # sees a constant and the gradient through it is scaled by 1/sqrt(eps) (as in the reference)
    x = torch.randn(2, 3, 128, 64, requires_grad=True)
    feats = model(x)
    assert [tuple(f.shape) for f in feats] == [(2, 16, 32, 16), (2, 32, 16, 8), (2, 64, 8, 4), (2, 80, 8, 4)]
    sum((f * torch.randn_like(f)).sum() for f in feats).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    first = model.downsample1_1.encode_conv.weight.grad
    deep = model.block4[1].mlp.fc2_conv.weight.grad
    assert first is not None and first.abs().sum() > 0 and deep is not None and deep.abs().sum() > 0

    every = create_model("metaspikformer_tiny", features_only=True, out_indices=(1, 3), feature_time="all", T=2)
    every.load_state_dict(model.state_dict())
    with torch.no_grad():
        f1, f3 = every(x)
        assert f1.shape == (2, 2, 32, 16, 8) and f3.shape == (2, 2, 80, 8, 4)
        torch.testing.assert_close(f1.mean(0), model(x)[1], rtol=0, atol=0)
    assert every.feature_info.channels() == [32, 80] and every.feature_info.out_indices == (1, 3)
    with pytest.raises(UsageError, match="out_indices"):
        create_model("metaspikformer_tiny", features_only=True, out_indices=(4,))
    with pytest.raises(UsageError, match="feature_time"):
        create_model("metaspikformer_tiny", features_only=True, feature_time="last")


def test_features_equal_the_classifier_stages():
    torch.manual_seed(0)
    classifier = create_model("metaspikformer_tiny", T=2).eval()
    backbone = create_model("metaspikformer_tiny", features_only=True, out_indices=(3,), feature_time="all", T=2)
    backbone.load_state_dict({k: v for k, v in classifier.state_dict().items() if not k.startswith("head")})
    backbone.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[0], classifier.forward_features(classifier.encode(x)), rtol=0,
                                   atol=0)


# ---------------------------------------------------------------------------------------------------------------
# checkpoints: the released format loads with weights_only=True, a file that would run code does not


def _released_format(model, **args) -> dict:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(1, 3, 32, 32))[0].sum().backward()
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 299,
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                       "_growth_tracker": 0},
            "args": argparse.Namespace(model="metaspikformer_8_512", batch_size=24, blr=2e-5, kd=True,
                                       input_size=224, data_path="/data/imagenet", device="cuda", **args)}


def test_released_checkpoint_format_loads_and_infers_kd(tmp_path, caplog):
    torch.manual_seed(0)
    source = create_model("metaspikformer_tiny", num_classes=10, kd=True).train()
    path = tmp_path / "55M_kd.pth"
    torch.save(_released_format(source, time_steps=4), path)
    with caplog.at_level(logging.INFO, logger="spikeforge.models.metaspikformer"):
        model = create_model("metaspikformer_tiny", pretrained=path, num_classes=10)
    assert model.kd and model.T == 4
    assert "kd=True" in caplog.text and "T=4" in caplog.text
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # a bare state_dict without head_kd builds kd=False; T stays the default
    plain = create_model("metaspikformer_tiny", num_classes=10)
    torch.save(plain.state_dict(), tmp_path / "plain.pth")
    loaded = create_model("metaspikformer_tiny", pretrained=str(tmp_path / "plain.pth"), num_classes=10)
    assert not loaded.kd and loaded.T == 1
    with pytest.raises(UsageError, match="head_kd"):
        create_model("metaspikformer_tiny", pretrained=path, num_classes=10, kd=False)
    with pytest.raises(WeightsMismatchError, match="head"):
        create_model("metaspikformer_tiny", pretrained=path, num_classes=7)


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["top", "inside_args"])
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, where):
    marker = tmp_path / "pwned"
    state = create_model("metaspikformer_tiny", num_classes=10).state_dict()
    if where == "top":
        payload = {"model": state, "args": _RunsCode(marker)}
    else:
        payload = {"model": state, "args": argparse.Namespace(time_steps=4, hook=_RunsCode(marker))}
    path = tmp_path / "evil.pth"
    torch.save(payload, path)
    with pytest.raises(WeightsFileError) as info:
        create_model("metaspikformer_tiny", pretrained=path, num_classes=10)
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert str(path) in message and "system" in message and "could run code" in message
    assert "weights_only=False" not in message
    assert not marker.exists()
    # the allow-list is for that load only: torch's own default stays strict afterwards
    with pytest.raises(pickle.UnpicklingError, match="(?i)unsupported global"):
        torch.load(tmp_path / "evil.pth", weights_only=True)
    ok = tmp_path / "namespace.pth"
    torch.save({"args": argparse.Namespace(a=1)}, ok)
    with pytest.raises(pickle.UnpicklingError, match="Namespace"):
        torch.load(ok, weights_only=True)
