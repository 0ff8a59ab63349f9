"""SpikingJelly's model zoo names (``spikeforge.model.spiking_resnet / sew_resnet / spiking_vgg``).

In CI (no SpikingJelly, no torchvision): parameter counts, state_dict key counts and a digest of the key lists,
all measured from SpikingJelly 2.0.0 (with IF neurons) and written here as literals; the torchvision-format loading
path (a file in a torch.hub cache, its hash prefix checked), forward shapes on tiny inputs, single- vs multi-step,
SEW's connect functions by hand, export/compile from a reset state.

With SpikingJelly 2.0 installed (the peer venv), the same builders in both libraries in one process: names,
module trees, keys, same-seed initialisation, outputs and gradients (multi-step, T=2, 32x32) given the same
weights; with torchvision too, torchvision's own state_dicts load strictly.
"""

from __future__ import annotations

import hashlib
import io
import sys
import types

import pytest
import torch

from spikeforge import functional, neuron, surrogate
from spikeforge.model import sew_resnet, spiking_resnet, spiking_vgg
from spikeforge.models import create_model, get_pretrained_cfg, list_models, model_entrypoint
from spikeforge.models._weights import WeightsDownloadError, WeightsHashError, WeightsMismatchError

# name: (parameters, state_dict entries, sha256 of "\n".join(state_dict keys) [:16]) of SpikingJelly 2.0.0's
# builder with spiking_neuron=neuron.IFNode (torchvision's model has the very same keys: checked below with it)
SJ_FACTS = {
    "spiking_resnet18": (11689512, 122, "779447cf0a59dec8"),
    "spiking_resnet34": (21797672, 218, "5aa6d4978ba3a10a"),
    "spiking_resnet50": (25557032, 320, "8f960d1d00758a98"),
    "spiking_resnet101": (44549160, 626, "06870983fe3d8f04"),
    "spiking_resnet152": (60192808, 932, "3e8a404c8d0a27d7"),
    "spiking_resnext50_32x4d": (25028904, 320, "8f960d1d00758a98"),
    "spiking_resnext101_32x8d": (88791336, 626, "06870983fe3d8f04"),
    "spiking_wide_resnet50_2": (68883240, 320, "8f960d1d00758a98"),
    "spiking_wide_resnet101_2": (126886696, 626, "06870983fe3d8f04"),
    "sew_resnet18": (11689512, 122, "779447cf0a59dec8"),
    "sew_resnet34": (21797672, 218, "5aa6d4978ba3a10a"),
    "sew_resnet50": (25557032, 320, "8f960d1d00758a98"),
    "sew_resnet101": (44549160, 626, "06870983fe3d8f04"),
    "sew_resnet152": (60192808, 932, "3e8a404c8d0a27d7"),
    "sew_resnext50_32x4d": (25028904, 320, "8f960d1d00758a98"),
    "sew_resnext101_32x8d": (88791336, 626, "06870983fe3d8f04"),
    "sew_wide_resnet50_2": (68883240, 320, "8f960d1d00758a98"),
    "sew_wide_resnet101_2": (126886696, 626, "06870983fe3d8f04"),
    "spiking_vgg11": (132863336, 22, "48d52f58d1ef8000"),
    "spiking_vgg11_bn": (132868840, 62, "0ffb5b2ee44375ad"),
    "spiking_vgg13": (133047848, 26, "3a0ef258e8ff60dc"),
    "spiking_vgg13_bn": (133053736, 76, "ac4eae7f01c343e7"),
    "spiking_vgg16": (138357544, 32, "8f3a2b9b44d59c1f"),
    "spiking_vgg16_bn": (138365992, 97, "d6d5ff475a707742"),
    "spiking_vgg19": (143667240, 38, "f9f22fb5f387f740"),
    "spiking_vgg19_bn": (143678248, 118, "b909d731fcbe7bdf"),
}
MODULES = {"spiking_resnet": spiking_resnet, "sew_resnet": sew_resnet, "spiking_vgg": spiking_vgg}


def _module_of(name):
    return sew_resnet if name.startswith("sew_") else spiking_vgg if "vgg" in name else spiking_resnet


def _digest(keys) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


@pytest.fixture(autouse=True, scope="module")
def _few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)


def _tutorial_build(builder, **kwargs):
    """As SpikingJelly's ImageNet example builds its models, then multi-step."""
    net = builder(pretrained=False, spiking_neuron=neuron.IFNode, surrogate_function=surrogate.ATan(),
                  detach_reset=True, **kwargs)
    functional.set_step_mode(net, "m")
    return net


# ------------------------------------------------------------------------------------------------- structure (CI)
@pytest.mark.parametrize("name", sorted(SJ_FACTS))
def test_keys_and_parameter_counts_are_spikingjelly_s(name):
    params, entries, digest = SJ_FACTS[name]
    with torch.device("meta"):  # no memory, no initialisation cost
        net = getattr(_module_of(name), name)(spiking_neuron=neuron.IFNode)
    keys = list(net.state_dict())
    assert sum(p.numel() for p in net.parameters()) == params
    assert len(keys) == entries and _digest(keys) == digest
    # one implementation, two import paths, and a zoo entry with its torchvision configuration
    assert model_entrypoint(name) is getattr(_module_of(name), name)
    cfg = get_pretrained_cfg(name)
    assert cfg.url.startswith("https://download.pytorch.org/models/") and cfg.url.endswith(".pth")
    assert cfg.classifier == ("classifier.6" if "vgg" in name else "fc") and cfg.num_classes == 1000


def test_every_spikingjelly_name_is_registered_and_exported():
    assert set(SJ_FACTS) <= set(list_models())
    for module in MODULES.values():
        builders = [n for n in module.__all__ if n[0].islower()]
        assert set(builders) == {n for n in SJ_FACTS if _module_of(n) is module}
    # the module-level helpers SpikingJelly's modules have
    assert spiking_resnet.model_urls["resnet18"] == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert spiking_vgg.cfgs["A"] == [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
    assert callable(sew_resnet.sew_function) and callable(spiking_resnet.conv3x3)


def test_neuron_kwargs_reach_every_neuron_and_network_kwargs_the_network():
    with torch.device("meta"):
        net = spiking_resnet.spiking_resnet18(spiking_neuron=neuron.LIFNode, tau=3.0, detach_reset=True,
                                              surrogate_function=surrogate.ATan(), num_classes=7)
    neurons = [m for m in net.modules() if isinstance(m, neuron.LIFNode)]
    assert len(neurons) == 17 and all(m.tau == 3.0 and m.detach_reset for m in neurons)
    assert len({id(m.surrogate_function) for m in neurons}) == 17  # deep-copied, not shared
    assert net.fc.out_features == 7
    with torch.device("meta"):  # no spiking_neuron: IF neurons (SpikingJelly requires the argument)
        assert isinstance(create_model("sew_resnet18").sn1, neuron.IFNode)


# ------------------------------------------------------------------------------------------------- behaviour (CI)
def test_resnet18_multi_step_equals_single_steps_and_keeps_state_until_reset():
    torch.manual_seed(0)
    net = _tutorial_build(spiking_resnet.spiking_resnet18, num_classes=5).eval()
    x = torch.rand(2, 2, 3, 32, 32) * 3
    with torch.no_grad():
        y = net(x)
        assert y.shape == (2, 2, 5)
        functional.reset_net(net)
        functional.set_step_mode(net, "s")
        steps = torch.stack([net(x[t]) for t in range(2)])
        torch.testing.assert_close(steps, y, rtol=0, atol=1e-5)
        functional.reset_net(net)
        assert net.sn1.v == 0.0  # the reset state


@pytest.mark.parametrize("cnf", ["ADD", "AND", "IAND"])
def test_sew_connect_functions_by_hand(cnf):
    a = torch.tensor([0.0, 0.0, 1.0, 1.0])
    b = torch.tensor([0.0, 1.0, 0.0, 1.0])
    expected = {"ADD": [0.0, 1.0, 1.0, 2.0], "AND": [0.0, 0.0, 0.0, 1.0], "IAND": [0.0, 0.0, 1.0, 0.0]}[cnf]
    assert sew_resnet.sew_function(a, b, cnf).tolist() == expected
    # in a block: with the residual branch silenced (bn2 weight and bias 0: no spikes), y = g(x, 0)
    torch.manual_seed(0)
    block = sew_resnet.BasicBlock(4, 4, cnf=cnf, spiking_neuron=neuron.IFNode).eval()
    torch.nn.init.zeros_(block.bn2.weight)
    torch.nn.init.zeros_(block.bn2.bias)
    x = (torch.rand(2, 4, 5, 5) > 0.5).float()
    with torch.no_grad():
        torch.testing.assert_close(block(x), sew_resnet.sew_function(x, torch.zeros_like(x), cnf))


def test_sew_cnf_spellings():
    with torch.device("meta"):
        net = sew_resnet.sew_resnet18(connect_f="IAND")
        assert {m.cnf for m in net.modules() if isinstance(m, sew_resnet.BasicBlock)} == {"IAND"}
        with pytest.raises(ValueError, match="cnf"):
            sew_resnet.sew_resnet18(cnf="OR")
        with pytest.raises(ValueError, match="disagree"):
            sew_resnet.sew_resnet18(cnf="ADD", connect_f="AND")


def test_vgg_and_bottleneck_forward_shapes_on_tiny_inputs():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 3, 32, 32)  # [T, N, C, H, W]
    for builder in (sew_resnet.sew_resnet50, spiking_vgg.spiking_vgg11_bn):
        net = _tutorial_build(builder, num_classes=3).eval()
        with torch.no_grad():
            assert net(x).shape == (1, 1, 3), builder.__name__


@pytest.mark.filterwarnings("ignore:The tensor attributes .* were assigned during export:UserWarning")
def test_export_and_compile_from_a_reset_state():
    # the generic zoo check (tests/models/test_zoo_export.py) calls models repeatedly without reset_net; here
    # each route starts from the reset state, and compile keeps carrying the state between calls as eager does.
    # The zoo's class with one block per stage (ResNet-10) keeps the traced graph small.
    torch.manual_seed(0)
    net = spiking_resnet.SpikingResNet(spiking_resnet.BasicBlock, [1, 1, 1, 1], num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32) * 4
    with torch.no_grad():
        first, second = net(x), net(x)
        functional.reset_net(net)
        exported = torch.export.export(net, (x,))
        functional.reset_net(net)
        torch.testing.assert_close(exported.module()(x), first, rtol=1e-6, atol=1e-6)
        torch._dynamo.reset()
        compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
        functional.reset_net(net)
        torch.testing.assert_close(compiled(x), first, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(compiled(x), second, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------- weights (CI)
def _ann_state_dict(net) -> dict:
    """A torchvision-format state_dict: every entry of the spiking network (IF neurons have none), random values."""
    gen = torch.Generator().manual_seed(3)
    return {k: (torch.randint(0, 50, v.shape, generator=gen) if v.dtype == torch.long
                else torch.randn(v.shape, generator=gen)) for k, v in net.state_dict().items()}


def _hub_file(tmp_path, state) -> tuple[str, str]:
    """``state`` saved as torch.hub names release files (``name-<sha256 prefix>.pth``); returns (url, name)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    name = f"tiny-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (tmp_path / "release").mkdir(exist_ok=True)
    (tmp_path / "release" / name).write_bytes(data)
    return (tmp_path / "release" / name).as_uri(), name


def test_pretrained_true_goes_through_the_hub_cache_with_the_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    torch.manual_seed(0)
    reference = spiking_resnet.spiking_resnet18()
    state = _ann_state_dict(reference)
    url, name = _hub_file(tmp_path, state)
    net = spiking_resnet.spiking_resnet18(pretrained=True, pretrained_cfg_overlay={"url": url}, progress=False)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    assert (tmp_path / "hub" / "checkpoints" / name).is_file()  # cached where torch.hub caches
    # a file whose content does not match the hash prefix of its name is refused
    bad = tmp_path / "release" / "tiny-00000000.pth"
    bad.write_bytes((tmp_path / "release" / name).read_bytes())
    with pytest.raises(WeightsHashError, match="hash"):
        spiking_resnet.spiking_resnet18(pretrained=True, pretrained_cfg_overlay={"url": bad.as_uri()},
                                        progress=False)
    with pytest.raises(WeightsDownloadError, match="could not download"):
        spiking_resnet.spiking_resnet18(pretrained=True, progress=False,
                                        pretrained_cfg_overlay={"url": (tmp_path / "none-12345678.pth").as_uri()})


def test_local_ann_file_loads_strictly_and_plif_neurons_keep_their_init(tmp_path):
    torch.manual_seed(0)
    net = spiking_resnet.spiking_resnet18()
    state = _ann_state_dict(net)
    torch.save(state, tmp_path / "ann.pth")
    loaded = spiking_resnet.spiking_resnet18(pretrained=str(tmp_path / "ann.pth"))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    # a missing or extra entry is refused by name
    with pytest.raises(WeightsMismatchError, match="fc.bias"):
        spiking_resnet.spiking_resnet18(pretrained={k: v for k, v in state.items() if k != "fc.bias"})
    with pytest.raises(WeightsMismatchError, match="extra"):
        spiking_resnet.spiking_resnet18(pretrained={**state, "extra": torch.zeros(1)})
    # ParametricLIF neurons have a parameter of their own: an ANN file (no neuron entries) leaves it at init_tau
    plif = spiking_resnet.spiking_resnet18(pretrained=state, spiking_neuron=neuron.ParametricLIFNode, init_tau=3.0)
    assert abs(plif.layer1[0].sn1.tau - 3.0) < 1e-6
    torch.testing.assert_close(plif.fc.weight, state["fc.weight"])


def test_a_new_head_keeps_its_initialisation_with_the_official_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    torch.manual_seed(0)
    state = _ann_state_dict(sew_resnet.sew_resnet18())  # 1000 classes, as torchvision's file
    url, _ = _hub_file(tmp_path, state)
    torch.manual_seed(1)
    fresh = sew_resnet.sew_resnet18(num_classes=10)
    torch.manual_seed(1)
    net = sew_resnet.sew_resnet18(pretrained=True, num_classes=10, progress=False, pretrained_cfg_overlay={"url": url})
    assert torch.equal(net.fc.weight, fresh.fc.weight) and net.fc.out_features == 10
    assert torch.equal(net.conv1.weight, state["conv1.weight"])
    assert torch.equal(net.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    # a local file must match the model as built (fine-tuning from a file: drop the head from the file)
    torch.save(state, tmp_path / "ann.pth")
    with pytest.raises(WeightsMismatchError, match="fc.weight"):
        sew_resnet.sew_resnet18(pretrained=str(tmp_path / "ann.pth"), num_classes=10)


def test_vgg_skips_its_initialisation_when_weights_are_loaded(monkeypatch):
    calls = []
    monkeypatch.setattr(spiking_vgg.SpikingVGG, "_initialize_weights", lambda self: calls.append(1))
    with torch.device("meta"):
        net = spiking_vgg.spiking_vgg11()
        assert calls == [1]
        with pytest.raises(WeightsMismatchError):  # loading is attempted (and fails on the empty mapping)
            spiking_vgg.spiking_vgg11(pretrained={"features.0.weight": torch.zeros(64, 3, 3, 3)})
    assert calls == [1] and net.classifier[2].p == 0.5


# ------------------------------------------------------------------------------------------------- SpikingJelly 2.0
def _spikingjelly():
    sj = pytest.importorskip("spikingjelly.activation_based")
    # SpikingJelly's zoo modules import torchvision (only for load_state_dict_from_url). The peer venv's torchvision
    # build does not match its torch (its _meta_registrations fails on the missing torchvision::nms op); that module
    # only registers fake kernels for torchvision's C++ ops, unused here, so it is stubbed out before the import.
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    try:
        from spikingjelly.activation_based.model import sew_resnet as sj_sew
        from spikingjelly.activation_based.model import spiking_resnet as sj_resnet
        from spikingjelly.activation_based.model import spiking_vgg as sj_vgg
    except Exception as err:  # torchvision missing or unusable
        pytest.skip(f"SpikingJelly's model zoo cannot be imported here: {type(err).__name__}: {err}")
    return sj, {"spiking_resnet": sj_resnet, "sew_resnet": sj_sew, "spiking_vgg": sj_vgg}


def _structure(net):
    """(name, class name) of every module except those inside a neuron (its surrogate function)."""
    neurons = [n for n, m in net.named_modules() if "Node" in type(m).__name__]
    return [(n, type(m).__name__) for n, m in net.named_modules()
            if not any(n.startswith(p + ".") for p in neurons)]


def test_names_module_trees_and_keys_equal_spikingjelly_s():
    sj, sj_modules = _spikingjelly()
    for key, ours in MODULES.items():
        theirs = sj_modules[key]
        assert set(theirs.__all__) - {"SEWResNet34Config"} == set(ours.__all__)
        for name in [n for n in theirs.__all__ if n[0].islower()]:
            with torch.device("meta"):
                a = getattr(theirs, name)(spiking_neuron=sj.neuron.IFNode, **({"cnf": "ADD"} if "sew" in name else {}))
                b = getattr(ours, name)(spiking_neuron=neuron.IFNode)
            assert list(a.state_dict()) == list(b.state_dict()), name
            assert _structure(a) == _structure(b), name
            assert sum(p.numel() for p in a.parameters()) == SJ_FACTS[name][0]


def _close_to_scale(got, expected, what, rel=1e-5):
    scale = expected.abs().max().item()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=rel * max(scale, 1e-12),
                               msg=lambda m: f"{what} (max |grad| {scale:.3g}): {m}")


@pytest.mark.parametrize("name, kwargs", [
    ("spiking_resnet18", {}),
    ("spiking_resnet50", {}),
    ("sew_resnet18", {"cnf": "ADD"}),
    ("sew_resnet18", {"cnf": "AND"}),
    ("sew_resnet18", {"cnf": "IAND"}),
    ("sew_resnet50", {"cnf": "IAND"}),  # the bottleneck's g(out, identity) order
    ("spiking_vgg11_bn", {}),
])
def test_outputs_and_gradients_equal_spikingjelly_s(name, kwargs):
    sj, sj_modules = _spikingjelly()
    key = "sew_resnet" if name.startswith("sew_") else "spiking_vgg" if "vgg" in name else "spiking_resnet"
    torch.manual_seed(0)
    theirs = getattr(sj_modules[key], name)(pretrained=False, spiking_neuron=sj.neuron.IFNode,
                                            surrogate_function=sj.surrogate.ATan(), detach_reset=True, **kwargs)
    torch.manual_seed(0)
    ours = _tutorial_build(getattr(MODULES[key], name), **kwargs)
    # the same seed gives the same initialisation (same construction and init order)
    for (k, a), b in zip(theirs.state_dict().items(), ours.state_dict().values()):
        assert torch.equal(a, b), k
    sj.functional.set_step_mode(theirs, "m")
    for m in list(theirs.modules()) + list(ours.modules()):  # dropout masks come from different draws
        if "Dropout" in type(m).__name__:
            m.p = 0.0
    x = torch.rand(2, 2, 3, 32, 32) * 2  # T=2, N=2
    w = torch.randn(2, 2, 1000)
    for train in (False, True):
        theirs.train(train)
        ours.train(train)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = theirs(xa), ours(xb)
        torch.testing.assert_close(yb, ya, rtol=1e-6, atol=1e-6)
        (ya * w).sum().backward()
        (yb * w).sum().backward()
        # gradients: the same up to float32 summation order (the kernels accumulate over time differently)
        _close_to_scale(xb.grad, xa.grad, "input")
        grads = {k: (p.grad, q.grad) for (k, p), q in zip(theirs.named_parameters(), ours.parameters())}
        for k, (expected, got) in grads.items():
            weight = grads.get(k[: -len("bias")] + "weight") if k.endswith(".bias") else None
            if weight is not None and expected.abs().max() < 1e-4 * weight[0].abs().max():
                # a convolution bias right before a BatchNorm in training: its gradient is 0 in exact arithmetic
                # (BN removes the mean), both libraries give rounding noise
                assert got.abs().max() < 1e-4 * weight[1].abs().max(), k
            else:
                _close_to_scale(got, expected, k)
        sj.functional.reset_net(theirs)
        functional.reset_net(ours)
        theirs.zero_grad()
        ours.zero_grad()
    # and both keep the step state the same way: two calls without reset
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        for _ in range(2):
            torch.testing.assert_close(ours(x), theirs(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("tv_name, builder", [
    ("resnet18", spiking_resnet.spiking_resnet18),
    ("resnext50_32x4d", sew_resnet.sew_resnext50_32x4d),
    ("vgg11_bn", spiking_vgg.spiking_vgg11_bn),
])
def test_torchvision_state_dicts_load_strictly(tv_name, builder, tmp_path):
    _spikingjelly()  # stubs torchvision's fake-kernel module where it is broken
    tvm = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    ann = getattr(tvm, tv_name)()
    torch.save(ann.state_dict(), tmp_path / "tv.pth")
    snn = builder(pretrained=str(tmp_path / "tv.pth"), spiking_neuron=neuron.IFNode)
    assert list(snn.state_dict()) == list(ann.state_dict())
    for k, v in ann.state_dict().items():
        assert torch.equal(snn.state_dict()[k], v), k
