"""Kernel selection (default, argument, environment variable, fallback) and the torch.library custom op."""

from __future__ import annotations

import logging

import pytest
import torch

from spikeforge import neuron
from spikeforge.kernels import (
    CpuKernel,
    ReferenceKernel,
    TritonKernel,
    dispatch,
    get_kernel,
    neuron_multi_step,
)
from spikeforge.kernels import cpu as cpu_kernel
from spikeforge.spec import KernelFamily, lif_spec, plif_spec

SPEC = lif_spec(2.0)


def select_kernel(device, backend=None, spec=SPEC):
    return dispatch.select_kernel(device, backend, spec)

CPU = torch.device("cpu")
needs_numba = pytest.mark.skipif(not cpu_kernel.numba_installed(), reason="numba is not installed")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(dispatch, "_fallback_logged", set())


@needs_numba
def test_cpu_default_is_the_fused_kernel():
    assert select_kernel(CPU) is CpuKernel
    assert select_kernel(CPU, "auto") is CpuKernel
    assert select_kernel(CPU, "torch") is CpuKernel  # SpikingJelly's name means "auto"


def test_cuda_prefers_triton():
    assert dispatch._PREFERENCE[KernelFamily.CHARGE_FIRE_RESET]["cuda"][0] == "triton"
    assert get_kernel("triton") is TritonKernel
    with pytest.raises(KeyError, match="registered"):
        get_kernel("triton", KernelFamily.GROUP_LIF)


def test_argument_and_environment_override(monkeypatch):
    assert select_kernel(CPU, "reference") is ReferenceKernel
    monkeypatch.setenv(dispatch.ENV_VAR, "reference")
    assert select_kernel(CPU) is ReferenceKernel
    if cpu_kernel.numba_installed():
        assert select_kernel(CPU, "cpu") is CpuKernel  # the argument wins over the environment


def test_unknown_backend_names_the_source(monkeypatch):
    with pytest.raises(ValueError, match="backend='nope'"):
        select_kernel(CPU, "nope")
    monkeypatch.setenv(dispatch.ENV_VAR, "nope")
    with pytest.raises(ValueError, match="SPIKEFORGE_BACKEND"):
        select_kernel(CPU)


def test_unavailable_fused_kernel_falls_back_with_one_log_line(monkeypatch, caplog):
    monkeypatch.setattr(CpuKernel, "unavailable_reason", staticmethod(lambda device: "needs numba"))
    with caplog.at_level(logging.WARNING, logger="spikeforge.kernels"):
        assert select_kernel(CPU) is ReferenceKernel
        assert select_kernel(CPU) is ReferenceKernel
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "'cpu'" in lines[0] and "needs numba" in lines[0] and "reference" in lines[0]


def test_explicit_triton_on_cpu_falls_back_and_logs(caplog):
    with caplog.at_level(logging.WARNING, logger="spikeforge.kernels"):
        assert select_kernel(CPU, "triton") is ReferenceKernel
    assert "'triton'" in caplog.text


def _kernel_used(monkeypatch, module, x):
    """Which kernel's forward ran for one call of ``module`` (spied on the kernel classes)."""
    used = []
    for kernel in (CpuKernel, ReferenceKernel):
        original = kernel.forward

        def spy(*args, _original=original, _name=kernel.name, **kwargs):
            used.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(kernel, "forward", staticmethod(spy))
    module(x)
    return used


@needs_numba
@pytest.mark.parametrize("make", [lambda: neuron.IFNode(step_mode="m"), lambda: neuron.LIFNode(step_mode="m"),
                                  lambda: neuron.ParametricLIFNode(step_mode="m"), lambda: neuron.LIFNode()])
def test_neuron_modules_use_the_fused_kernel_by_default(monkeypatch, make):
    x = torch.rand(4, 2, 8) if make().step_mode == "m" else torch.rand(2, 8)
    assert _kernel_used(monkeypatch, make(), x) == ["cpu"]


@needs_numba
def test_module_backend_argument_and_env_reach_the_kernel(monkeypatch):
    x = torch.rand(3, 2, 5)
    assert _kernel_used(monkeypatch, neuron.LIFNode(step_mode="m", backend="reference"), x) == ["reference"]
    monkeypatch.setenv(dispatch.ENV_VAR, "reference")
    assert _kernel_used(monkeypatch, neuron.LIFNode(step_mode="m"), x) == ["reference"]


def _count_neuron_ops(fn, *args):
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    out = torch.compile(fn, backend=backend, fullgraph=True)(*args)
    targets = [node.target for gm in graphs for node in gm.graph.nodes if node.op == "call_function"]
    return out, targets.count(torch.ops.spikeforge.neuron_multi_step.default), len(graphs)


@needs_numba
def test_torch_compile_sees_one_op_per_multi_step_call():
    torch._dynamo.reset()
    net = torch.nn.Sequential(torch.nn.Linear(6, 10), neuron.ParametricLIFNode(step_mode="m"),
                              torch.nn.Linear(10, 4), neuron.LIFNode(step_mode="m"))
    x = torch.randn(5, 3, 6)
    out, n_ops, n_graphs = _count_neuron_ops(net, x)
    assert n_graphs == 1 and n_ops == 2
    for module in net:
        if hasattr(module, "reset"):
            module.reset()
    expected = net(x)
    assert torch.equal(out, expected)


@needs_numba
def test_compiled_gradients_match_eager():
    torch._dynamo.reset()
    w = torch.tensor(0.2, requires_grad=True)
    x = torch.randn(6, 40, requires_grad=True)
    spec = plif_spec(None, v_reset=None)

    def loss(x, w):
        spike, v_last, _ = neuron_multi_step(x * 1.5, torch.zeros(40), spec, torch.sigmoid(w))
        return (spike * torch.arange(40.0)).sum() + v_last.square().sum()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    gx_c, gw_c = torch.autograd.grad(compiled(x, w), (x, w))
    gx_e, gw_e = torch.autograd.grad(loss(x, w), (x, w))
    torch.testing.assert_close(gx_c, gx_e)
    torch.testing.assert_close(gw_c, gw_e)


@needs_numba
def test_custom_op_registration_passes_opcheck():
    x = torch.randn(4, 12, requires_grad=True)
    v0 = torch.randn(12, requires_grad=True)
    decay = torch.tensor(0.3, requires_grad=True)
    args = (x, v0, decay, plif_spec(None).key, True, "cpu")
    torch.library.opcheck(torch.ops.spikeforge.neuron_multi_step.default, args)
    args = (x, v0, None, lif_spec(3.0, v_reset=None).key, False, "cpu")
    torch.library.opcheck(torch.ops.spikeforge.neuron_multi_step.default, args)


def test_only_functional_calls_into_the_kernels():
    """One road: module → functional → dispatch → kernel. No other spikeforge module imports spikeforge.kernels."""
    import ast
    from pathlib import Path

    import spikeforge

    root = Path(spikeforge.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("kernels/") or rel == "functional.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                depth = rel.count("/") + 1  # '..' from a sub-package reaches the package root
                if node.level == 0 and module.startswith("spikeforge.kernels"):
                    names.append(module)
                elif node.level > 0 and node.level <= depth:
                    base = rel.split("/")[: -node.level]
                    target = ".".join([*base, *module.split(".")]) if module else ".".join(base)
                    if target.startswith("kernels") or (not module and any(a.name == "kernels" for a in node.names)):
                        names.append(target or "kernels")
            elif isinstance(node, ast.Import):
                names += [a.name for a in node.names if a.name.startswith("spikeforge.kernels")]
            offenders += [f"{rel}: {name}" for name in names]
    assert offenders == []


@needs_numba
def test_compiled_conv_snn_training_step_keeps_one_op_per_neuron_call():
    """SpikingJelly's conv_fashion_mnist net (4 IF layers) compiled for training: one fused neuron op per layer in
    the forward graph and one backward op per layer in the backward graph, in one graph, same gradients as
    eager."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    from spikeforge import functional
    from spikeforge.training.tutorial_nets import CSNN

    torch._dynamo.reset()
    captured = {"fw": [], "bw": []}

    def keep(kind):
        def compiler(gm, example_inputs):
            captured[kind].append(gm)
            return make_boxed_func(gm.forward)
        return compiler

    torch.manual_seed(0)
    net = CSNN(T=2, channels=4)
    x = torch.rand(3, 1, 28, 28)
    compiled = torch.compile(net, backend=aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw")),
                             fullgraph=True)
    compiled(x).square().sum().backward()
    grads_compiled = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    functional.reset_net(net)
    net(x).square().sum().backward()

    def count(kind, op):
        return sum(node.target is op for gm in captured[kind] for node in gm.graph.nodes)

    assert len(captured["fw"]) == 1 and len(captured["bw"]) == 1
    assert count("fw", torch.ops.spikeforge.neuron_multi_step.default) == 4
    assert count("bw", torch.ops.spikeforge.neuron_multi_step_backward.default) == 4
    for got, want in zip(grads_compiled, (p.grad for p in net.parameters())):
        torch.testing.assert_close(got, want)
