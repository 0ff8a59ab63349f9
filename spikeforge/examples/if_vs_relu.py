"""Why conversion works: an IF neuron's firing rate on a constant input is a clipped ReLU.

Feeds constant inputs x in [-0.2, 1.2) (step 0.04) to soft-reset IF neurons (threshold 1) for T=128 steps,
prints each neuron's firing rate next to clip(x, 0, 1), and writes a figure with the spike raster (annotated
with the firing rates) beside the firing-rate-vs-input curve against ReLU.

    python -m spikeforge.examples.if_vs_relu --plot if_vs_relu.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from spikeforge.neuron import IFNode


def simulate(steps: int = 128, low: float = -0.2, high: float = 1.2, step: float = 0.04):
    """Constant inputs, their spike trains ``[T, n]`` and firing rates."""
    x = torch.arange(low, high, step)
    x[x.abs() < 1e-6] = 0.0  # float drift would print the zero input as -0.00
    neuron = IFNode(v_threshold=1.0, v_reset=None, step_mode="m")
    with torch.no_grad():
        spikes = neuron(x.expand(steps, -1).contiguous())
    return x, spikes, spikes.mean(0)


def plot(x: torch.Tensor, spikes: torch.Tensor, rates: torch.Tensor, path: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("the plot needs matplotlib: pip install spikeforge[viz]") from error
    fig, (raster, curve) = plt.subplots(1, 2, figsize=(12, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    t_idx, n_idx = spikes.nonzero(as_tuple=True)
    raster.scatter(t_idx.numpy(), n_idx.numpy(), marker="|", s=18, color="k")
    raster.set_yticks(range(len(x)))
    raster.set_yticklabels([f"x={v:.2f}  r={r:.2f}" for v, r in zip(x.tolist(), rates.tolist())], fontsize=6)
    raster.set_xlabel("time step")
    raster.set_title(f"IF neurons (soft reset), constant input, T={spikes.shape[0]}")
    raster.set_xlim(-1, spikes.shape[0])
    raster.set_ylim(-1, len(x))
    curve.plot(x.numpy(), rates.numpy(), "o", label="IF firing rate")
    curve.plot(x.numpy(), torch.relu(x).numpy(), "-", label="ReLU(x)")
    curve.plot(x.numpy(), x.clamp(0, 1).numpy(), "--", label="clip(x, 0, 1)")
    curve.set_xlabel("input x")
    curve.set_ylabel("firing rate")
    curve.set_title("firing rate vs ReLU")
    curve.grid(True, alpha=0.3)
    curve.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(argv=None) -> float:
    """The example's work; returns max |rate - clip(x, 0, 1)|."""
    from spikeforge.errors import check_int, check_writable_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     prog="python -m spikeforge.examples.if_vs_relu")
    parser.add_argument("--T", type=int, default=128, help="time steps (default: 128)")
    parser.add_argument("--plot", default="if_vs_relu.png", help="output PNG ('' to skip)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    check_int(args.T, "--T", minimum=1)
    if args.plot:
        check_writable_dir(Path(args.plot).parent, f"--plot {args.plot}:")
    x, spikes, rates = simulate(args.T)
    print(f"{'input':>7} {'rate':>7} {'clip(x,0,1)':>12}")
    for v, r in zip(x.tolist(), rates.tolist()):
        print(f"{v:7.2f} {r:7.3f} {min(max(v, 0.0), 1.0):12.3f}")
    error = (rates - x.clamp(0, 1)).abs().max().item()
    print(f"max |rate - clip(x, 0, 1)| = {error:.4f} (bound 1/T = {1 / args.T:.4f})")
    if args.plot:
        print(f"wrote {plot(x, spikes, rates, args.plot)}")
    return error


def main(argv=None) -> int:
    """Run the example as a command: errors in one line (``--debug`` for the traceback), an exit status."""
    from spikeforge.errors import run_cli

    def command(arguments) -> int:
        run(arguments)
        return 0

    return run_cli(command, sys.argv[1:] if argv is None else list(argv), prog="if_vs_relu")


if __name__ == "__main__":
    sys.exit(main())
