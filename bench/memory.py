"""Peak training memory and step time of the conv SNN of ``bench/neurons.py --memory-only``, per training mode.

Run it where SpikingJelly 2.0 is installed to get its rows too (spikeforge is put on sys.path):

    PYTHONPATH=/work/main /path/to/peer-venv/bin/python bench/memory.py                 # T = 8, 32, 128
    PYTHONPATH=/work/main /path/to/peer-venv/bin/python bench/memory.py --budget-mib 4096  # + largest T in 4 GB

Every configuration runs in a fresh subprocess (this script with ``--one``), so no allocator state is shared.
The network is the one of ``bench/neurons.py`` (imported from it): [T, B = 32, 1, 28, 28] input,
Conv(1→16) → BN → LIF → MaxPool → Conv(16→32) → BN → LIF → MaxPool → Flatten → Linear(1568→10) → LIF, the
loss cross-entropy of the mean output; one training step = forward, loss, backward.

Peak memory: as in ``bench/neurons.py``: glibc is told to mmap every block over 64 KiB (so freed tensors leave
the resident set at once), and the peak resident set (VmHWM, reset through /proc/self/clear_refs) during a step
minus the resident set before it is the step's peak; the minimum over ``--repeats`` steps (after a warm-up step
of the same configuration at T = 4, which compiles and loads the kernels). That allocator setting makes every
large allocation page-fault, so the memory children time nothing.
Step time (``--timing-T``): all configurations in this parent process, with the default allocator, round-robin
over ``--rounds`` rounds (on a shared machine compare rows of the same run only).

Configurations:

    sf-default     spikeforge, plain BPTT (fused CPU kernel)
    sf-bits        + spikeforge.memory.bit_spikes (spike inputs of Conv/Linear/MaxPool saved as bits)
    sf-ckpt        + spikeforge.memory.checkpoint_time(chunk of --chunk steps, BatchNorm per chunk) + bit spikes
                   (``sf-ckpt@4``: chunks of 4 steps)
    sf-tbptt       truncated BPTT, window --tbptt-k (spikeforge.training.online.TimeTraining)
    sf-sltt        SLTT (per-step spatial backprop)
    sf-ottt        OTTT (per-step, presynaptic traces for the weight gradients)
    sj-default     SpikingJelly 2.0, plain BPTT, its own layers and LIFNode (torch backend on the CPU)
    sj-memopt      SpikingJelly 2.0 memopt.optimize_memory(level=1, compress=True, budget 'memory'): every
                   SeqToANNContainer and LIFNode checkpointed, binary inputs bit-compressed (levels 2-4 search
                   with CUDA memory statistics and refuse to run on the CPU)
    sj-memopt-chunk  level 1 + every checkpointed module split into time chunks of --chunk steps (memopt's
                   temporal split, set by hand since its search needs CUDA)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

# The conv SNN of ``bench/neurons.py --memory-only`` and its memory probe (glibc told to mmap large blocks; used
# only in the per-configuration child processes, which time nothing).
from neurons import CONV_BATCH as BATCH  # noqa: E402
from neurons import PeakMemory, _limit_malloc_caching, conv_snn  # noqa: E402

SF = ("sf-default", "sf-bits", "sf-ckpt", "sf-tbptt", "sf-sltt", "sf-ottt")
SJ = ("sj-default", "sj-memopt", "sj-memopt-chunk")


def _ce(out, labels):
    return torch.nn.functional.cross_entropy(out, labels)


def _reset(net):
    for m in net.modules():
        if m is not net and hasattr(m, "reset") and hasattr(m, "v"):
            m.reset()


def build(config: str, T: int, chunk: int, k: int, x, target):
    """(net, step) for one configuration; ``step()`` runs one training step."""
    torch.manual_seed(0)
    if config.startswith("sj"):
        net = conv_snn("spikingjelly")
        if config != "sj-default":
            from spikingjelly.activation_based import layer as sj_layer
            from spikingjelly.activation_based import neuron as sj_neuron
            from spikingjelly.activation_based.memopt import checkpoint_module, optimize_memory
            from spikingjelly.activation_based.memopt.pipeline import _checkpoint_options, _unwrap_checkpoint_module

            def example(model):
                _reset(model)
                return model(x)

            optimize_memory(net, (sj_layer.SeqToANNContainer, sj_neuron.LIFNode), example, level=1, compress=True,
                            checkpoint_budget="memory")
            if config == "sj-memopt-chunk" and T > chunk:
                for name, wrapper in list(net.named_children()):
                    options = _checkpoint_options(wrapper)
                    net.set_submodule(name, checkpoint_module(_unwrap_checkpoint_module(wrapper),
                                                              compressor=options["compressor"],
                                                              chunks=max(1, T // chunk)))
            _reset(net)
    else:
        from spikeforge import memory

        net = conv_snn("spikeforge", None)
        if config == "sf-bits" or config.startswith("sf-ckpt"):
            memory.bit_spikes(net)
        if config.startswith("sf-ckpt"):
            chunk = int(config.split("@")[1]) if "@" in config else chunk
            memory.checkpoint_time(net, chunk, batch_norm="per_chunk")
        if config in ("sf-tbptt", "sf-sltt", "sf-ottt"):
            from spikeforge.training.online import TimeTraining

            mode = config[3:]

            def step(inputs=x, labels=target):
                trainer = TimeTraining(mode, inputs.shape[0], lambda model, xs, t0, t1: model(xs[t0:t1]),
                                       k=min(k, inputs.shape[0]) if mode == "tbptt" else None)
                _reset(net)
                trainer.forward_backward(net, inputs, labels, _ce)
                trainer.detach_model()
                net.zero_grad(set_to_none=False)

            return net, step

    def step(inputs=x, labels=target):
        _reset(net)
        rate = net(inputs).mean(0)
        _ce(rate, labels).backward()
        net.zero_grad(set_to_none=False)

    return net, step


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass


def measure_one(config: str, T: int, batch: int, chunk: int, k: int, repeats: int) -> dict:
    memory_ok = _limit_malloc_caching()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(T, batch, 1, 28, 28, generator=gen)
    target = torch.randint(0, 10, (batch,), generator=gen)
    _, step = build(config, T, chunk, k, x, target)
    # warm-up on the first steps of the sequence: kernels compiled and loaded, gradients allocated
    short = min(T, 2 * min(chunk, k))
    step(x[:short].clone(), target)
    peaks = []
    for _ in range(repeats):
        with PeakMemory() as probe:
            step()
        peaks.append(probe.mib)
    peak = None if not memory_ok or None in peaks else min(peaks)
    return {"config": config, "T": T, "batch": batch, "peak_mib": peak}


def timing(configs: list[str], T: int, args) -> dict:
    """Step times of ``configs`` at ``T`` in one process, round-robin (each round steps every config once), so
    that the load of a shared machine falls on all of them alike; min and median over ``--rounds``."""
    set_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(T, args.batch, 1, 28, 28, generator=gen)
    target = torch.randint(0, 10, (args.batch,), generator=gen)
    steps = {}
    for config in configs:
        _, step = build(config, T, args.chunk, args.tbptt_k, x, target)
        step()
        steps[config] = step
    times = {config: [] for config in configs}
    for _ in range(args.rounds):
        for config, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[config].append((time.perf_counter() - t0) * 1e3)
    return {config: (min(v), statistics.median(v)) for config, v in times.items()}


def run_child(config: str, T: int, args) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", config, "--T", str(T), "--batch", str(args.batch),
           "--chunk", str(args.chunk), "--tbptt-k", str(args.tbptt_k), "--repeats", str(args.repeats),
           "--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  {config} T={T}: failed ({last})", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sj_available() -> bool:
    try:
        import spikingjelly.activation_based.memopt  # noqa: F401
    except ImportError:
        return False
    return True


def largest_T(config: str, results: list[dict], args) -> tuple[int | None, str]:
    """Largest T whose step fits in the budget: the line through the peaks at the two largest measured T
    (peak memory is affine in T for every configuration here), then, with ``--check-largest``, one run there."""
    rows = sorted((r for r in results if r and r["config"] == config and r["peak_mib"] is not None),
                  key=lambda r: r["T"])
    if len(rows) < 2:
        return None, "no data"
    (t1, p1), (t2, p2) = (rows[-2]["T"], rows[-2]["peak_mib"]), (rows[-1]["T"], rows[-1]["peak_mib"])
    slope = (p2 - p1) / (t2 - t1)
    if slope <= 0:
        return None, f"flat from T={t1} to T={t2} ({p1:.0f} -> {p2:.0f} MiB): no limit from memory"
    estimate = int(t2 + (args.budget_mib - p2) / slope)
    note = f"fit {slope:.2f} MiB/step from T={t1},{t2}"
    if not args.check_largest or estimate > args.max_check_T:
        return estimate, note + " (extrapolated, not run)"
    check = run_child(config, estimate, args)
    if check and check["peak_mib"] is not None:
        verdict = "fits" if check["peak_mib"] <= args.budget_mib else "EXCEEDS"
        return estimate, note + f"; run at T={estimate}: {check['peak_mib']:.0f} MiB ({verdict})"
    return estimate, note + "; the check run failed"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--T", nargs="+", type=int, default=[8, 16, 32, 128])
    parser.add_argument("--sj-T", nargs="+", type=int, default=None, help="T values for the SpikingJelly rows "
                        "(default: those of --T; its CPU steps are slow)")
    parser.add_argument("--configs", nargs="+", default=None, help=f"subset of {' '.join(SF + SJ)}")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--chunk", type=int, default=8, help="time chunk of sf-ckpt and sj-memopt-chunk")
    parser.add_argument("--tbptt-k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="measured steps after a warm-up step")
    parser.add_argument("--budget-mib", type=float, default=None, help="also find the largest T within this budget")
    parser.add_argument("--check-largest", action="store_true", help="run one step at each largest-T estimate")
    parser.add_argument("--max-check-T", type=int, default=1024, help="skip the check above this T")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and numba threads per run (default 1: on a shared machine, parallel regions "
                             "wait for descheduled threads, which distorts the many small steps of OTTT/SLTT)")
    parser.add_argument("--timing-T", nargs="*", type=int, default=[],
                        help="also time every config at these T in one process, round-robin (see timing())")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the round-robin timing")
    parser.add_argument("--timing-only", action="store_true", help="skip the memory rows")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        set_threads(args.threads)
        row = measure_one(args.one, args.T[0], args.batch, args.chunk, args.tbptt_k, args.repeats)
        print(json.dumps(row))
        return
    configs = args.configs or list(SF) + (list(SJ) if _sj_available() else [])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {args.threads} thread(s) per run, {os.cpu_count()} CPUs, load average "
          f"{load:.1f}; batch {args.batch}; chunk {args.chunk}; TBPTT k {args.tbptt_k}; one subprocess per row")
    results = []
    timings = {}
    for T in args.timing_T:
        timings[T] = timing(configs, T, args)
        base = timings[T].get("sf-default")
        print(f"\nstep time at T={T}, one process, {args.rounds} round-robin rounds (ms: min / median; "
              f"x sf-default by min)", flush=True)
        for config, (low, mid) in timings[T].items():
            ratio = f"{low / base[0]:.2f}x" if base else "-"
            print(f"  {config:16} {low:8.0f} / {mid:8.0f}  {ratio}", flush=True)
    if args.timing_only:
        if args.json:
            Path(args.json).write_text(json.dumps({"timing": timings, "args": vars(args)}, indent=1))
        return
    for T in args.T:
        for config in configs:
            if config.startswith("sj") and args.sj_T is not None and T not in args.sj_T:
                continue
            row = run_child(config, T, args)
            results.append(row)
            if row:
                print(f"  {config:16} T={T:<4} peak {row['peak_mib']:8.1f} MiB",
                      flush=True)
    print(f"\n{'config':16} " + " ".join(f"{'T=' + str(T) + ' MiB':>11}" for T in args.T))
    by = {(r["config"], r["T"]): r for r in results if r}
    for config in configs:
        cells = []
        for T in args.T:
            r = by.get((config, T))
            cells.append(f"{r['peak_mib']:>11.1f}" if r else f"{'-':>11}")
        print(f"{config:16} " + " ".join(cells))
    ref = {T: by.get(("sj-default", T)) for T in args.T}
    own = {T: timings[T]["sf-default"][0] for T in args.T if "sf-default" in timings.get(T, {})}
    print("\nratios (peak / SpikingJelly default peak; step time / spikeforge default step time, from the "
          "--timing-T run where it covers this T)")
    for config in configs:
        cells = []
        for T in args.T:
            r = by.get((config, T))
            mem = f"{r['peak_mib'] / ref[T]['peak_mib']:.2f}x" if r and ref[T] else "-"
            tim = f"{timings[T][config][0] / own[T]:.2f}x" if T in own and config in timings[T] else "-"
            cells.append(f"{mem:>7} {tim:>7}")
        print(f"{config:16} " + " ".join(cells))
    largest = {}
    if args.budget_mib:
        print(f"\nlargest T in {args.budget_mib:.0f} MiB (batch {args.batch})")
        for config in configs:
            T, note = largest_T(config, results, args)
            largest[config] = (T, note)
            print(f"  {config:16} {T if T else '':>6}  {note}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": results, "largest": largest, "timing": timings,
                                               "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
