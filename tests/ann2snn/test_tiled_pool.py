"""TiledAvgPool2d: the converter's non-overlapping average pooling, bit-identical to nn.AvgPool2d."""
import copy

import pytest
import torch
import torch.nn as nn

from spikeforge import functional
from spikeforge.ann2snn import TiledAvgPool2d

from .helpers import convert, randomise_bn


@pytest.mark.parametrize("kernel", [2, 3, (2, 2), (3, 2)])
@pytest.mark.parametrize("shape", [(8, 32, 26, 26), (16, 32, 11, 11), (4, 64, 17, 30), (3, 5, 3, 3)])
def test_same_floats_as_aten(kernel, shape):
    gen = torch.Generator().manual_seed(0)
    pool = nn.AvgPool2d(kernel)
    tiled = TiledAvgPool2d.from_pool(pool)
    for x in (torch.randn(shape, generator=gen), (torch.rand(shape, generator=gen) < 0.3).float() * 4.9572,
              torch.randn(shape, generator=gen, dtype=torch.float64)):
        if min(x.shape[-2:]) < max(kernel if isinstance(kernel, tuple) else (kernel,)):
            continue
        assert torch.equal(tiled(x), pool(x))


def test_other_inputs_take_the_plain_path():
    pool, tiled = nn.AvgPool2d(2), TiledAvgPool2d.from_pool(nn.AvgPool2d(2))
    x = torch.randn(2, 64, 32, 32)
    for case in (x.contiguous(memory_format=torch.channels_last), x[:, :, :, ::1].transpose(2, 3),
                 x.to(torch.bfloat16), x[0]):
        assert torch.equal(tiled(case), pool(case))
    xr = x.clone().requires_grad_(True)
    tiled(xr).sum().backward()
    assert torch.allclose(xr.grad, torch.full_like(x, 0.25))


def test_only_non_overlapping_unpadded_pools_qualify():
    assert TiledAvgPool2d.qualifies(nn.AvgPool2d(2)) and TiledAvgPool2d.qualifies(nn.AvgPool2d((2, 3), (2, 3)))
    for pool in (nn.AvgPool2d(3, 2), nn.AvgPool2d(2, padding=1), nn.AvgPool2d(2, ceil_mode=True),
                 nn.AvgPool2d(2, divisor_override=3), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1)):
        assert not TiledAvgPool2d.qualifies(pool)


def test_converter_swaps_pools_without_changing_the_outputs():
    torch.manual_seed(0)
    cnn = randomise_bn(nn.Sequential(nn.Conv2d(1, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2),
                                     nn.Conv2d(32, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(3, 2),
                                     nn.Flatten(), nn.LazyLinear(5), nn.ReLU()))
    x = torch.rand(64, 1, 30, 30)
    cnn(x)
    snn = convert(cnn, x)
    pools = [m for m in snn.modules() if isinstance(m, nn.AvgPool2d)]
    assert [type(m) for m in pools] == [TiledAvgPool2d, nn.AvgPool2d]   # the overlapping one stays as it was
    plain = copy.deepcopy(snn)
    for name, module in list(plain.named_modules()):
        if isinstance(module, TiledAvgPool2d):
            parent, _, child = name.rpartition(".")
            setattr(plain.get_submodule(parent), child, nn.AvgPool2d(2))
    assert snn.state_dict().keys() == plain.state_dict().keys()
    with torch.no_grad():
        for net in (snn, plain):
            functional.reset_net(net)
        for _ in range(8):
            assert torch.equal(snn(x), plain(x))
        functional.reset_net(snn), functional.reset_net(plain)
        assert torch.equal(snn.run_static(x, 6), plain.run_static(x, 6))
