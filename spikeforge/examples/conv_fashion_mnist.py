"""A convolutional SNN for Fashion-MNIST, SpikingJelly's ``conv_fashion_mnist`` with the same flags.

Model (all layers in multi-step mode, IF neurons with the ATan surrogate)::

    {Conv2d(3x3) - BatchNorm2d - IFNode - MaxPool2d(2)} x 2 - Flatten
    - Linear(C*7*7, C*4*4) - IFNode - Linear(C*4*4, 10) - IFNode

Direct input coding: the analog image is repeated for T steps (T=4); the output is the mean firing
rate, trained with MSE against the one-hot label, SGD with cosine annealing. SpikingJelly reports
93.08 % test accuracy (T=4, C=128, 64 epochs, on a GPU)::

    python -m spikeforge.examples.conv_fashion_mnist -T 4 -b 128 -epochs 64 -opt sgd -lr 0.1 -channels 128

On a CPU an epoch takes minutes; ``-channels 32`` or ``--train-limit`` make it quick.
Outputs as in :mod:`spikeforge.examples.lif_fc_mnist` (checkpoints, metrics.jsonl, args.txt, the output
layer's v/s arrays for test image 0 and spikes.png / membrane.png / curves.png); ``-save-es DIR`` also
draws the spikes of the first {Conv2d-BatchNorm2d-IFNode} block for test image 0, one picture per step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from spikeforge import functional, layer, neuron, surrogate
from spikeforge.training import add_spikingjelly_flags


class CSNN(nn.Module):
    def __init__(self, T: int, channels: int):
        super().__init__()
        self.T = T
        self.conv_fc = nn.Sequential(
            layer.Conv2d(1, channels, kernel_size=3, padding=1, bias=False),
            layer.BatchNorm2d(channels),
            neuron.IFNode(surrogate_function=surrogate.ATan()),
            layer.MaxPool2d(2, 2),  # 14 x 14
            layer.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            layer.BatchNorm2d(channels),
            neuron.IFNode(surrogate_function=surrogate.ATan()),
            layer.MaxPool2d(2, 2),  # 7 x 7
            layer.Flatten(),
            layer.Linear(channels * 7 * 7, channels * 4 * 4, bias=False),
            neuron.IFNode(surrogate_function=surrogate.ATan()),
            layer.Linear(channels * 4 * 4, 10, bias=False),
            neuron.IFNode(surrogate_function=surrogate.ATan()),
        )
        functional.set_step_mode(self, "m")

    def forward_spikes(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 1, 28, 28]`` -> output spikes ``[T, N, 10]`` (direct coding: repeated input)."""
        return self.conv_fc(x.unsqueeze(0).expand(self.T, *x.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 1, 28, 28]`` -> firing rates ``[N, 10]``."""
        return self.forward_spikes(x).mean(0)

    def spiking_encoder(self) -> nn.Sequential:
        """The first {Conv2d-BatchNorm2d-IFNode} block, which turns the analog image into spikes."""
        return self.conv_fc[0:3]


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description="Classify Fashion-MNIST")
    add_spikingjelly_flags(
        parser, T=4, batch_size=128, epochs=64, opt="sgd", lr=0.1,
        data_help="folder with the four Fashion-MNIST .gz files (or torchvision's FashionMNIST/raw under it); "
                  "default: ../shared/data/fashion-mnist next to the source tree",
        default_threads=None, threads_help="CPU threads for torch and numba (default: their own defaults)",
    )
    parser.add_argument("-channels", default=128, type=int, help="channels of CSNN")
    parser.add_argument("-save-es", default=None,
                        help="dir for saving the spikes of the first {Conv2d-BatchNorm2d-IFNode} for test image 0")
    return parser


def _check_args(args) -> None:
    for name in ("T", "b", "channels"):
        if getattr(args, name) < 1:
            raise SystemExit(f"-{name} must be >= 1, got {getattr(args, name)}")
    if args.epochs < 0:
        raise SystemExit(f"-epochs must be >= 0, got {args.epochs}")
    if args.lr <= 0:
        raise SystemExit(f"-lr must be > 0, got {args.lr}")


def load_fashion_mnist(data_dir, train_limit=None, test_limit=None):
    from spikeforge.datasets import FashionMNIST

    train_x, train_y = FashionMNIST(data_dir, train=True).as_tensors(torch.float32)
    test_x, test_y = FashionMNIST(data_dir, train=False).as_tensors(torch.float32)
    return (train_x[:train_limit], train_y[:train_limit]), (test_x[:test_limit], test_y[:test_limit])


def run_dir(args) -> Path:
    name = f"T{args.T}_b{args.b}_{args.opt}_lr{args.lr}_c{args.channels}" + ("_amp" if args.amp else "")
    return Path(args.out_dir) / name


@torch.no_grad()
def record_test_image(net: CSNN, image: torch.Tensor, out_dir: Path):
    import numpy as np

    net.eval()
    last = net.conv_fc[-1]
    last.store_v_seq = True
    try:
        spikes = net.forward_spikes(image.unsqueeze(0))[:, 0]
        v_seq = last.v_seq[:, 0]
    finally:
        last.store_v_seq = False
        functional.reset_net(net)
    v_t_array, s_t_array = v_seq.float().cpu().numpy(), spikes.float().cpu().numpy()
    np.save(out_dir / "v_t_array.npy", v_t_array)
    np.save(out_dir / "s_t_array.npy", s_t_array)
    return v_t_array, s_t_array


@torch.no_grad()
def save_encoder_spikes(net: CSNN, image: torch.Tensor, save_dir: Path) -> list[Path]:
    """s_{t}.png: the first block's spike maps (C channels tiled) for one image at every step."""
    from spikeforge import visualizing

    plt = visualizing._pyplot()
    net.eval()
    encoder = net.spiking_encoder()
    spikes = encoder(image.unsqueeze(0).unsqueeze(0).expand(net.T, 1, *image.shape))[:, 0]
    functional.reset_net(net)
    save_dir.mkdir(parents=True, exist_ok=True)
    channels = spikes.shape[1]
    ncols = 8 if channels % 8 == 0 else 1
    written = []
    for t in range(net.T):
        fig, _ = visualizing.plot_2d_feature_map(spikes[t], channels // ncols, ncols, 2,
                                                 f"first-block spikes $S[{t}]$ ({channels} channels)")
        path = save_dir / f"s_{t}.png"
        fig.savefig(path, pad_inches=0.02, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    from spikeforge import training
    from spikeforge.datasets import DatasetFileError

    from .lif_fc_mnist import write_plots

    args = build_parser().parse_args(argv)
    _check_args(args)
    print(args)
    device = training.setup_run(args)
    net = CSNN(T=args.T, channels=args.channels).to(device)
    print(net)
    try:
        train_data, test_data = load_fashion_mnist(args.data_dir, args.train_limit, args.test_limit)
    except DatasetFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    optimizer = training.make_optimizer(net, args)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(args.epochs, 1))
    out_dir = run_dir(args)
    training.save_args(args, out_dir)
    exit_code = training.fit_or_exit_code(
        net=net, forward=net, optimizer=optimizer, train_data=train_data, test_data=test_data,
        batch_size=args.b, epochs=args.epochs, out_dir=out_dir, device=device, amp=args.amp,
        scheduler=scheduler, resume=args.resume, header=f"{args}\n{out_dir}",
        progress=not args.no_progress)
    if exit_code is not None:
        return exit_code
    image, label = test_data[0][0].to(device), int(test_data[1][0])
    v_t_array, s_t_array = record_test_image(net, image, out_dir)
    print(f"Firing rate: {s_t_array.mean(0)}")
    if not args.no_plots:
        written = write_plots(out_dir, v_t_array, s_t_array, label, net.conv_fc[-1].v_threshold)
        if args.save_es:
            written += save_encoder_spikes(net, image, Path(args.save_es) / "visualization")
        if written:
            print("plots: " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
