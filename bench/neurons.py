"""Multi-step neuron benchmark: spikeforge (reference and fused) against SpikingJelly 2.0 and snnTorch 1.0.

Run it where the peers are installed, with this repository importable (it puts its parent on sys.path):

    /path/to/peer-venv/bin/python bench/neurons.py                       # full grid (long on a laptop)
    /path/to/peer-venv/bin/python bench/neurons.py --T 32 128 --N 4096 --neurons LIF
    /path/to/peer-venv/bin/python bench/neurons.py --memory-only         # conv-SNN peak training memory

In one process and on the same input, every implementation runs IF / LIF / ParametricLIF (spikeforge's
defaults: τ = 2, V_th = 1, hard reset to 0, Sigmoid(α = 4) surrogate; the peers configured alike) over
[T, 32, N] inputs, forward only (no autograd) and forward + backward (a fixed random gradient on the spikes).
It prints the median milliseconds, the ratio of each peer's time to spikeforge's fused time (> 1: the peer is
slower), the achieved bandwidth of the fused kernel, and the peak memory of one forward + backward.

* Bandwidth: the bytes a perfect fused pass must move (forward: read X, write S = 8 B per element in float32;
  forward + backward: also read X and ∂L/∂S and write ∂L/∂X = 20 B), divided by the measured time, next to
  the copy bandwidth of ``Tensor.copy_`` measured on a tensor of the same size.
* Peak memory: glibc is told (``mallopt``) to serve every block above 64 KiB with its own mmap, so freeing a
  tensor returns its pages at once and the resident set follows the live tensors; the peak resident set
  (VmHWM, reset through /proc/self/clear_refs before each measurement) minus the resident set before the
  step is the step's peak memory. Linux only; elsewhere the column says n/a.
* The conv SNN (``--memory-only`` or the last table): [T = 32, B = 32, 1, 28, 28] input, Conv(1→16, 3) → BN →
  neuron → MaxPool(2) → Conv(16→32, 3) → BN → neuron → MaxPool(2) → Flatten → Linear(1568→10) → neuron, each
  library with its own layers and neurons; the peak memory of one training step (forward, loss, backward).

Timed runs on shared machines should be serialised, e.g. ``flock /tmp/spikeforge-bench.lock python ...``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikeforge import layer as sf_layer  # noqa: E402
from spikeforge import neuron as sf_neuron  # noqa: E402

TAU = 2.0
BATCH = 32


# ----------------------------------------------------------------------------------------------- memory probe
def _limit_malloc_caching() -> bool:
    """Make glibc mmap every block over 64 KiB (and unmap it on free), so RSS tracks live tensors."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 64 * 1024)) and bool(libc.mallopt(m_trim_threshold, 0))
    except OSError:
        return False


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak resident memory (MiB) above the level at entry; ``None`` where /proc is unavailable."""

    def __enter__(self):
        gc.collect()
        self.base = _status_kib("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.base = None
        return self

    def __exit__(self, *exc):
        peak = _status_kib("VmHWM")
        self.mib = None if self.base is None or peak is None else (peak - self.base) / 1024.0


# --------------------------------------------------------------------------------------------- implementations
def _spikeforge(kind: str, backend: str | None):
    def make():
        if kind == "IF":
            return sf_neuron.IFNode(step_mode="m", backend=backend)
        if kind == "LIF":
            return sf_neuron.LIFNode(tau=TAU, step_mode="m", backend=backend)
        return sf_neuron.ParametricLIFNode(init_tau=TAU, step_mode="m", backend=backend)

    def run(module, x_seq):
        module.reset()
        return module(x_seq)

    return make, run


def _spikingjelly(kind: str):
    from spikingjelly.activation_based import neuron as sj_neuron
    from spikingjelly.activation_based import surrogate as sj_surrogate

    def make():
        common = dict(surrogate_function=sj_surrogate.Sigmoid(alpha=4.0), step_mode="m")
        if kind == "IF":
            return sj_neuron.IFNode(**common)
        if kind == "LIF":
            return sj_neuron.LIFNode(tau=TAU, **common)
        return sj_neuron.ParametricLIFNode(init_tau=TAU, **common)

    def run(module, x_seq):
        module.reset()
        return module(x_seq)

    return make, run


def _snntorch(kind: str):
    import snntorch
    from snntorch import surrogate as snn_surrogate

    def make():
        # snnTorch's Leaky: mem = β·mem + x, hard reset to zero; β = 1 − 1/τ for LIF, 1 for IF, learnable for PLIF.
        beta = 1.0 if kind == "IF" else 1.0 - 1.0 / TAU
        return snntorch.Leaky(beta=beta, threshold=1.0, reset_mechanism="zero", learn_beta=kind == "PLIF",
                              spike_grad=snn_surrogate.sigmoid(slope=4.0))

    def run(module, x_seq):
        # snnTorch steps through time in user code.
        mem = module.init_leaky()
        spikes = []
        for x in x_seq:
            spike, mem = module(x, mem)
            spikes.append(spike)
        return torch.stack(spikes)

    return make, run


def implementations(kind: str, peers: bool):
    impls = {"sf-reference": _spikeforge(kind, "reference"), "sf-fused": _spikeforge(kind, None)}
    if peers:
        try:
            impls["spikingjelly"] = _spikingjelly(kind)
        except ImportError:
            pass
        try:
            impls["snntorch"] = _snntorch(kind)
        except ImportError:
            pass
    return impls


# ------------------------------------------------------------------------------------------------------ timing
def _median_ms(fn, min_repeats: int, min_seconds: float) -> float:
    fn()  # warm-up (JIT compilation, allocator)
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 200:
            break
    return statistics.median(times) * 1e3


def copy_bandwidth_gbs(numel: int, repeats: int) -> float:
    src = torch.randn(numel)
    dst = torch.empty_like(src)
    ms = _median_ms(lambda: dst.copy_(src), repeats, 0.3)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def _measure(make, run, x_seq, grad, repeats: int, min_seconds: float, measure_memory: bool):
    module = make()

    def forward():
        with torch.no_grad():
            run(module, x_seq)

    x_train = x_seq.clone().requires_grad_(True)

    def train():
        x_train.grad = None
        for p in module.parameters():
            p.grad = None
        run(module, x_train).backward(grad)

    fwd = _median_ms(forward, repeats, min_seconds)
    fwd_bwd = _median_ms(train, repeats, min_seconds)
    mem = None
    if measure_memory:
        x_train.grad = None
        with PeakMemory() as probe:
            train()
        mem = probe.mib
    return fwd, fwd_bwd, mem


def bench_case(kind: str, T: int, N: int, impls: dict, repeats: int, min_seconds: float, measure_memory: bool):
    gen = torch.Generator().manual_seed(0)
    x_seq = torch.randn(T, BATCH, N, generator=gen) + 0.6
    grad = torch.randn(T, BATCH, N, generator=gen)
    rows = {}
    for name, (make, run) in impls.items():
        rows[name] = _measure(make, run, x_seq, grad, repeats, min_seconds, measure_memory)
        gc.collect()
    return rows


# ------------------------------------------------------------------------------------------------- conv SNN
def conv_snn(library: str, backend: str | None = None):
    """The same conv SNN built from each library's own layers (as its users would write it)."""
    if library == "spikingjelly":
        from spikingjelly.activation_based import layer as lib_layer
        from spikingjelly.activation_based import neuron as sj_neuron

        def lif():
            return sj_neuron.LIFNode(tau=TAU, step_mode="m")
    else:
        lib_layer = sf_layer

        def lif():
            return sf_neuron.LIFNode(tau=TAU, step_mode="m", backend=backend)

    seq = lib_layer.SeqToANNContainer
    return torch.nn.Sequential(
        seq(lib_layer.Conv2d(1, 16, 3, padding=1, bias=False), lib_layer.BatchNorm2d(16)), lif(),
        seq(lib_layer.MaxPool2d(2), lib_layer.Conv2d(16, 32, 3, padding=1, bias=False), lib_layer.BatchNorm2d(32)),
        lif(),
        seq(lib_layer.MaxPool2d(2), lib_layer.Flatten(), lib_layer.Linear(32 * 7 * 7, 10)), lif(),
    )


def conv_memory(T: int, repeats: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(T, BATCH, 1, 28, 28, generator=gen)
    target = torch.randint(0, 10, (BATCH,), generator=gen)
    builds = {"sf-reference": ("spikeforge", "reference"), "sf-fused": ("spikeforge", None)}
    try:
        import spikingjelly  # noqa: F401

        builds["spikingjelly"] = ("spikingjelly", None)
    except ImportError:
        pass
    out = {}
    for name, (library, backend) in builds.items():
        torch.manual_seed(0)
        out[name] = _conv_measure(conv_snn(library, backend), x, target, repeats)
        gc.collect()
    return out


def _conv_measure(net, x, target, repeats: int):
    neurons = [m for m in net.modules() if m is not net and hasattr(m, "reset") and hasattr(m, "v")]

    def step():
        for module in neurons:
            module.reset()
        rate = net(x).mean(0)
        torch.nn.functional.cross_entropy(rate, target).backward()
        net.zero_grad(set_to_none=False)

    step()  # warm-up; gradients now exist, as in a training loop
    peaks = []
    for _ in range(repeats):
        with PeakMemory() as probe:
            step()
        peaks.append(probe.mib)
    ms = _median_ms(step, 2, 0.5)
    return (None if None in peaks else min(peaks)), ms


# ------------------------------------------------------------------------------------------------------ report
def _fmt(value, spec=".1f", none="n/a"):
    return none if value is None else format(value, spec)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neurons", nargs="+", default=["LIF", "IF", "PLIF"], choices=["LIF", "IF", "PLIF"])
    parser.add_argument("--T", nargs="+", type=int, default=[8, 32, 128])
    parser.add_argument("--N", nargs="+", type=int, default=[4096, 65536])
    parser.add_argument("--repeats", type=int, default=5, help="minimum timed repetitions per measurement")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="minimum timed seconds per measurement")
    parser.add_argument("--no-peers", action="store_true", help="time spikeforge only")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--memory-only", action="store_true", help="only the conv-SNN peak-memory table")
    parser.add_argument("--conv-T", type=int, default=32)
    parser.add_argument("--impls", nargs="+", default=None,
                        help="subset of sf-reference sf-fused spikingjelly snntorch (sf-fused is always timed)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    memory_ok = not args.no_memory and _limit_malloc_caching()  # never change the allocator for timing-only runs
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
          f"{load:.1f}; batch {BATCH}; medians of >= {args.repeats} runs and >= {args.min_seconds} s")
    if not args.memory_only:
        header = (f"{'neuron':6} {'T':>4} {'N':>6} {'impl':13} {'fwd ms':>9} {'f+b ms':>9} {'x fwd':>6} "
                  f"{'x f+b':>6} {'GB/s f+b':>9} {'copy GB/s':>9} {'peak MiB':>9}")
        print(header)
        print("-" * len(header))
        for kind in args.neurons:
            for T in args.T:
                for N in args.N:
                    impls = implementations(kind, not args.no_peers)
                    if args.impls:
                        impls = {k: v for k, v in impls.items() if k in args.impls or k == "sf-fused"}
                    rows = bench_case(kind, T, N, impls, args.repeats, args.min_seconds, memory_ok)
                    numel = T * BATCH * N
                    copy_gbs = copy_bandwidth_gbs(numel, args.repeats)
                    fused_fwd, fused_fb, _ = rows["sf-fused"]
                    for name, (fwd, fb, mem) in rows.items():
                        gbs = 20 * numel / (fb * 1e-3) / 1e9
                        print(f"{kind:6} {T:>4} {N:>6} {name:13} {fwd:>9.2f} {fb:>9.2f} {fwd / fused_fwd:>6.2f} "
                              f"{fb / fused_fb:>6.2f} {gbs:>9.2f} {copy_gbs:>9.1f} {_fmt(mem):>9}", flush=True)
        print("x fwd / x f+b: time relative to spikeforge's fused kernel (> 1 means slower than sf-fused).")
        print("GB/s f+b: 20 bytes per element (the minimum traffic of a fused forward + backward) / time.")
    if not args.no_memory:
        conv = conv_memory(args.conv_T, 3)
        print(f"\nconv SNN training step, T={args.conv_T}, batch {BATCH}, 28x28 (LIF neurons)")
        base = conv.get("spikingjelly", (None, None))[0]
        for name, (mib, ms) in conv.items():
            ratio = "" if base in (None, 0) or mib is None else f"  {mib / base:.2f}x SpikingJelly"
            print(f"  {name:13} peak {_fmt(mib)} MiB  step {ms:.0f} ms{ratio}")


if __name__ == "__main__":
    main()
