"""The CPU kernels' output buffers: plain tensors, with transparent huge pages asked for on Linux (madvise)."""
import re

import pytest
import torch

from spikeforge.kernels import _alloc


def test_thp_mode_parses_the_bracketed_choice(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert _alloc.thp_mode(str(path)) == "madvise"
    path.write_text("[always] madvise never\n")
    assert _alloc.thp_mode(str(path)) == "always"
    assert _alloc.thp_mode(str(tmp_path / "missing")) == "never"


@pytest.mark.parametrize("shape,dtype", [((3, 5), torch.float32), ((8, 1 << 20), torch.float32),
                                         ((4, 1 << 20), torch.float16), ((0, 7), torch.float64)])
def test_empty_is_a_plain_contiguous_tensor(shape, dtype):
    out = _alloc.empty(shape, dtype)
    assert out.shape == shape and out.dtype == dtype and out.is_contiguous() and out.device.type == "cpu"
    out.fill_(1)
    assert torch.all(out == 1)


def _anon_huge_kib(address: int) -> int | None:
    """AnonHugePages of the mapping that holds ``address``, from /proc/self/smaps."""
    try:
        text = open("/proc/self/smaps").read()
    except OSError:
        return None
    found = False
    for line in text.splitlines():
        head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if head:
            found = int(head.group(1), 16) <= address < int(head.group(2), 16)
        elif found and line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    return None


@pytest.mark.skipif(_alloc._madvise is None, reason="transparent huge pages are not in 'madvise' mode here "
                                                    "(or SPIKEFORGE_HUGEPAGES=0), so nothing is asked for")
def test_large_outputs_are_backed_by_huge_pages():
    out = _alloc.empty((64, 1 << 18), torch.float32)   # 64 MiB: its own mapping
    out.fill_(0.5)                                      # first touch after the madvise
    kib = _anon_huge_kib(out.data_ptr() + out.numel() * 2)
    if kib is None:
        pytest.skip("/proc/self/smaps is not readable")
    assert kib >= 2048, f"no huge page under a 64 MiB kernel output (AnonHugePages {kib} kB)"


def test_the_neuron_kernel_outputs_match_with_and_without_huge_pages(monkeypatch):
    from spikeforge import neuron, surrogate

    x = torch.randn(16, 4, 1 << 15, generator=torch.Generator().manual_seed(0)) + 0.5   # 8 MiB input
    def run():
        node = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m", backend="cpu")
        xr = x.clone().requires_grad_(True)
        s = node(xr)
        s.backward(torch.ones_like(s))
        return s.detach(), xr.grad
    pytest.importorskip("numba")
    with_pages = run()
    monkeypatch.setattr(_alloc, "_madvise", None)
    without = run()
    assert torch.equal(with_pages[0], without[0]) and torch.equal(with_pages[1], without[1])
