"""The STBP zoo models: structure, the reference's key lists, the public vectors, checkpoint loading."""

from __future__ import annotations

import hashlib

import pytest
import torch

from spikeforge import functional
from spikeforge.models import WeightsMismatchError, create_model, get_pretrained_cfg, load_weights
from spikeforge.models.stbp import AliasMismatchError, STBPResNet18, checkpoint_filter_fn, tensor_aliases
from spikeforge.spec import LeakLaw, NeuronKind

from .helpers import (
    CHECKPOINTS,
    cifarnet_state_dict,
    needs_vectors,
    reference_keys,
    run_counting_spikes,
    time_first,
    vectors,
)

MODELS = {"stbp_mnistnet": ("MNISTNet", 606_685, (1, 28, 28)), "stbp_cifarnet": ("CifarNet", 45_005_450, (3, 32, 32)),
          "stbp_resnet18": ("ResNet18", 12_630_858, (3, 32, 32))}


@pytest.mark.parametrize("name", list(MODELS))
def test_parameters_and_state_dict_keys_follow_the_reference(name):
    ref, n_params, _ = MODELS[name]
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == n_params
    if (CHECKPOINTS / f"stbp_{ref}.txt").is_file():
        state = model.state_dict()
        assert [(k, tuple(v.shape)) for k, v in state.items()] == reference_keys(ref)
    cfg = get_pretrained_cfg(name)
    assert cfg.url is None and cfg.num_classes == 10 and cfg.input_size == MODELS[name][2]


def test_neurons_are_stbp_lif_per_instance_without_globals():
    a = create_model("stbp_mnistnet", v_th=0.3, tau=0.5, steps=3)
    b = create_model("stbp_mnistnet")
    spec_a, spec_b = a.fc1_lif.spec, b.fc1_lif.spec
    assert spec_a.kind is NeuronKind.STBP_LIF and spec_a.leak.law is LeakLaw.RETENTION
    assert (spec_a.v_threshold, spec_a.leak.value, spec_a.fire_on_tie) == (0.3, 0.5, False)
    assert (spec_b.v_threshold, spec_b.leak.value, a.steps, b.steps) == (0.4, 0.25, 3, 2)
    x = torch.rand(2, 1, 28, 28)
    out = a(x)
    assert out.shape == (2, 10) and torch.equal(out * 3, (out * 3).round())  # rates in {0, 1/3, 2/3, 1}
    assert torch.equal(a(x.unsqueeze(0).expand(3, *x.shape)), out)  # [T, N, C, H, W] input, same result


def test_num_classes_is_honoured():
    with torch.device("meta"):
        resnet = create_model("stbp_resnet18", num_classes=100)
        cifar = create_model("stbp_cifarnet", num_classes=7)
    assert resnet.fc2.out_features == 100 and cifar.fc3.out_features == 7
    assert create_model("stbp_mnistnet", num_classes=5)(torch.zeros(1, 1, 28, 28)).shape == (1, 5)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("stbp_mnistnet", num_classes=0)
    with pytest.raises(ValueError, match="steps"):
        create_model("stbp_mnistnet", steps=0)


@needs_vectors
def test_mnistnet_public_vectors_eval_and_train():
    entry = vectors()["MNISTNet"]
    model = create_model("stbp_mnistnet", pretrained=entry["state_dict"]).eval()
    x = time_first(entry["input"])
    out, counts = run_counting_spikes(model, x)
    torch.testing.assert_close(out, entry["output_eval"], atol=1e-5, rtol=0)
    assert counts == [c["spikes"] for c in entry["lif_spike_counts"]]
    out, counts = run_counting_spikes(model.train(), x)
    torch.testing.assert_close(out, entry["output_train"], atol=1e-5, rtol=0)
    assert counts == [c["spikes"] for c in entry["lif_spike_counts_train"]]


@needs_vectors
def test_cifarnet_public_vectors_eval_and_train():
    entry = vectors()["CifarNet"]
    state = cifarnet_state_dict()
    for key, fingerprint in entry["state_dict_fingerprints"].items():
        digest = hashlib.sha256(state[key].contiguous().numpy().tobytes()).hexdigest()
        assert digest == fingerprint["sha256_le_bytes"], key
    model = create_model("stbp_cifarnet", pretrained=state).eval()
    x = time_first(entry["input"])
    for mode, out_key, count_key in (("eval", "output_eval", "lif_spike_counts"),
                                     ("train", "output_train", "lif_spike_counts_train")):
        model.train(mode == "train")
        out, counts = run_counting_spikes(model, x)
        torch.testing.assert_close(out, entry[out_key], atol=1e-5, rtol=0)
        # exact, except where the reference itself is within float rounding of V_th (its n_within_1e-6):
        # eval call 1 holds an exact tie u == float32(0.4) that a different tdBN operation order may fire
        for got, ref in zip(counts, entry[count_key]):
            assert abs(got - ref["spikes"]) <= ref["n_within_1e-6"], (mode, ref["order"], got, ref["spikes"])
    state_after = model.state_dict()
    for bn, buffers in entry["bn_buffers_after_train_forward"].items():
        for key, value in buffers.items():
            torch.testing.assert_close(state_after[f"{bn}.{key}"], value, atol=1e-6, rtol=1e-6)


def test_reference_checkpoints_load_strictly_and_aliases_must_agree(tmp_path):
    torch.manual_seed(0)
    source = create_model("stbp_mnistnet")
    reference_file = {"model": source.state_dict(), "acc": 97.96, "epoch": 199}  # what main.py saves
    path = tmp_path / "MNISTNet_ckpt.pth"
    torch.save(reference_file, path)
    for pretrained in (path, reference_file, source.state_dict()):
        model = load_weights(create_model("stbp_mnistnet"), pretrained)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))
    assert ["conv1.weight", "conv1_s.layer.weight"] in tensor_aliases(source)

    bad = dict(source.state_dict())
    bad["conv1_s.layer.weight"] = bad["conv1.weight"] + 1.0
    with pytest.raises(AliasMismatchError, match="'conv1.weight' and 'conv1_s.layer.weight'"):
        load_weights(create_model("stbp_mnistnet"), bad)
    # one alias only: strict loading names the missing alias; the filter completes it
    single = {k: v for k, v in source.state_dict().items() if "_s." not in k}
    with pytest.raises(WeightsMismatchError, match="conv1_s.layer.weight"):
        load_weights(create_model("stbp_mnistnet"), single)
    model = load_weights(create_model("stbp_mnistnet"), checkpoint_filter_fn({"model": single}, source))
    assert torch.equal(model.fc1_s.layer.bias, source.fc1.bias)
    # a checkpoint of another model
    with torch.device("meta"):
        other = create_model("stbp_resnet18").state_dict()
    with pytest.raises(WeightsMismatchError, match=r"stbp_mnistnet(.|\n)*layer1.0.conv1.weight"):
        load_weights(create_model("stbp_mnistnet"), other)


def _train_steps(model, x, y, steps=2):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        functional.reset_net(model)
    assert torch.isfinite(loss)
    return sum(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_cifarnet_and_resnet18_train_on_cifar_shaped_data():
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([3, 7])
    cifar = create_model("stbp_cifarnet", steps=1)
    changed = _train_steps(cifar, x * 3, y, steps=1)
    assert changed >= 3 and int(cifar.bn0.num_batches_tracked) == 1
    resnet = create_model("stbp_resnet18")
    assert resnet.eval()(x).shape == (2, 10)
    resnet.train()
    changed = _train_steps(resnet, x * 3, y)
    assert changed > 0 and int(resnet.layer1[0].downsample.bn.num_batches_tracked) == 2
    assert resnet.layer1[0].bn2.alpha == pytest.approx(2 ** -0.5) and resnet.layer2[1].downsample is None
    assert isinstance(STBPResNet18(num_blocks=(1, 1, 1)).layer3[0].downsample.layer, torch.nn.Conv2d)
