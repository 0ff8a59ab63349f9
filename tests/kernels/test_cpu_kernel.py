"""The fused numba CPU kernel against the reference kernel (the oracle of spikeforge.kernels.reference)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from cases import SURROGATES, kernel_case
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeforge import surrogate
from spikeforge.kernels import cpu as cpu_kernel
from spikeforge.kernels import neuron_multi_step
from spikeforge.spec import lif_spec

pytestmark = pytest.mark.skipif(not cpu_kernel.numba_installed(), reason="numba is not installed (spikeforge[fast])")

def run(backend, x, v0, decay, spec, store_v_seq, grads):
    """Forward + backward through the public boundary; returns outputs and the gradients of every input."""
    x = x.detach().clone().requires_grad_(True)
    v0 = v0.detach().clone().requires_grad_(True)
    decay_arg = decay.detach().clone().requires_grad_(True) if isinstance(decay, torch.Tensor) else None
    spike, v_last, v_seq = neuron_multi_step(x, v0, spec, decay_arg, store_v_seq, backend=backend)
    g_spike, g_last, g_seq = grads
    loss = (spike.float() * g_spike).sum() + (v_last * g_last).sum()
    if store_v_seq:
        loss = loss + (v_seq * g_seq).sum()
    loss.backward()
    g_decay = decay_arg.grad if isinstance(decay_arg, torch.Tensor) else None
    return spike, v_last, v_seq, x.grad, v0.grad, g_decay


def assert_close_rel(actual, expected, rel=1e-5, name=""):
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * scale, msg=lambda m: f"{name}: {m}")


def compare(x, v0, decay, spec, store_v_seq, seed):
    gen = torch.Generator().manual_seed(seed)
    shape = x.shape
    grads = (torch.randn(shape, generator=gen), torch.randn(shape[1:], generator=gen),
             torch.randn(shape, generator=gen))
    fused = run("cpu", x, v0, decay, spec, store_v_seq, grads)
    ref = run("reference", x, v0, decay, spec, store_v_seq, grads)
    assert torch.equal(fused[0], ref[0]), "spikes differ"
    assert fused[0].dtype == x.dtype
    assert_close_rel(fused[1], ref[1], name="v_last")
    if store_v_seq:
        assert_close_rel(fused[2], ref[2], name="v_seq")
    assert_close_rel(fused[3].float(), ref[3].float(), rel=1e-5 if x.dtype == torch.float32 else 1e-2,
                     name="grad_x")
    assert_close_rel(fused[4], ref[4], name="grad_v0")
    if isinstance(decay, torch.Tensor):
        # d's gradient is a sum of T·M terms, accumulated in float64 by the fused kernel and step by step in
        # float32 by the reference: compare relative to the summed magnitude of the terms.
        scale = ref[3].abs().sum().item() / max(abs(float(decay)), 1e-3) + 1.0
        assert abs(fused[5].item() - ref[5].item()) <= 1e-5 * scale, (fused[5], ref[5])


options = st.fixed_dictionaries(dict(
    surrogate=st.sampled_from(SURROGATES), v_reset=st.sampled_from([0.0, -0.2, None]), detach_reset=st.booleans(),
    decay_input=st.booleans(), fire_on_tie=st.booleans(), v_threshold=st.sampled_from([1.0, 0.5]),
))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(T=st.integers(1, 6), M=st.integers(1, 70), options=options, decay=st.sampled_from([0.0, 0.5, 1 / 3, 0.9]),
       learnable=st.booleans(), store_v_seq=st.booleans(), seed=st.integers(0, 2**16))
def test_fused_matches_reference(T, M, options, decay, learnable, store_v_seq, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, M, generator=gen) * 1.5 + 0.3
    v0 = torch.randn(M, generator=gen) * 0.5
    spec, d = kernel_case(decay, learnable and decay != 0.0, **options)
    compare(x, v0, d, spec, store_v_seq, seed)


def test_large_layer_across_threads_matches_reference():
    """Big enough to be split over threads and chunks (ragged last chunk included)."""
    gen = torch.Generator().manual_seed(1)
    T, M = 9, 70_001
    x = torch.randn(T, M, generator=gen) + 0.4
    compare(x, torch.zeros(M), *reversed(kernel_case(0.4, True, v_reset=None)), True, 3)
    compare(x, torch.zeros(M), None, lif_spec(2.0, surrogate=surrogate.ATan().spec), False, 4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_match_reference(dtype):
    gen = torch.Generator().manual_seed(2)
    x = (torch.randn(5, 3, 40, generator=gen) + 0.5).to(dtype)
    state = torch.float64 if dtype == torch.float64 else torch.float32
    v0 = torch.zeros(3, 40, dtype=state)
    compare(x, v0, None, lif_spec(2.0), True, 5)
    spike, v_last, _ = neuron_multi_step(x, v0, lif_spec(2.0), backend="cpu")
    assert spike.dtype == dtype and v_last.dtype == state


def test_hand_computed_lif_trace():
    """LIF, τ = 2, decay_input, hard reset to 0, V_th = 1: H_t = V + (X − V)/2."""
    x = torch.tensor([[1.5], [1.5], [0.0], [4.0]])
    spike, v_last, v_seq = neuron_multi_step(x, torch.zeros(1), lif_spec(2.0), None, True, backend="cpu")
    # H: 0.75 → no; 0.75 + 0.375 = 1.125 → fire, V = 0; H = 0 → no; H = 2 → fire.
    assert spike.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    assert v_seq.flatten().tolist() == [0.75, 0.0, 0.0, 0.0]
    assert v_last.item() == 0.0


@pytest.mark.parametrize("v_reset", [0.0, None])
@pytest.mark.parametrize("decay_input", [True, False])
def test_float64_gradcheck_membrane_path(v_reset, decay_input):
    """gradcheck in float64 through the fused kernel: the membrane outputs with detach_reset are smooth in x, v0
    and d away from threshold crossings (spikes themselves are step functions, checked against the reference)."""
    gen = torch.Generator().manual_seed(7)
    x = (torch.randn(4, 6, generator=gen, dtype=torch.float64) * 0.8).requires_grad_(True)
    v0 = (torch.randn(6, generator=gen, dtype=torch.float64) * 0.3).requires_grad_(True)
    decay = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    spec, _ = kernel_case(0.4, True, v_reset=v_reset, detach_reset=True, decay_input=decay_input)

    def membrane(x, v0, decay):
        _, v_last, v_seq = neuron_multi_step(x, v0, spec, decay, True, backend="cpu")
        return v_seq, v_last

    assert torch.autograd.gradcheck(membrane, (x, v0, decay), eps=1e-6, atol=1e-8)


def test_compile_failure_falls_back_to_reference_and_logs(monkeypatch, caplog):
    def broken():
        raise RuntimeError("no LLVM today")

    monkeypatch.setitem(cpu_kernel._state, "kernels", None)
    monkeypatch.setitem(cpu_kernel._state, "error", None)
    monkeypatch.setattr(cpu_kernel, "_build_kernels", broken)
    x = torch.randn(3, 10)
    with caplog.at_level(logging.WARNING, logger="spikeforge.kernels"):
        spike, v_last, _ = neuron_multi_step(x, torch.zeros(10), lif_spec(2.0), backend="cpu")
    assert "no LLVM today" in caplog.text and "reference" in caplog.text
    ref_spike, ref_v, _ = neuron_multi_step(x, torch.zeros(10), lif_spec(2.0), backend="reference")
    assert torch.equal(spike, ref_spike) and torch.equal(v_last, ref_v)
    assert not cpu_kernel.CpuKernel.is_available(torch.device("cpu"))


def test_sigmoid_exp_polynomial_is_accurate():
    """The vectorisable exp behind the Sigmoid / PiecewiseExp / Erf surrogates, over the whole float range."""
    z = torch.linspace(-60.0, 60.0, 20001)
    ones = torch.ones(1, z.numel())
    for sid, p0 in ((surrogate.SIGMOID, 4.0), (surrogate.PIECEWISE_EXP, 1.0), (surrogate.ERF, 0.2)):
        spec, _ = kernel_case(0.0, v_threshold=0.0, v_reset=None, detach_reset=True, decay_input=False,
                              surrogate=surrogate.SurrogateSpec(sid, p0))
        grad = cpu_kernel.CpuKernel.backward((z[None], torch.zeros_like(z)), ones, None, None, 0.0, spec, False)[0]
        expected = surrogate.derivative(sid, z, p0)  # the float32 reference formula
        keep = expected > 1e-30  # away from float32's denormals
        rel = ((grad[0] - expected).abs() / expected)[keep]
        assert rel.max().item() < 1e-5, (sid, rel.max().item())
        assert math.isfinite(grad.abs().max().item())


@pytest.mark.parametrize("sid", ["ATan", "Sigmoid"])
@pytest.mark.parametrize("store_v_seq", [False, True])
def test_expanded_gradients_match_reference(sid, store_v_seq):
    """``out.sum().backward()`` hands the kernel gradients whose time stride is 0 (one row for every step); the
    kernel reads that row with stride 0 instead of materialising it, and must give the reference's gradients."""
    spec = lif_spec(2.0, True, 1.0, 0.0, getattr(surrogate, sid)().spec, False)
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(6, 3, 40, generator=gen) + 0.6
    results = {}
    for backend in ("cpu", "reference"):
        x = x0.clone().requires_grad_(True)
        spike, v_last, v_seq = neuron_multi_step(x, torch.zeros(3, 40), spec, None, store_v_seq, backend=backend)
        loss = spike.sum() + (v_seq.sum() if store_v_seq else 0.0)
        loss.backward()
        results[backend] = (spike, x.grad)
    assert torch.equal(results["cpu"][0], results["reference"][0])
    assert_close_rel(results["cpu"][1], results["reference"][1], name="grad_x")
