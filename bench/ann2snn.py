"""Benchmark ANN -> SNN conversion: spikeforge vs SpikingJelly 2.0 on the tutorial MNIST CNN, T=50.

Both converters get the same trained ANN weights and the same calibration batches (mode 'max', momentum 0.1 in
both), then simulate the 10,000 MNIST test images for T steps; we report accuracy, wall time and images/s.

* spikeforge: ``ann2snn.evaluate`` (on CPU one step per call through the static-input graph, fused numba
  neurons), and the plain single-step loop a user would write, for reference;
* SpikingJelly: the tutorial's single-step loop (``for t in range(T): out += snn(x)``) and, when its converted
  graph accepts it, multi-step mode (``functional.set_step_mode(snn, 'm')`` on ``[T, N, ...]``).

Run it from the repository root with the peers' environment (spikeforge comes from this checkout):

    /path/to/peer-venv/bin/python bench/ann2snn.py \\
        --weights mnist_cnn.pt

If ``--weights`` is missing the tutorial CNN is trained first (``--epochs``) and saved there.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikeforge import ann2snn, functional  # noqa: E402
from spikeforge.ann2snn.tutorial_nets import TutorialCNN, ann_accuracy, trained_model  # noqa: E402
from spikeforge.datasets import MNIST  # noqa: E402


def batches(data, size):
    x, y = data
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


@torch.no_grad()
def single_step_loop(snn, loader, steps, reset):
    """The tutorial's evaluation: reset, then one call per time step, summing the outputs."""
    correct = total = 0
    for x, y in loader:
        reset(snn)
        out = 0
        for _ in range(steps):
            out = out + snn(x)
        correct += (out.argmax(1) == y).sum().item()
        total += len(y)
    return 100.0 * correct / total


@torch.no_grad()
def multi_step_loop(snn, loader, steps, reset):
    correct = total = 0
    for x, y in loader:
        reset(snn)
        out = snn(x.unsqueeze(0).expand(steps, *x.shape).contiguous()).sum(0)
        correct += (out.argmax(1) == y).sum().item()
        total += len(y)
    return 100.0 * correct / total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="mnist_cnn.pt",
                        help="trained tutorial CNN (trained and saved here first if the file does not exist)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs if --weights does not exist")
    parser.add_argument("--batch-size", type=int, default=100, help="inference batch (both libraries)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--T", type=int, default=50)
    parser.add_argument("--calib-batches", type=int, default=100, help="training batches of 100 to calibrate on")
    parser.add_argument("--test-limit", type=int, default=None, help="time on the first N test images only")
    parser.add_argument("--repeats", type=int, default=3,
                        help="best of this many timed runs of each path, the paths taking turns (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    train = MNIST(train=True).as_tensors(torch.float32)
    test = MNIST(train=False).as_tensors(torch.float32)
    if args.test_limit:
        test = (test[0][: args.test_limit], test[1][: args.test_limit])
    model = trained_model(TutorialCNN(), args.weights, train, test, args.epochs, args.batch_size, args.lr,
                          args.seed)
    calib = batches((train[0][: 100 * args.calib_batches], train[1][: 100 * args.calib_batches]), 100)
    test_loader = batches(test, args.batch_size)
    n_images = len(test[1])
    rows = [("ANN", "-", ann_accuracy(model, test), float("nan"))]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {n_images} test images, T={args.T}, "
          f"batch {args.batch_size}", flush=True)

    snn = ann2snn.Converter(calib, mode="max", progress=False)(model)
    runs = [("spikeforge", "ann2snn.evaluate", lambda: ann2snn.evaluate(snn, test_loader, [args.T])[args.T]),
            ("spikeforge", "single-step loop",
             lambda: single_step_loop(snn, test_loader, args.T, functional.reset_net))]
    try:
        from spikingjelly.activation_based import ann2snn as sj_ann2snn
        from spikingjelly.activation_based import functional as sj_functional
    except ImportError:
        print("SpikingJelly is not installed: skipping the comparison")
    else:
        recipe = sj_ann2snn.RateCodingRecipe(dataloader=calib, mode="Max", momentum=0.1)
        sj_snn = sj_ann2snn.Converter(recipe).convert(model)
        sj_multi = copy.deepcopy(sj_snn)
        runs.append(("SpikingJelly 2.0", "single-step loop (tutorial)",
                     lambda: single_step_loop(sj_snn, test_loader, args.T, sj_functional.reset_net)))
        try:
            sj_functional.set_step_mode(sj_multi, "m")
            multi_step_loop(sj_multi, test_loader[:1], args.T, sj_functional.reset_net)
            runs.append(("SpikingJelly 2.0", "multi-step",
                         lambda: multi_step_loop(sj_multi, test_loader, args.T, sj_functional.reset_net)))
        except Exception as error:  # report, don't hide, a converted graph that refuses multi-step
            print(f"SpikingJelly multi-step failed: {type(error).__name__}: {error}")
    # Round-robin: every repeat runs each path once, so a slow spell of the machine hits all paths alike.
    best = {path: (float("inf"), None) for _, path, _ in runs}
    for _ in range(args.repeats):
        for _, path, fn in runs:
            start = time.perf_counter()
            acc = fn()
            best[path] = (min(best[path][0], time.perf_counter() - start), acc)
    rows += [(lib, path, best[path][1], best[path][0]) for lib, path, _ in runs]

    fastest_sj = min((r[3] for r in rows if r[0].startswith("Spiking")), default=float("nan"))
    print(f"\n{'library':<18}{'path':<38}{'acc %':>8}{'time s':>9}{'img/s':>9}{'vs best SJ':>12}")
    for lib, path, acc, sec in rows:
        rate = n_images / sec if sec == sec else float("nan")
        speed = fastest_sj / sec if sec == sec and fastest_sj == fastest_sj else float("nan")
        print(f"{lib:<18}{path:<38}{acc:>8.2f}{sec:>9.2f}{rate:>9.0f}{speed:>11.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [dict(library=r[0], path=r[1], accuracy=r[2], seconds=r[3]) for r in rows], indent=2))
    return rows


if __name__ == "__main__":
    main()
