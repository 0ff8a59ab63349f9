"""kernels.pooling: non-overlapping average pooling, the same floats as F.avg_pool2d (numba and torch paths)."""
import pytest
import torch
import torch.nn.functional as F

from spikeforge import functional
from spikeforge.kernels import pooling
from spikeforge.kernels.cpu import numba_installed


@pytest.fixture(params=["numba", "torch"])
def path(request, monkeypatch):
    if request.param == "numba":
        if not numba_installed():
            pytest.skip("numba is not installed (spikeforge[fast])")
    else:
        monkeypatch.setattr(pooling, "_KERNEL", False)   # the strided-view fallback
    return request.param


@pytest.mark.parametrize("kernel", [2, 3, (2, 3), (1, 4)])
@pytest.mark.parametrize("shape", [(4, 8, 26, 26), (2, 3, 11, 7), (1, 1, 5, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bit_identical_to_aten(path, kernel, shape, dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=dtype) * 3
    x[0, 0, 0, :] = -0.0
    ref = F.avg_pool2d(x, kernel)
    out = functional.avg_pool2d_tiles(x, kernel)
    assert out.shape == ref.shape and out.dtype == dtype
    assert torch.equal(out, ref)
    assert torch.equal(torch.signbit(out), torch.signbit(ref))   # -0.0 windows come out as ATen's +0.0


def test_spike_frames_and_unsupported_inputs(path):
    x = (torch.rand(6, 4, 13, 13, generator=torch.Generator().manual_seed(1)) < 0.3).float() * 4.9572
    assert torch.equal(functional.avg_pool2d_tiles(x, 2), F.avg_pool2d(x, 2))
    for case in (x.contiguous(memory_format=torch.channels_last), x.to(torch.bfloat16), x[:, :, :1, :1]):
        if case.shape[-1] < 2:
            with pytest.raises(RuntimeError):
                F.avg_pool2d(case, 2)
            continue
        assert torch.equal(functional.avg_pool2d_tiles(case, 2), F.avg_pool2d(case, 2))
    xr = x.clone().requires_grad_(True)
    functional.avg_pool2d_tiles(xr, 2).sum().backward()
    assert xr.grad is not None
