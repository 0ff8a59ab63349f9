"""Every zoo model under ``torch.jit.script``, ``torch.export.export`` and ``torch.compile`` computes what eager does.

The models are ``list_models()``, each built small: ``_SMALL`` gives constructor overrides and an input size per
name pattern; a model it does not list is built with its defaults and fed its ``pretrained_cfg.input_size``.
A model class may declare routes it does not support as ``export_unsupported = {"script": "why", ...}`` (routes:
``"script"``, ``"export"``, ``"compile"``); those tests are then skipped with that reason, and only then. An entry
point may carry the same attribute, so that a model too big to build cheaply is skipped without being built.

The group LIF has its own checks here: its TorchScript form (``functional.group_lif_tensors``) is the kernel the
spec selects, for every dtype, group size, axis and tail.
"""

from __future__ import annotations

import fnmatch
import io

import pytest
import torch

from spikeforge import functional as F
from spikeforge.models import create_model, list_models, model_entrypoint
from spikeforge.neuron import GroupLIF
from spikeforge.spec import group_lif_spec

# TorchScript is deprecated upstream (torch 2.13 warns on every script call); the hub page still offers it
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

ROUTES = ("script", "export", "compile")
MODELS = list_models()

# name pattern -> (constructor overrides, input [C, H, W]); the first matching pattern wins
_SMALL = {
    # one narrow block per stage (the variant's drop-path rate stays); 32 px gives stages of 8, 4, 2 and 1 px
    "snnmlp_*": (dict(embed_dim=16, depths=(1, 1, 1, 1), num_classes=10, img_size=32), (3, 32, 32)),
    # the widths of the public vectors (block counts are fixed); 32 px gives 2x2 tokens in stages 3 and 4
    "metaspikformer_*": (dict(embed_dim=[8, 16, 32, 40], num_classes=10), (3, 32, 32)),
}

# name pattern -> (the model it equals once built small, why): tested once, under that name
_SAME_WHEN_SMALL = {
    "metaspikformer_8_*": ("metaspikformer_tiny", "the sizes differ only in embed_dim, which the small config sets"),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the tensors are tiny: intra-op threads only add synchronisation (and stall badly on a loaded machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _small_config(name: str) -> tuple[dict, tuple[int, ...] | None]:
    for pattern, config in _SMALL.items():
        if fnmatch.fnmatchcase(name, pattern):
            return config
    return {}, None


def _build(name: str, route: str, batch: int = 2) -> tuple[torch.nn.Module, torch.Tensor]:
    """The small model (seeded) and an input for it; skips when the model's class declares ``route`` unsupported."""
    for pattern, (same, why) in _SAME_WHEN_SMALL.items():
        if fnmatch.fnmatchcase(name, pattern) and same in MODELS:
            pytest.skip(f"{name}: built small it is {same} ({why}); tested there")
    kwargs, input_size = _small_config(name)
    declared = dict(getattr(model_entrypoint(name), "export_unsupported", {}))  # big models: skip before building
    if route in declared:
        pytest.skip(f"{name}: its entry point declares {route} unsupported: {declared[route]}")
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    unsupported = dict(getattr(type(model), "export_unsupported", {}))
    assert set(unsupported) <= set(ROUTES), f"{type(model).__name__}.export_unsupported has unknown routes"
    if route in unsupported:
        pytest.skip(f"{name}: {type(model).__name__} declares {route} unsupported: {unsupported[route]}")
    if input_size is None:
        input_size = tuple(model.pretrained_cfg.input_size)
    return model, torch.randn(batch, *input_size)


def _loss_weights(out: torch.Tensor) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).reshape(out.shape)


def _gradients(model: torch.nn.Module, x: torch.Tensor, seed: int = 1) -> tuple[torch.Tensor, dict]:
    """Training-mode output and d(weighted sum)/d(input, every parameter); the seed fixes the drop-path draws."""
    x = x.detach().requires_grad_()
    named = dict(model.named_parameters())
    torch.manual_seed(seed)
    out = model(x)
    grads = torch.autograd.grad((out * _loss_weights(out)).sum(), [x, *named.values()], allow_unused=True)
    return out.detach(), {"input": grads[0], **dict(zip(named, grads[1:]))}


def _assert_same_gradients(got: dict, expected: dict, **tolerances) -> None:
    assert got.keys() == expected.keys()
    for key, grad in expected.items():
        if grad is None:
            assert got[key] is None, key
        else:
            assert got[key] is not None, f"no gradient reaches {key}"
            torch.testing.assert_close(got[key], grad, msg=lambda m, key=key: f"{key}: {m}", **tolerances)


# ---------------------------------------------------------------------------------------------------------------
# torch.jit.script


@pytest.mark.parametrize("name", MODELS)
def test_script_matches_eager_in_eval(name):
    model, x = _build(name, "script")
    model.eval()
    scripted = torch.jit.script(model)
    assert scripted.state_dict().keys() == model.state_dict().keys()
    with torch.no_grad():
        expected = model(x)
        for _ in range(2):  # the profiling executor specialises the graph after the first run
            torch.testing.assert_close(scripted(x), expected, rtol=0, atol=1e-6)
    # autograd on (parameters require grad): the differentiable form of every kernel
    torch.testing.assert_close(scripted(x), model(x), rtol=0, atol=1e-6)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(buffer)(x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_script_trains_like_eager(name):
    model, x = _build(name, "script")
    model.train()
    scripted = torch.jit.script(model)
    out, grads = _gradients(model, x)
    for _ in range(2):  # again once the executor has profiled the graph
        scripted_out, scripted_grads = _gradients(scripted, x)
        torch.testing.assert_close(scripted_out, out, rtol=0, atol=1e-6)
        _assert_same_gradients(scripted_grads, grads, rtol=1e-5, atol=1e-6)
    assert any(g is not None and g.abs().sum() > 0 for k, g in grads.items() if k != "input")


# ---------------------------------------------------------------------------------------------------------------
# torch.export and torch.compile


@pytest.mark.parametrize("name", MODELS)
def test_export_matches_eager(name):
    model, x = _build(name, "export")
    model.eval()
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_compile_fullgraph_matches_eager(name):
    model, x = _build(name, "compile")
    torch._dynamo.reset()
    # aot_eager: dynamo's graph capture and AOTAutograd without inductor's codegen (minutes on two cores)
    model.eval()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# SNN-MLP's options that TorchScript sees differently


@pytest.mark.parametrize("options", [
    # tau / Vth plain floats (absent from the state_dict), groups of 3 leaving tails, checkpointing (eager only)
    dict(lif=3, lif_fix_tau=True, lif_fix_vth=True, use_checkpoint=True),
    dict(lif=-1),  # identity LIFs
], ids=["lif3_fixed_checkpoint", "lif_identity"])
def test_snnmlp_options_script_like_eager(options):
    torch.manual_seed(0)
    model = create_model("snnmlp_t", depths=(1, 1, 1, 1), embed_dim=8, **options)
    x = torch.randn(2, 3, 32, 32)
    scripted = torch.jit.script(model)
    assert scripted.state_dict().keys() == model.state_dict().keys()
    model.eval()
    scripted.eval()
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=0, atol=1e-6)
    model.train()
    scripted.train()
    out, grads = _gradients(model, x)
    scripted_out, scripted_grads = _gradients(scripted, x)
    torch.testing.assert_close(scripted_out, out, rtol=0, atol=1e-6)
    _assert_same_gradients(scripted_grads, grads, rtol=1e-5, atol=1e-6)


def test_snnmlp_scripted_checks_its_input():
    scripted = torch.jit.script(create_model("snnmlp_t", depths=(1, 1, 1, 1), embed_dim=8))
    with pytest.raises(Exception, match=r"SNNMLP expects images of shape \[N, C, H, W\], got \[3, 32, 32\]"):
        scripted(torch.randn(3, 32, 32))
    with pytest.raises(Exception, match=r"PatchMerging needs even H and W, got \[3, 3\]"):
        scripted(torch.randn(1, 3, 24, 24))


# ---------------------------------------------------------------------------------------------------------------
# the group LIF's TorchScript form is the kernel


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_group_lif_tensors_state_dtype_is_the_spec_rule(dtype):
    x = torch.ones(1, 1, 4, 1, dtype=dtype)
    spec = group_lif_spec(group_size=4, dim=2)
    assert torch.promote_types(x.dtype, torch.float32) == spec.state_dtype_for(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("lif, dim, length", [(4, 2, 10), (4, 3, 8), (3, -1, 7), (1, 2, 5), (4, 3, 3), (-1, 2, 6)])
def test_group_lif_tensors_equals_the_selected_kernel(dtype, lif, dim, length):
    torch.manual_seed(0)
    shape = [2, 3, 5, 5]
    shape[dim] = length
    x = (torch.randn(shape) * 0.5).to(dtype)
    tau, v_th = torch.tensor([0.3]), torch.tensor([0.05])
    spec = group_lif_spec(group_size=lif, dim=dim)
    scripted = torch.jit.script(F.group_lif_tensors)
    expected = F.group_lif(x, tau, v_th, spec)
    for fn in (F.group_lif_tensors, scripted):
        assert torch.equal(fn(x, tau, v_th, lif, dim), expected)  # in place (no autograd)
    # the differentiable form, gradients included
    leaves = [x.detach().requires_grad_(), tau.clone().requires_grad_(), v_th.clone().requires_grad_()]
    y = F.group_lif(leaves[0], leaves[1], leaves[2], spec)
    weights = torch.randn(y.shape).to(dtype)
    expected_grads = torch.autograd.grad((y * weights).sum(), leaves, allow_unused=True)
    for fn in (F.group_lif_tensors, scripted):
        got = fn(leaves[0], leaves[1], leaves[2], lif, dim)
        assert torch.equal(got, y)
        grads = torch.autograd.grad((got * weights).sum(), leaves, allow_unused=True)
        for g, e in zip(grads, expected_grads):
            assert (g is None) == (e is None)
            if e is not None:
                torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize("fix", [False, True], ids=["learnt", "fixed"])
@pytest.mark.parametrize("dim", [2, 3])
def test_group_lif_module_scripts_like_eager(fix, dim):
    torch.manual_seed(0)
    neuron = GroupLIF(lif=4, dim=dim, fix_tau=fix, fix_vth=fix)
    scripted = torch.jit.script(neuron)
    x = torch.randn(2, 3, 9, 10, requires_grad=True)
    y, y_scripted = neuron(x), scripted(x)
    assert torch.equal(y_scripted, y)
    leaves = [x] + ([] if fix else [neuron.tau, neuron.Vth])
    weights = torch.randn(y.shape)
    for g, e in zip(torch.autograd.grad((y_scripted * weights).sum(), leaves),
                    torch.autograd.grad((y * weights).sum(), leaves)):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    with pytest.raises(Exception, match=r"GroupLIF expects x of shape \[N, C, H, W\], got \[3, 9, 10\]"):
        scripted(torch.randn(3, 9, 10))
