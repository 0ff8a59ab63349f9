"""Inference time of Meta-SpikeFormer before and after ``model.reparameterize()``.

Three versions of one eval-mode model (same weights, BatchNorm statistics randomised so that the neurons fire):

* ``original``    — RepConv = 1x1, BN with its BN(0) border, depthwise 3x3, 1x1, BN, then the trailing BN;
                    every Conv-BN pair separate;
* ``single``      — every RepConv + BN folded into one 3x3 convolution with bias (the issue's reading), every
                    Conv-BN pair one convolution;
* ``factorized``  — the BatchNorms folded but RepConv's 1x1 / depthwise / 1x1 factors kept (fewer MACs).

Prints the median wall time per forward (after warm-up), the speed-up against ``original``, and how far the
logits and the final spikes moved. Run::

    .venv/bin/python bench/metaspikformer_reparam.py                       # 8_384, 224 px, T=1, batch 1, CPU
    .venv/bin/python bench/metaspikformer_reparam.py --model metaspikformer_tiny --img-size 64 --T 4 --batch 8
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikeforge.models import create_model  # noqa: E402


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) * 1.5 + 1.0
            m.bias.data = torch.rand(n, generator=g)
            m.running_mean = torch.randn(n, generator=g) * 0.1
            m.running_var = torch.rand(n, generator=g) + 0.5


def _measure(versions: dict, x, repeats: int, warmup: int, device) -> dict:
    """Median seconds per forward of each version, the runs interleaved (a, b, c, a, b, c, ...) so that a
    change of machine load hits every version alike; plus each one's logits and final spikes."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = {name: [] for name in versions}
    results = {}
    with torch.inference_mode():
        for name, model in versions.items():
            for _ in range(warmup):
                model(x)
            out = model(x)
            spikes = model.forward_head(model.forward_features(model.encode(x)), pre_logits=True)
            results[name] = (out, spikes)
        for _ in range(repeats):
            for name, model in versions.items():
                sync()
                start = time.perf_counter()
                model(x)
                sync()
                times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), *results[name]) for name in versions}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="metaspikformer_8_384")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--T", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":  # TF32 would flip spikes
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = create_model(args.model, T=args.T)
    _randomise_bn(model)
    model = model.eval().to(device)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    versions = {"original": model,
                "single": copy.deepcopy(model).reparameterize("single"),
                "factorized": copy.deepcopy(model).reparameterize("factorized")}
    print(f"{args.model}, {args.img_size}x{args.img_size}, T={args.T}, batch {args.batch}, {device}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved runs after {args.warmup} "
          "warm-up runs")
    print(f"{'version':<11} {'params':>12} {'ms/forward':>11} {'speed-up':>9} {'max|dlogit|':>12} "
          f"{'spikes flipped':>15}")
    measured = _measure(versions, x, args.repeats, args.warmup, device)
    base_time, base_out, base_spikes = measured["original"]
    for name, (seconds, out, spikes) in measured.items():
        params = sum(p.numel() for p in versions[name].parameters())
        flips = int((spikes != base_spikes).sum())
        print(f"{name:<11} {params:>12,} {seconds * 1e3:>11.1f} {base_time / seconds:>8.2f}x "
              f"{(out - base_out).abs().max().item():>12.2e} {flips:>8} / {spikes.numel()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
