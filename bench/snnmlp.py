"""CPU throughput of SNN-MLP and of its group LIF, in one run.

    flock /tmp/spikeforge-bench.lock .venv/bin/python bench/snnmlp.py [--iters 3] [--threads N]

1. images/s of snnmlp_t / snnmlp_s / snnmlp_b: batch 8, 3x224x224, eval mode under ``torch.inference_mode``,
   in float32 and in bfloat16 (weights and input cast with ``.to(torch.bfloat16)``; the LIF recurrence still runs
   in float32 inside). Random weights: speed does not depend on the values. One warm-up forward, then the best
   of ``--iters`` timed forwards.
2. The group LIF forward (lif=4, inference) on the four stage tensors snnmlp_t produces at batch 8, both scan
   axes, against two loop implementations of the same equations that live only in this file:
   - "position loop": plain Python over every position, the reference CUDA kernel's per-thread loop written
     out. It is far too slow for whole tensors, so it runs on the first image and 4 channels, and the
     comparison is time per element (group_lif's measured on the whole tensor).
   - "axis loop": one vectorised torch step per position along the whole scanned axis, restarting the carry
     at group boundaries (what a direct port of a time loop does).
   Both are checked against ``group_lif`` before being timed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikeforge.models import create_model, group_lif  # noqa: E402

TAU, V_TH, LIF = 0.25, 0.1, 4


def lif_position_loop(x: torch.Tensor, tau: float, v_th: float, lif: int, dim: int) -> torch.Tensor:
    """Group LIF one position at a time in plain Python, as the reference kernel's per-thread loop does.

    Values are rounded to float32 after each membrane update (``tau * o + x`` with one rounding, like the
    kernel's fused multiply-add), so the result matches float32 implementations."""
    tau, v_th = float(np.float32(tau)), float(np.float32(v_th))
    n_img, n_ch, height, width = x.shape
    data = x.tolist()
    length = height if dim == 2 else width
    others = width if dim == 2 else height
    for n in range(n_img):
        for c in range(n_ch):
            plane = data[n][c]
            for k in range(others):
                for start in range(0, length - length % lif, lif):
                    carried = 0.0
                    for pos in range(start, start + lif):
                        h, w = (pos, k) if dim == 2 else (k, pos)
                        u = float(np.float32(tau * carried + plane[h][w]))
                        if u > v_th:
                            plane[h][w], carried = u, 0.0
                        else:
                            plane[h][w], carried = v_th, u
    return torch.tensor(data, dtype=x.dtype)


def lif_axis_loop(x: torch.Tensor, tau: torch.Tensor, v_th: torch.Tensor, lif: int, dim: int) -> torch.Tensor:
    """Group LIF as a loop over every position of the scanned axis, vectorised over everything else."""
    length = x.shape[dim]
    grouped = length - length % lif
    out = x.clone()
    carried = torch.zeros_like(x.select(dim, 0))
    for pos in range(grouped):
        if pos % lif == 0:
            carried = torch.zeros_like(carried)
        u = tau * carried + x.select(dim, pos)
        fired = u > v_th
        out.select(dim, pos).copy_(torch.where(fired, u, v_th))
        carried = torch.where(fired, torch.zeros_like(u), u)
    return out


def timed(fn, iters: int) -> float:
    """Best (minimum) seconds of ``iters`` calls after one warm-up call: on a shared machine other processes only
    ever add time, so the minimum is the least disturbed estimate."""
    fn()
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return min(samples)


def bench_models(iters: int, batch: int) -> None:
    print(f"\n## SNN-MLP throughput (CPU, batch {batch}, 3x224x224, eval, inference_mode, best of {iters})\n")
    print("| model | params | float32 img/s | bfloat16 img/s |")
    print("|---|---:|---:|---:|")
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 224, 224, generator=gen)
    for name in ("snnmlp_t", "snnmlp_s", "snnmlp_b"):
        torch.manual_seed(0)
        model = create_model(name).eval()
        params = sum(p.numel() for p in model.parameters())
        rates = []
        for dtype in (torch.float32, torch.bfloat16):
            model = model.to(dtype)
            x = images.to(dtype)
            with torch.inference_mode():
                seconds = timed(lambda m=model, x=x: m(x), iters)
            rates.append(batch / seconds)
        print(f"| {name} | {params / 1e6:.1f} M | {rates[0]:.2f} | {rates[1]:.2f} |", flush=True)
        del model


def bench_lif(iters: int, batch: int) -> None:
    print(f"\n## Group LIF forward (lif={LIF}, inference, float32, best of {iters})\n")
    print("| tensor | scan | group_lif ms | axis loop ms | vs axis loop | group_lif ns/elem "
          "| position loop ns/elem | vs position loop |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    tau, v_th = torch.tensor([TAU]), torch.tensor([V_TH])
    gen = torch.Generator().manual_seed(1)
    for channels, size in ((96, 56), (192, 28), (384, 14), (768, 7)):
        x = 0.6 * torch.randn(batch, channels, size, size, generator=gen)
        small = x[:1, :4].contiguous()
        for dim in (2, 3):
            with torch.inference_mode():
                ours = group_lif(x, tau, v_th, LIF, dim)
                torch.testing.assert_close(lif_axis_loop(x, tau, v_th, LIF, dim), ours, atol=1e-6, rtol=0)
                torch.testing.assert_close(lif_position_loop(small, TAU, V_TH, LIF, dim), ours[:1, :4],
                                           atol=1e-6, rtol=0)
                t_ours = timed(lambda x=x, d=dim: group_lif(x, tau, v_th, LIF, d), iters)
                t_axis = timed(lambda x=x, d=dim: lif_axis_loop(x, tau, v_th, LIF, d), iters)
                t_scalar = timed(lambda s=small, d=dim: lif_position_loop(s, TAU, V_TH, LIF, d), 1)
            shape = "x".join(str(s) for s in x.shape)
            per_ours = t_ours / x.numel() * 1e9
            per_scalar = t_scalar / small.numel() * 1e9
            print(f"| {shape} | {'H' if dim == 2 else 'W'} | {t_ours * 1e3:.2f} | {t_axis * 1e3:.2f} "
                  f"| {t_axis / t_ours:.1f}x | {per_ours:.2f} | {per_scalar:.0f} | {per_scalar / per_ours:.0f}x |",
                  flush=True)
    print("\n(ns/elem: group_lif on the whole tensor; the position loop on its [1, 4, H, W] slice)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=3, help="timed repetitions per measurement (default 3)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--skip-models", action="store_true", help="only the group LIF part")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    if not args.skip_models:
        bench_models(args.iters, args.batch)
    bench_lif(args.iters, args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
