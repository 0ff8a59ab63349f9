"""One layer of LIF neurons classifying MNIST, SpikingJelly's ``lif_fc_mnist`` with the same flags.

Model: Flatten -> Linear(784, 10, bias=False) -> LIFNode(tau, ATan surrogate); input: Poisson spikes of
the pixel intensities for T steps; output: each class neuron's firing rate; loss: MSE against the one-hot
label. Published setting (SpikingJelly docs: 92.9 % after 100 epochs)::

    python -m spikeforge.examples.lif_fc_mnist -T 100 -b 64 -opt adam -lr 1e-3 -tau 2.0 -epochs 100

Speed: all T steps are encoded at once and the network runs in multi-step mode. On the CPU the
encoder and the linear layer are fused (:func:`spikeforge.fused_encoding.poisson_linear`): only the
non-zero pixels draw random numbers and only their weight columns are summed, which is the same
computation as Linear(PoissonEncoder(x)) with far fewer operations. The LIF layer then runs once over
``[T, B, 10]``. On other devices (or ``--dense``) the spikes are materialised and the Sequential runs as is.

Writes into ``<out-dir>/T{T}_b{b}_{opt}_lr{lr}[_amp]/``: args.txt, metrics.jsonl (and TensorBoard
scalars when tensorboard is installed), checkpoint_latest.pth / checkpoint_max.pth, v_t_array.npy and
s_t_array.npy (membrane and spikes of the 10 output neurons for test image 0, shape [T, 10]) and the
plots spikes.png, membrane.png and curves.png (with matplotlib).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from spikeforge import encoding, functional, layer, neuron, surrogate
from spikeforge.fused_encoding import has_fast_kernels, poisson_linear
from spikeforge.training import add_spikingjelly_flags


class SNN(nn.Module):
    """Flatten -> Linear(784, 10, bias=False) -> LIFNode, in multi-step mode (state_dict as SpikingJelly's)."""

    def __init__(self, tau: float = 2.0, dense: bool = False):
        super().__init__()
        self.layer = nn.Sequential(
            layer.Flatten(),
            layer.Linear(28 * 28, 10, bias=False),
            neuron.LIFNode(tau=tau, surrogate_function=surrogate.ATan()),
        )
        functional.set_step_mode(self, "m")
        self.dense = dense
        self.encoder = encoding.PoissonEncoder()

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Spikes ``[T, B, 1, 28, 28]`` -> output spikes ``[T, B, 10]``."""
        return self.layer(x_seq)

    def forward_poisson(self, images: torch.Tensor, T: int) -> torch.Tensor:
        """Images ``[B, 1, 28, 28]`` (uint8 grey levels or floats in [0, 1]) -> output spikes ``[T, B, 10]``."""
        linear = self.layer[1]
        if not self.dense and has_fast_kernels() and linear.weight.device.type == "cpu":
            return self.layer[2](poisson_linear(images, linear.weight, T))
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images
        return self.forward(self.encoder.encode_sequence(x, T))

    def firing_rate(self, images: torch.Tensor, T: int) -> torch.Tensor:
        return self.forward_poisson(images, T).mean(0)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description="LIF MNIST Training")
    add_spikingjelly_flags(
        parser, T=100, batch_size=64, epochs=100, opt="adam", lr=1e-3,
        data_help="folder with the four MNIST .gz files (or torchvision's MNIST/raw under it); "
                  "default: the copy bundled with spikeforge",
        default_threads=1,
        threads_help="CPU threads for torch and numba (default: 1; this network's ops are too small to gain "
                     "from more, and two threads measured 2-4x slower on a 2-core machine)",
    )
    parser.add_argument("-tau", default=2.0, type=float, help="parameter tau of LIF neuron")
    parser.add_argument("--dense", action="store_true",
                        help="materialise the Poisson spikes and run the plain Sequential (slower; the "
                             "fused path computes the same thing)")
    return parser


def _check_args(args) -> None:
    for name in ("T", "b"):
        if getattr(args, name) < 1:
            raise SystemExit(f"-{name} must be >= 1, got {getattr(args, name)}")
    if args.epochs < 0:
        raise SystemExit(f"-epochs must be >= 0, got {args.epochs}")
    if args.lr <= 0:
        raise SystemExit(f"-lr must be > 0, got {args.lr}")
    if args.tau <= 1:
        raise SystemExit(f"-tau must be > 1 (the LIF decay is 1/tau), got {args.tau}")


def load_mnist(data_dir, train_limit=None, test_limit=None):
    from spikeforge.datasets import MNIST

    train_x, train_y = MNIST(data_dir, train=True).as_tensors()
    test_x, test_y = MNIST(data_dir, train=False).as_tensors()
    return (train_x[:train_limit], train_y[:train_limit]), (test_x[:test_limit], test_y[:test_limit])


def run_dir(args) -> Path:
    name = f"T{args.T}_b{args.b}_{args.opt}_lr{args.lr}" + ("_amp" if args.amp else "")
    return Path(args.out_dir) / name


@torch.no_grad()
def record_test_image(net: SNN, image: torch.Tensor, T: int, out_dir: Path):
    """Membrane [T, 10] and spikes [T, 10] of the output layer for one image; saved as .npy."""
    import numpy as np

    net.eval()
    lif = net.layer[2]
    lif.store_v_seq = True
    try:
        spikes = net.forward_poisson(image.unsqueeze(0), T)[:, 0]
        v_seq = lif.v_seq[:, 0]
    finally:
        lif.store_v_seq = False
        functional.reset_net(net)
    v_t_array, s_t_array = v_seq.float().cpu().numpy(), spikes.float().cpu().numpy()
    np.save(out_dir / "v_t_array.npy", v_t_array)
    np.save(out_dir / "s_t_array.npy", s_t_array)
    return v_t_array, s_t_array


def write_plots(out_dir: Path, v_t_array, s_t_array, label: int, v_threshold: float) -> list[Path]:
    """spikes.png, membrane.png and curves.png; empty list (with a note) when matplotlib is missing."""
    try:
        from spikeforge import visualizing
    except ImportError as e:
        print(f"plots skipped: {e}")
        return []
    try:
        return visualizing.save_run_plots(out_dir, v_t_array, s_t_array, label=label, v_threshold=v_threshold)
    except ImportError as e:
        print(f"plots skipped: {e}")
        return []


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    from spikeforge import training
    from spikeforge.datasets import DatasetFileError

    args = (parser or build_parser()).parse_args(argv)
    _check_args(args)
    print(args)
    device = training.setup_run(args)
    net = SNN(tau=args.tau, dense=args.dense).to(device)
    print(net)
    try:
        train_data, test_data = load_mnist(args.data_dir, args.train_limit, args.test_limit)
    except DatasetFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    optimizer = training.make_optimizer(net, args)
    out_dir = run_dir(args)
    training.save_args(args, out_dir)
    exit_code = training.fit_or_exit_code(
        net=net, forward=lambda images: net.firing_rate(images, args.T), optimizer=optimizer,
        train_data=train_data, test_data=test_data, batch_size=args.b, epochs=args.epochs,
        out_dir=out_dir, device=device, amp=args.amp, resume=args.resume,
        header=f"{args}\n{out_dir}", progress=not args.no_progress)
    if exit_code is not None:
        return exit_code
    image, label = test_data[0][0].to(device), int(test_data[1][0])
    v_t_array, s_t_array = record_test_image(net, image, args.T, out_dir)
    print(f"Firing rate: {s_t_array.mean(0)}")
    if not args.no_plots:
        written = write_plots(out_dir, v_t_array, s_t_array, label, net.layer[2].v_threshold)
        if written:
            print("plots: " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
