"""The Triton kernel against the reference, on CPU tensors through Triton's interpreter (TRITON_INTERPRET=1).

Small shapes only: the interpreter executes each program in Python with numpy. On a CUDA machine the same
comparisons run on the GPU as well.
"""

from __future__ import annotations

import sys

import pytest
import torch
from cases import SURROGATE_IDS, SURROGATES, kernel_case

from spikeforge.kernels import neuron_multi_step
from spikeforge.kernels import triton as triton_kernel
from spikeforge.spec import lif_spec

pytestmark = pytest.mark.skipif(not triton_kernel.triton_installed(), reason="triton is not installed")

def _devices():
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    return devices


@pytest.fixture
def device(request, monkeypatch):
    name = request.param
    if name == "cpu":
        jit_module = sys.modules.get("spikeforge.kernels._triton_jit")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        if jit_module is not None and type(jit_module.forward_kernel).__name__ != "InterpretedFunction":
            pytest.skip("the Triton kernels were already compiled for the GPU in this process")
    return torch.device(name)


def run(backend, x, v0, decay, spec, grads):
    x = x.detach().clone().requires_grad_(True)
    v0 = v0.detach().clone().requires_grad_(True)
    decay_arg = decay.detach().clone().requires_grad_(True) if isinstance(decay, torch.Tensor) else None
    spike, v_last, v_seq = neuron_multi_step(x, v0, spec, decay_arg, True, backend=backend)
    loss = (spike.float() * grads[0]).sum() + (v_last * grads[1]).sum() + (v_seq * grads[2]).sum()
    loss.backward()
    return spike, v_last, v_seq, x.grad, v0.grad, (decay_arg.grad if isinstance(decay, torch.Tensor) else None)


def close(a, b, rel=1e-5):
    scale = max(1.0, b.abs().max().item())
    torch.testing.assert_close(a.float(), b.float(), rtol=rel, atol=rel * scale)


@pytest.mark.parametrize("device", _devices(), indirect=True)
@pytest.mark.parametrize("sg", SURROGATES, ids=SURROGATE_IDS)
@pytest.mark.parametrize("v_reset,detach_reset,decay_input", [(0.0, False, True), (None, True, False),
                                                              (-0.1, True, True), (None, False, True)])
def test_triton_matches_reference(device, sg, v_reset, detach_reset, decay_input):
    gen = torch.Generator().manual_seed(int(sg.kind) * 7 + int(detach_reset))
    T, M = 4, 37
    options = dict(v_reset=v_reset, detach_reset=detach_reset, decay_input=decay_input, surrogate=sg)
    x = (torch.randn(T, M, generator=gen) * 1.5 + 0.3).to(device)
    v0 = (torch.randn(M, generator=gen) * 0.4).to(device)
    grads = [g.to(device) for g in (torch.randn(T, M, generator=gen), torch.randn(M, generator=gen),
                                    torch.randn(T, M, generator=gen))]
    for spec, decay in (kernel_case(0.0, **options), kernel_case(0.4, True, **options)):
        decay = decay.to(device) if decay is not None else None
        fused = run("triton", x, v0, decay, spec, grads)
        ref = run("reference", x, v0, decay, spec, grads)
        assert torch.equal(fused[0], ref[0])
        for a, b in zip(fused[1:5], ref[1:5]):
            close(a, b)
        if fused[5] is not None:
            close(fused[5], ref[5], rel=1e-4)


@pytest.mark.parametrize("device", _devices(), indirect=True)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_triton_dtypes(device, dtype):
    gen = torch.Generator().manual_seed(11)
    x = (torch.randn(3, 50, generator=gen) + 0.5).to(device=device, dtype=dtype)
    state = torch.float64 if dtype == torch.float64 else torch.float32
    v0 = torch.zeros(50, dtype=state, device=device)
    grads = [torch.ones(3, 50, device=device), torch.ones(50, device=device, dtype=state),
             torch.zeros(3, 50, device=device, dtype=state)]
    fused = run("triton", x, v0, None, lif_spec(2.0), grads)
    ref = run("reference", x, v0, None, lif_spec(2.0), grads)
    assert fused[0].dtype == dtype and torch.equal(fused[0], ref[0])
    assert fused[1].dtype == state
    close(fused[1], ref[1])
    close(fused[3], ref[3], rel=1e-5 if dtype == torch.float64 else 1e-2)
