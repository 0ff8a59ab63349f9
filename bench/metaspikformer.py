"""Meta-SpikeFormer at T=4 on the CPU: spikeforge's neurons against SpikingJelly 2.0's multi-step ``LIFNode``.

    flock /tmp/spikeforge-bench.lock env PYTHONPATH=/work/main /work/peer-venv/bin/python bench/metaspikformer.py \\
        [--model metaspikformer_tiny] [--size 32] [--batch 16] [-T 4] [--iters 5] [--compile]

Both variants are the same network, in one process: ``create_model(--model)`` once, then a deep copy in which
every ``MultiStepLIF`` is replaced by ``spikingjelly.activation_based.neuron.LIFNode(tau=2, v_reset=0,
detach_reset=True, surrogate=Sigmoid(4), step_mode='m')`` with the same threshold (0.5 for ``attn_lif``);
SpikingJelly 2.0's LIFNode runs its multi-step loop in torch on the CPU. The
SpikingJelly copy is reset with its ``functional.reset_net`` after every pass, as its training loops do. The two
are first checked to give the same logits.

Measured (random weights and inputs ``[batch, 3, size, size]``, direct coding repeats them T times):

* forward: eval mode under ``torch.no_grad``; forward+backward: train mode, cross-entropy, ``backward()``;
  time per pass, the median of ``--iters`` passes after two warm-up passes, the two variants alternating pass
  by pass (a slow spell of a shared machine hits both alike; timed one block after the other, the f+b ratio
  of the same command ranged 0.98-1.89x between runs);
* ``--compile``: the same after ``torch.compile(model)`` (default inductor backend; the compile itself is in
  the warm-up);
* peak memory of one forward+backward: in a fresh child process per variant (default allocator, threads as
  given), the growth of the process's peak resident set over that pass (peak reset just before it, Linux
  ``clear_refs``), after a warm-up pass at batch 1 that loads every library and compiles the kernels.

Ratios are SpikingJelly / spikeforge (> 1: spikeforge is faster or smaller).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikeforge import functional as sf_functional  # noqa: E402
from spikeforge.models import create_model  # noqa: E402
from spikeforge.models.metaspikformer import MultiStepLIF  # noqa: E402


def _sj():
    try:
        from spikingjelly.activation_based import functional, neuron, surrogate
    except ImportError as error:
        sys.exit(f"this bench needs SpikingJelly 2.0 (run it in /work/peer-venv with PYTHONPATH=/work/main): {error}")
    return functional, neuron, surrogate


def with_spikingjelly_neurons(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose ``MultiStepLIF`` modules are SpikingJelly multi-step ``LIFNode``s."""
    _, neuron, surrogate = _sj()
    twin = copy.deepcopy(model)
    for module in list(twin.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, MultiStepLIF):
                setattr(module, child_name, neuron.LIFNode(
                    tau=2.0, decay_input=True, v_threshold=float(child.v_threshold), v_reset=0.0,
                    surrogate_function=surrogate.Sigmoid(alpha=4.0), detach_reset=True, step_mode="m"))
    return twin


def build(args):
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=10, T=args.T)
    return model, with_spikingjelly_neurons(model)


def _reset(model, kind):
    if kind == "spikingjelly":
        _sj()[0].reset_net(model)
    else:
        sf_functional.reset_net(model)


def one_pass(model, kind, x, y, train: bool) -> float:
    start = time.perf_counter()
    if train:
        model.train()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
    else:
        model.eval()
        with torch.no_grad():
            model(x)
    _reset(model, kind)
    return time.perf_counter() - start


def time_round_robin(models: dict, x, y, iters: int, train: bool) -> dict:
    """Median seconds per pass for each ``{kind: model}``, the passes alternating between the kinds (one pass of
    each per round, 2 warm-up rounds), so a slow spell of the machine hits both sides alike."""
    times = {kind: [] for kind in models}
    for i in range(iters + 2):
        for kind, model in models.items():
            elapsed = one_pass(model, kind, x, y, train)
            if i >= 2:
                times[kind].append(elapsed)
    return {kind: statistics.median(t) for kind, t in times.items()}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_memory_child(args, kind: str) -> float:
    """MiB of peak-RSS growth over one forward+backward, measured in a fresh process (Linux: the peak is reset
    through ``/proc/self/clear_refs`` just before the pass and read as ``VmHWM`` after it)."""
    torch.set_num_threads(args.threads)
    model, twin = build(args)
    model = twin if kind == "spikingjelly" else model
    small = torch.randn(1, 3, args.size, args.size)
    F.cross_entropy(model(small), torch.zeros(1, dtype=torch.long)).backward()
    model.zero_grad(set_to_none=True)
    _reset(model, kind)
    x, y = torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 10, (args.batch,))
    from spikeforge.kernels import _alloc

    _alloc.empty_cache()  # free cached kernel outputs count as the pass's memory, not as the level before it
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _status_kib("VmRSS")
    F.cross_entropy(model(x), y).backward()
    return (_status_kib("VmHWM") - before) / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="metaspikformer_tiny")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("-T", type=int, default=4)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    parser.add_argument("--memory-child", choices=["spikeforge", "spikingjelly"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps({"peak_mib": peak_memory_child(args, args.memory_child)}))
        return
    torch.set_num_threads(args.threads)
    model, twin = build(args)
    x, y = torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 10, (args.batch,))
    model.eval(), twin.eval()
    with torch.no_grad():
        a, b = model(x), twin(x)
    _reset(twin, "spikingjelly")
    diff = (a - b).abs().max().item()
    print(f"{args.model}, T={args.T}, batch {args.batch}, {args.size}x{args.size}, {args.threads} thread(s); "
          f"torch {torch.__version__}; max |logit difference| spikeforge vs SpikingJelly neurons: {diff:.2e}")
    if diff > 1e-4:
        sys.exit("the two variants disagree; not timing them")
    rows = []
    variants = [("eager", model, twin)]
    if args.compile:
        variants.append(("torch.compile", torch.compile(copy.deepcopy(model)), torch.compile(copy.deepcopy(twin))))
    for mode, sf_model, sj_model in variants:
        for train in (False, True):
            phase = "forward+backward" if train else "forward"
            result = time_round_robin({"spikeforge": sf_model, "spikingjelly": sj_model}, x, y, args.iters, train)
            rows.append((mode, phase, result))
            print(f"  {mode:13s} {phase:16s} spikeforge {1e3 * result['spikeforge']:8.1f} ms  SpikingJelly "
                  f"{1e3 * result['spikingjelly']:8.1f} ms  ratio {result['spikingjelly'] / result['spikeforge']:.2f}x",
                  flush=True)
    memory = {}
    for kind in ("spikeforge", "spikingjelly"):
        child = [sys.executable, __file__, "--memory-child", kind, "--model", args.model, "--size", str(args.size),
                 "--batch", str(args.batch), "-T", str(args.T), "--threads", str(args.threads)]
        done = subprocess.run(child, capture_output=True, text=True, check=True)
        memory[kind] = json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]
    print(f"  peak memory of one forward+backward (separate processes): spikeforge {memory['spikeforge']:.1f} MiB, "
          f"SpikingJelly {memory['spikingjelly']:.1f} MiB, ratio {memory['spikingjelly'] / memory['spikeforge']:.2f}x")
    print("\n| mode | phase | spikeforge (ms) | SpikingJelly neurons (ms) | SJ / spikeforge |\n|---|---|---|---|---|")
    for mode, phase, result in rows:
        print(f"| {mode} | {phase} | {1e3 * result['spikeforge']:.1f} | {1e3 * result['spikingjelly']:.1f} | "
              f"{result['spikingjelly'] / result['spikeforge']:.2f}x |")
    print(f"| eager | peak memory, forward+backward (MiB) | {memory['spikeforge']:.1f} | "
          f"{memory['spikingjelly']:.1f} | {memory['spikingjelly'] / memory['spikeforge']:.2f}x |")


if __name__ == "__main__":
    main()
