"""The conversion-IF family: fused numba loop against the in-place PyTorch reference, and one backend vocabulary."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge import ann2snn, functional
from spikeforge.kernels import ConversionCpuKernel, ConversionReferenceKernel, select_kernel
from spikeforge.kernels.cpu import numba_installed
from spikeforge.neuron import ConversionIFNode
from spikeforge.spec import conversion_if_spec

needs_numba = pytest.mark.skipif(not numba_installed(), reason="numba is not installed (spikeforge[fast])")


def hand_trace(xs, theta, half, signed, emit):
    """The docstring's equations, one scalar neuron, in plain Python."""
    v, count, out = (theta / 2 if half else 0.0), 0, []
    for x in xs:
        v += x
        s = 1 if v >= theta else (-1 if signed and v < 0 and count > 0 else 0)
        v -= s * theta
        count += s
        out.append(s * theta if emit else float(s))
    return out, v


@pytest.mark.parametrize("half, signed, emit", [(False, False, False), (True, False, True), (False, True, True)])
@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=needs_numba)])
def test_hand_trace(backend, half, signed, emit):
    xs = [0.6, 0.6, -1.5, 0.2, 1.9, -0.4]
    node = ConversionIFNode(1.0, half_threshold=half, signed=signed, emit_threshold=emit, step_mode="m",
                            backend=backend)
    with torch.no_grad():
        out = node(torch.tensor(xs).view(-1, 1))
    expected, v = hand_trace(xs, 1.0, half, signed, emit)
    assert out.flatten().tolist() == pytest.approx(expected)
    assert node.v.item() == pytest.approx(v)


@needs_numba
@settings(max_examples=40, deadline=None)
@given(half=st.booleans(), signed=st.booleans(), emit=st.booleans(), static=st.booleans(),
       per_channel=st.booleans(), expanded=st.booleans(), T=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_fused_matches_reference(half, signed, emit, static, per_channel, expanded, T, seed):
    """``expanded`` False hands a layer-wise threshold over as the 0-d tensor a module holds (the kernel's
    single-threshold loop); True broadcast to the frame (its per-neuron loop)."""
    gen = torch.Generator().manual_seed(seed)
    theta = (torch.rand(1, 3, 1, generator=gen) + 0.25) if per_channel else torch.tensor(0.8)
    x_seq = torch.randn(1 if static else T, 2, 3, 5, generator=gen)
    outs = []
    for kernel in (ConversionCpuKernel, ConversionReferenceKernel):
        spec = conversion_if_spec(1.0, per_channel, half, signed, emit)
        v0 = (0.5 * theta if half else torch.zeros_like(theta)).expand(2, 3, 5).contiguous().clone()
        count = torch.zeros(2, 3, 5) if signed else None
        theta_arg = theta.expand(2, 3, 5) if per_channel or expanded else theta
        out = kernel.run(x_seq, T, static, v0, count, theta_arg, spec)
        outs.append((out, v0, count))
    (fo, fv, fc), (ro, rv, rc) = outs
    torch.testing.assert_close(fo, ro, rtol=0, atol=1e-6)
    torch.testing.assert_close(fv, rv, rtol=0, atol=1e-5)
    if signed:
        assert torch.equal(fc, rc)


@needs_numba
def test_gradient_or_other_dtypes_use_the_reference_loop():
    assert ConversionCpuKernel.supports(torch.zeros(2))
    assert not ConversionCpuKernel.supports(torch.zeros(2, dtype=torch.float64))
    assert not ConversionCpuKernel.supports(torch.zeros(2, requires_grad=True))


def _converted_net():
    torch.manual_seed(0)
    ann = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    data = [(torch.rand(16, 4), torch.zeros(16, dtype=torch.long))]
    return ann2snn.Converter(dataloader=data, mode="max")(ann)


@needs_numba
def test_set_backend_reaches_the_conversion_neurons(monkeypatch):
    """functional.set_backend(snn, 'reference') used to leave the converted net's IF neurons on numba."""
    snn = _converted_net()
    used = []
    for kernel in (ConversionCpuKernel, ConversionReferenceKernel):
        original = kernel.run
        monkeypatch.setattr(kernel, "run", staticmethod(
            lambda *a, _k=kernel, _o=original: (used.append(_k.name), _o(*a))[1]))
    x = torch.rand(5, 4)
    with torch.no_grad():
        before = snn(x)
        functional.reset_net(snn)
        assert used and set(used) == {"cpu"}
        used.clear()
        functional.set_backend(snn, "reference")
        after = snn(x)
    assert used and set(used) == {"reference"}
    torch.testing.assert_close(before, after, rtol=0, atol=1e-6)
    nodes = [m for m in snn.modules() if isinstance(m, ConversionIFNode)]
    assert nodes and all(m.backend == "reference" for m in nodes)


def test_set_backend_rejects_unknown_names():
    with pytest.raises(ValueError, match="not a known neuron backend"):
        functional.set_backend(_converted_net(), "numba")


def test_triton_is_not_a_conversion_kernel_and_falls_back():
    spec = conversion_if_spec()
    assert select_kernel(torch.device("cpu"), "triton", spec) is ConversionReferenceKernel


def test_cached_full_threshold_follows_in_place_changes():
    """The frame-sized threshold kept between steps is rebuilt when the threshold changes in place or the frame
    shape changes, so a stale copy never decides a spike."""
    from spikeforge.kernels.conversion import _full_theta

    theta = torch.tensor([1.0, 2.0]).reshape(2, 1)
    frame = torch.zeros(3, 2, 4)
    first = _full_theta(theta, frame)
    assert torch.equal(first, theta.expand(3, 2, 4))
    assert _full_theta(theta, frame) is first  # reused between steps
    theta.mul_(3.0)
    assert torch.equal(_full_theta(theta, frame), theta.expand(3, 2, 4))
    assert torch.equal(_full_theta(theta, torch.zeros(5, 2, 4)), theta.expand(5, 2, 4))
