"""Multi-step neuron benchmark: spikeforge (reference and fused) against SpikingJelly 2.0 and snnTorch 1.0.

Run it where the peers are installed, with this repository importable (it puts its parent on sys.path):

    /path/to/peer-venv/bin/python bench/neurons.py                       # the default grid, ATan and Sigmoid
    /path/to/peer-venv/bin/python bench/neurons.py --cases 32x32x4096 --surrogates ATan --neurons LIF IF PLIF
    /path/to/peer-venv/bin/python bench/neurons.py --memory              # + peak memory (separate processes)
    /path/to/peer-venv/bin/python bench/neurons.py --memory-only         # conv-SNN peak training memory

What is timed is what a user runs, in one plain process: the default allocator, torch's default thread count
(``--threads`` only if you ask), and each library's neuron module configured alike (τ = 2, V_th = 1, hard reset
to 0, the same surrogate and α: ATan(α = 2), which SpikingJelly's lif_fc_mnist example uses, and Sigmoid(α = 4),
SpikingJelly's default). Every case is [T, B, N] input in multi-step mode:

* ``fwd``: ``node(x)`` under ``torch.no_grad()``;
* ``f+b sum``: ``x.clone().requires_grad_()``, ``node(x).sum().backward()`` (the clone is part of the time);
* ``f+b grad``: the same with ``node(x).backward(g)`` for a fixed random ``g``.

The columns give the median milliseconds, the ratio of each implementation's time to spikeforge's fused time
(> 1: slower than sf-fused), each implementation's f+b sum / fwd, the same with the time of the input clone
taken off (``x_seq.clone()`` alone, timed in the same run: from 32 MiB on, glibc maps every such tensor afresh,
so the clone's page faults alone can cost twice a fused forward), the element rate of the f+b sum run, and the achieved
bandwidth at the minimum traffic of a fused forward + backward (20 bytes per element: forward reads X and writes
S, backward reads X and ∂L/∂S and writes ∂L/∂X) next to the bandwidth of ``Tensor.copy_`` on a 256 MiB tensor
(DRAM-sized, not in cache).

Peak memory is measured in separate processes, after every timing is done (``--memory``): there glibc is told
(``mallopt``) to serve every block above 64 KiB with its own mmap, so that freeing a tensor returns its pages at
once and the resident set follows the live tensors; the peak resident set (VmHWM, reset through
/proc/self/clear_refs) minus the resident set before the step is the step's peak. That setting makes every large
allocation page-fault, which slows an implementation that allocates per time step, so it is never in force
while anything is timed. Linux only; elsewhere the column says n/a.

The conv SNN (``--memory-only``, or the last table with ``--memory``): [T = 32, B = 32, 1, 28, 28] input,
Conv(1→16, 3) → BN → LIF → MaxPool(2) → Conv(16→32, 3) → BN → LIF → MaxPool(2) → Flatten → Linear(1568→10) →
LIF, each library with its own layers and neurons; peak memory and time of one training step.

Timed runs on shared machines should be serialised, e.g. ``flock /tmp/spikeforge-bench.lock python ...``, and
the load average printed in the header says how quiet the machine was.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikeforge import layer as sf_layer  # noqa: E402
from spikeforge import neuron as sf_neuron  # noqa: E402
from spikeforge.kernels import empty_cache as _sf_empty_cache  # noqa: E402

TAU = 2.0
ALPHA = {"ATan": 2.0, "Sigmoid": 4.0}
DEFAULT_CASES = ["32x32x4096", "128x16x4096", "8x64x16384"]
COPY_BYTES = 256 << 20


# ----------------------------------------------------------------------------------------------- memory probe
def _limit_malloc_caching() -> bool:
    """Make glibc mmap every block over 64 KiB (and unmap it on free), so RSS tracks live tensors.

    Called only in the memory-probe processes: it would slow down every allocation of a timed run."""
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
    """Peak resident memory (MiB) above the level at entry; ``None`` where /proc is unavailable.

    On entry spikeforge's kernel output cache gives back its free buffers, so that memory the step maps (or
    keeps free in the cache while it runs) counts as the step's, not as the level it starts from."""

    def __enter__(self):
        gc.collect()
        _sf_empty_cache()
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
def _sf_surrogate(name: str):
    from spikeforge import surrogate

    return getattr(surrogate, name)(alpha=ALPHA[name])


def _spikeforge(kind: str, surrogate_name: str, backend: str | None):
    def make():
        sg = _sf_surrogate(surrogate_name)
        if kind == "IF":
            return sf_neuron.IFNode(surrogate_function=sg, step_mode="m", backend=backend)
        if kind == "LIF":
            return sf_neuron.LIFNode(tau=TAU, surrogate_function=sg, step_mode="m", backend=backend)
        return sf_neuron.ParametricLIFNode(init_tau=TAU, surrogate_function=sg, step_mode="m", backend=backend)

    def run(module, x_seq):
        module.reset()
        return module(x_seq)

    return make, run


def _spikingjelly(kind: str, surrogate_name: str):
    from spikingjelly.activation_based import neuron as sj_neuron
    from spikingjelly.activation_based import surrogate as sj_surrogate

    def make():
        common = dict(surrogate_function=getattr(sj_surrogate, surrogate_name)(alpha=ALPHA[surrogate_name]),
                      step_mode="m")
        if kind == "IF":
            return sj_neuron.IFNode(**common)
        if kind == "LIF":
            return sj_neuron.LIFNode(tau=TAU, **common)
        return sj_neuron.ParametricLIFNode(init_tau=TAU, **common)

    def run(module, x_seq):
        module.reset()
        return module(x_seq)

    return make, run


def _snntorch(kind: str, surrogate_name: str):
    import snntorch
    from snntorch import surrogate as snn_surrogate

    def make():
        # snnTorch's Leaky: mem = β·mem + x, hard reset to zero; β = 1 − 1/τ for LIF, 1 for IF, learnable for PLIF.
        beta = 1.0 if kind == "IF" else 1.0 - 1.0 / TAU
        spike_grad = (snn_surrogate.atan(alpha=ALPHA["ATan"]) if surrogate_name == "ATan"
                      else snn_surrogate.sigmoid(slope=ALPHA["Sigmoid"]))
        return snntorch.Leaky(beta=beta, threshold=1.0, reset_mechanism="zero", learn_beta=kind == "PLIF",
                              spike_grad=spike_grad)

    def run(module, x_seq):
        # snnTorch steps through time in user code.
        mem = module.init_leaky()
        spikes = []
        for x in x_seq:
            spike, mem = module(x, mem)
            spikes.append(spike)
        return torch.stack(spikes)

    return make, run


def implementations(kind: str, surrogate_name: str, peers: bool):
    impls = {"sf-reference": _spikeforge(kind, surrogate_name, "reference"),
             "sf-fused": _spikeforge(kind, surrogate_name, None)}
    if peers:
        try:
            impls["spikingjelly"] = _spikingjelly(kind, surrogate_name)
        except ImportError:
            pass
        try:
            impls["snntorch"] = _snntorch(kind, surrogate_name)
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


def copy_bandwidth_gbs(repeats: int) -> float:
    """Read + write bandwidth of ``Tensor.copy_`` on a 256 MiB float32 tensor (far larger than any cache)."""
    src = torch.randn(COPY_BYTES // 4)
    dst = torch.empty_like(src)
    ms = _median_ms(lambda: dst.copy_(src), repeats, 0.3)
    return 2 * COPY_BYTES / (ms * 1e-3) / 1e9


def _case_tensors(T: int, B: int, N: int):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(T, B, N, generator=gen) + 0.6, torch.randn(T, B, N, generator=gen)


def _train_fns(module, run, x_seq, grad):
    def zero():
        for p in module.parameters():
            p.grad = None

    def train_sum():
        zero()
        run(module, x_seq.clone().requires_grad_(True)).sum().backward()

    def train_grad():
        zero()
        run(module, x_seq.clone().requires_grad_(True)).backward(grad)

    return train_sum, train_grad


def time_case(make, run, x_seq, grad, repeats: int, min_seconds: float):
    module = make()

    def forward():
        with torch.no_grad():
            run(module, x_seq)

    train_sum, train_grad = _train_fns(module, run, x_seq, grad)
    return (_median_ms(forward, repeats, min_seconds), _median_ms(train_sum, repeats, min_seconds),
            _median_ms(train_grad, repeats, min_seconds))


def memory_case(make, run, x_seq, grad) -> float | None:
    module = make()
    _, train_grad = _train_fns(module, run, x_seq, grad)
    train_grad()  # warm-up: compile, first allocations
    with PeakMemory() as probe:
        train_grad()
    return probe.mib


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


CONV_BATCH = 32


def conv_memory(T: int, repeats: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(T, CONV_BATCH, 1, 28, 28, generator=gen)
    target = torch.randint(0, 10, (CONV_BATCH,), generator=gen)
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
    return None if None in peaks else min(peaks)


def conv_time(T: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(T, CONV_BATCH, 1, 28, 28, generator=gen)
    target = torch.randint(0, 10, (CONV_BATCH,), generator=gen)
    out = {}
    for name, (library, backend) in {"sf-reference": ("spikeforge", "reference"),
                                     "sf-fused": ("spikeforge", None), "spikingjelly": ("spikingjelly", None)}.items():
        try:
            net = conv_snn(library, backend)
        except ImportError:
            continue
        neurons = [m for m in net.modules() if m is not net and hasattr(m, "reset") and hasattr(m, "v")]

        def step(net=net, neurons=neurons):
            for module in neurons:
                module.reset()
            torch.nn.functional.cross_entropy(net(x).mean(0), target).backward()
            net.zero_grad(set_to_none=False)

        out[name] = _median_ms(step, 3, 0.5)
    return out


# ------------------------------------------------------------------------------------------- probe processes
def _probe_main(spec: dict) -> None:
    """Child process: allocator set for memory probing, then the probes; one JSON line on stdout."""
    ok = _limit_malloc_caching()
    if spec["what"] == "conv":
        result = conv_memory(spec["T"], 3) if ok else {}
    else:
        x_seq, grad = _case_tensors(spec["T"], spec["B"], spec["N"])
        result = {}
        for name, (make, run) in implementations(spec["kind"], spec["surrogate"], spec["peers"]).items():
            result[name] = memory_case(make, run, x_seq, grad) if ok else None
            gc.collect()
    print(json.dumps(result))


def _probe(spec: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe-memory", json.dumps(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"  memory probe failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------ report
def _fmt(value, spec=".1f", none="n/a"):
    return none if value is None else format(value, spec)


def _parse_case(text: str) -> tuple[int, int, int]:
    try:
        T, B, N = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cases: {text!r} is not TxBxN (e.g. 32x32x4096)") from None
    return T, B, N


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neurons", nargs="+", default=["LIF"], choices=["LIF", "IF", "PLIF"])
    parser.add_argument("--surrogates", nargs="+", default=["ATan", "Sigmoid"], choices=sorted(ALPHA))
    parser.add_argument("--cases", nargs="+", type=_parse_case, default=[_parse_case(c) for c in DEFAULT_CASES],
                        help="TxBxN shapes (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="minimum timed repetitions per measurement")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="minimum timed seconds per measurement")
    parser.add_argument("--no-peers", action="store_true", help="time spikeforge only")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory (separate processes)")
    parser.add_argument("--memory-only", action="store_true", help="only the conv-SNN peak-memory table")
    parser.add_argument("--conv-T", type=int, default=32)
    parser.add_argument("--impls", nargs="+", default=None,
                        help="subset of sf-reference sf-fused spikingjelly snntorch (sf-fused is always timed)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--probe-memory", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_memory is not None:
        _probe_main(json.loads(args.probe_memory))
        return
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
          f"{load:.1f}; default allocator; medians of >= {args.repeats} runs and >= {args.min_seconds} s")
    if not args.memory_only:
        copy_gbs = copy_bandwidth_gbs(args.repeats)
        print(f"Tensor.copy_ of 256 MiB: {copy_gbs:.1f} GB/s (read + write)")
        header = (f"{'neuron':6} {'surr':7} {'T':>4} {'B':>3} {'N':>6} {'impl':13} {'fwd ms':>8} {'f+b sum':>8} "
                  f"{'f+b grad':>8} {'x fwd':>6} {'x sum':>6} {'x grad':>6} {'sum/fwd':>7} {'-clone':>6} "
                  f"{'Gel/s':>6} {'GB/s':>5}")
        print(header)
        print("-" * len(header))
        for kind in args.neurons:
            for surrogate_name in args.surrogates:
                for T, B, N in args.cases:
                    impls = implementations(kind, surrogate_name, not args.no_peers)
                    if args.impls:
                        impls = {k: v for k, v in impls.items() if k in args.impls or k == "sf-fused"}
                    x_seq, grad = _case_tensors(T, B, N)
                    clone_ms = _median_ms(x_seq.clone, args.repeats, args.min_seconds)
                    rows = {}
                    for name, (make, run) in impls.items():
                        rows[name] = time_case(make, run, x_seq, grad, args.repeats, args.min_seconds)
                        gc.collect()
                    numel = T * B * N
                    base = rows["sf-fused"]
                    for name, (fwd, fb_sum, fb_grad) in rows.items():
                        print(f"{kind:6} {surrogate_name:7} {T:>4} {B:>3} {N:>6} {name:13} {fwd:>8.2f} "
                              f"{fb_sum:>8.2f} {fb_grad:>8.2f} {fwd / base[0]:>6.2f} {fb_sum / base[1]:>6.2f} "
                              f"{fb_grad / base[2]:>6.2f} {fb_sum / fwd:>7.2f} {(fb_sum - clone_ms) / fwd:>6.2f} "
                              f"{numel / (fb_sum * 1e-3) / 1e9:>6.2f} {20 * numel / (fb_grad * 1e-3) / 1e9:>5.1f}",
                              flush=True)
                    print(f"{'':44}x_seq.clone() alone: {clone_ms:.2f} ms", flush=True)
        print("x fwd / x sum / x grad: time relative to spikeforge's fused kernel (> 1 means slower than sf-fused);")
        print("sum/fwd: f+b sum over the same implementation's forward; -clone: the same with the clone's time taken")
        print("off the f+b sum; Gel/s: elements per second of f+b sum;")
        print("GB/s: 20 bytes per element (the minimum traffic of a fused forward + backward) / f+b grad time.")
        if args.memory:
            print("\npeak memory of one forward + backward(g), MiB (separate process per case, mmap allocator)")
            for kind in args.neurons:
                for surrogate_name in args.surrogates:
                    for T, B, N in args.cases:
                        peaks = _probe({"what": "neuron", "kind": kind, "surrogate": surrogate_name, "T": T, "B": B,
                                        "N": N, "peers": not args.no_peers})
                        cells = "  ".join(f"{k} {_fmt(v)}" for k, v in peaks.items())
                        print(f"  {kind} {surrogate_name} {T}x{B}x{N}: {cells}", flush=True)
    if args.memory or args.memory_only:
        times = conv_time(args.conv_T)
        peaks = _probe({"what": "conv", "T": args.conv_T})
        print(f"\nconv SNN training step, T={args.conv_T}, batch {CONV_BATCH}, 28x28 (LIF neurons); time in this "
              f"process, peak memory in a separate one")
        base = peaks.get("spikingjelly")
        for name, ms in times.items():
            mib = peaks.get(name)
            ratio = "" if base in (None, 0) or mib is None else f"  {mib / base:.2f}x SpikingJelly"
            print(f"  {name:13} peak {_fmt(mib)} MiB  step {ms:.0f} ms{ratio}")


if __name__ == "__main__":
    main()
