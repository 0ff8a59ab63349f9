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


# ------------------------------------------------------------------------------------------ the buffer cache
needs_cache = pytest.mark.skipif(_alloc._cache is None, reason="the output buffer cache is off here "
                                 "(SPIKEFORGE_BUFFER_CACHE_MB=0, or an interpreter without exact reference counts)")


def _cache(limit_mib=64):
    return _alloc.BufferCache(limit_mib << 20, huge_pages=False)


@needs_cache
def test_a_freed_output_is_handed_out_again_and_a_live_one_never():
    cache = _cache()
    a = cache.empty((4, 1 << 16), torch.float32)   # 1 MiB
    a.fill_(3.0)
    b = cache.empty((4, 1 << 16), torch.float32)
    assert b.data_ptr() != a.data_ptr()             # a is alive: its memory is not reused
    address = a.data_ptr()
    del a
    c = cache.empty((4, 1 << 16), torch.float32)
    assert c.data_ptr() == address                  # freed: the same mapping comes back, no new one
    assert cache.stats()["mappings"] == 2


@needs_cache
@pytest.mark.parametrize("holder", ["view", "numpy", "slice", "autograd"])
def test_anything_still_over_the_memory_keeps_it_out_of_the_cache(holder):
    cache = _cache()
    out = cache.empty((2, 1 << 17), torch.float32)
    address = out.data_ptr()
    if holder == "view":
        keep = out.view(-1)
    elif holder == "numpy":
        keep = out.numpy()
    elif holder == "slice":
        keep = out[1]
    else:  # a graph that saved it
        w = torch.ones(1, requires_grad=True)
        keep = (out * w).sum().grad_fn
    del out
    again = cache.empty((2, 1 << 17), torch.float32)
    assert again.data_ptr() != address
    del keep
    assert cache.empty((2, 1 << 17), torch.float32).data_ptr() == address   # the last holder is gone


@needs_cache
def test_reuse_does_not_leak_old_values_into_kernel_results():
    """The kernels overwrite every element of their outputs: a reused buffer full of garbage changes nothing."""
    pytest.importorskip("numba")
    from spikeforge import neuron, surrogate

    x = torch.randn(8, 4, 1 << 14, generator=torch.Generator().manual_seed(1)) + 0.5   # 2 MiB: cached
    node = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.Sigmoid(), step_mode="m", backend="cpu")

    def run():
        node.reset()
        xr = x.clone().requires_grad_(True)
        s = node(xr)
        s.backward(torch.full_like(s, 0.5))
        return s.detach().clone(), xr.grad.clone(), node.v.clone()

    first = run()
    for _ in range(3):                               # dirty whatever is free in the cache
        junk = _alloc.empty((8, 4 << 14), torch.float32)
        junk.fill_(float("nan"))
        del junk
    second = run()
    ref = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.Sigmoid(), step_mode="m", backend="reference")
    xr = x.clone().requires_grad_(True)
    s = ref(xr)
    s.backward(torch.full_like(s, 0.5))
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    assert torch.equal(first[0], s.detach())
    torch.testing.assert_close(first[1], xr.grad, rtol=1e-5, atol=1e-6)


@needs_cache
def test_free_mappings_beyond_the_limit_are_unmapped_oldest_first():
    cache = _alloc.BufferCache(3 << 20, huge_pages=False)    # keep at most 3 MiB free
    held = [cache.empty((1 << 18,), torch.float32) for _ in range(4)]   # four 1 MiB buffers, oldest first
    addresses = [t.data_ptr() for t in held]
    assert cache.stats() == {"in_use_bytes": 4 << 20, "free_bytes": 0, "mappings": 4}
    del held
    other = cache.empty((1 << 19,), torch.float32)   # a new 2 MiB size: mapped, then the trim runs
    assert cache.stats() == {"in_use_bytes": 2 << 20, "free_bytes": 3 << 20, "mappings": 4}
    assert cache.empty((1 << 18,), torch.float32).data_ptr() in addresses[1:]   # the oldest one went
    del other
    assert cache.release_free() == 5 << 20
    assert cache.stats()["mappings"] == 0


@needs_cache
def test_sizes_are_rounded_so_nearby_requests_share_a_mapping():
    cache = _cache()
    a = cache.empty((3 << 20,), torch.uint8)          # 3 MiB -> a 4 MiB mapping
    address = a.data_ptr()
    del a
    b = cache.empty((1000, 1000), torch.float32)      # 3.8 MiB -> the same 4 MiB class
    assert b.data_ptr() == address and b.shape == (1000, 1000) and b.is_contiguous()


@needs_cache
def test_a_forked_child_does_not_hand_out_its_parents_buffers():
    import os

    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    cache = _cache()
    parent = cache.empty((1 << 18,), torch.float32)
    parent.fill_(1.0)
    address = parent.data_ptr()
    del parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a fresh cache, and writes to its memory never reach the parent
        try:
            child = cache.empty((1 << 18,), torch.float32)
            fresh = bool((child.numpy() == 0).all())   # a new mapping is zeros; the inherited one holds 1s
            child.numpy().fill(7.0)   # numpy, not torch: torch's OpenMP pool does not survive a fork
            os.write(write, b"1" if fresh else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"
    again = cache.empty((1 << 18,), torch.float32)
    assert again.data_ptr() == address and torch.all(again == 1.0)   # private memory: the child's 7s stayed there


def test_the_cache_limit_setting_is_checked(monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_BUFFER_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="SPIKEFORGE_BUFFER_CACHE_MB"):
        _alloc._cache_limit_bytes()
    monkeypatch.setenv("SPIKEFORGE_BUFFER_CACHE_MB", "0")
    assert _alloc._make_cache() is None
    monkeypatch.setenv("SPIKEFORGE_BUFFER_CACHE_MB", "16")
    assert _alloc._cache_limit_bytes() == 16 << 20


def test_empty_cache_gives_back_what_nothing_uses():
    out = _alloc.empty((1 << 20,), torch.float32)     # 4 MiB, from the cache when it is on
    del out
    released = _alloc.empty_cache()
    assert released >= 0
    assert _alloc.cache_stats()["free_bytes"] == 0
