"""``spikeforge energy``: write the energy card (card.md, card.json, energy.png) of a network on real data.

    spikeforge energy --model lif_fc_mnist --weights checkpoint_max.pth --data mnist -T 100
    spikeforge energy --model snnmlp_t --data random --batches 1 -b 2

``--model`` is ``lif_fc_mnist`` (Flatten -> Linear(784, 10) -> LIF, Poisson-coded; ``--weights`` takes a
checkpoint of ``python -m spikeforge.examples.lif_fc_mnist``) or a zoo name (``spikeforge.models.list_models()``;
``--weights`` is then passed to ``create_model(name, pretrained=FILE)``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["configure_parser", "run"]

BUILT_IN = ("lif_fc_mnist",)


class _Refused(Exception):
    """A bad input: reported as one line, exit code 2."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="lif_fc_mnist or a zoo model name (spikeforge.models)")
    parser.add_argument("--weights", metavar="FILE", default=None,
                        help="checkpoint file (a state_dict or {'model': state_dict}); default: random weights")
    parser.add_argument("--data", choices=("mnist", "fashion", "random"), default="mnist",
                        help="test images to measure on (default: mnist, the bundled copy)")
    parser.add_argument("--data-dir", default=None, help="folder with the .gz IDX files (needed for fashion)")
    parser.add_argument("-T", type=int, default=None,
                        help="time steps (default: 100 for lif_fc_mnist, 1 for zoo models)")
    parser.add_argument("--batches", type=int, default=4, help="batches to measure (default: 4)")
    parser.add_argument("-b", "--batch-size", type=int, default=None,
                        help="images per batch (default: 64 for lif_fc_mnist, 2 for zoo models)")
    parser.add_argument("--encoding", choices=("poisson", "direct"), default=None,
                        help="how images become T steps (default: poisson for lif_fc_mnist, direct for zoo models)")
    parser.add_argument("--costs", choices=("fp32", "fp16", "int8"), default="fp32",
                        help="energy per operation, Horowitz ISSCC 2014 at 45 nm (default: fp32, 4.6 / 0.9 pJ)")
    parser.add_argument("--mac-pj", type=float, default=None, help="your own E_MAC in pJ (with --ac-pj)")
    parser.add_argument("--ac-pj", type=float, default=None, help="your own E_AC in pJ (with --mac-pj)")
    parser.add_argument("--first-layer", choices=("auto", "once", "per-step"), default="auto",
                        help="charge the first layer's MACs once, at every step, or by whether its input changes")
    parser.add_argument("--tau", type=float, default=2.0, help="LIF tau of lif_fc_mnist (default: 2.0)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the Poisson spikes and random data")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--out", default=None, help="output folder (default: energy-<model>)")
    parser.add_argument("--no-plot", action="store_true", help="skip energy.png")


def _positive(args, name: str, flag: str) -> None:
    value = getattr(args, name)
    if value is not None and value < 1:
        raise _Refused(f"{flag} must be >= 1, got {value}")


def _build(args):
    """(model, description of its weights, input shape (C, H, W), is_built_in)."""
    if args.model in BUILT_IN:
        from .nets import WeightsFileError, build_lif_fc_mnist

        try:
            net = build_lif_fc_mnist(args.weights, tau=args.tau)
        except (WeightsFileError, ValueError) as e:
            raise _Refused(str(e)) from None
        return net, args.weights or "random weights", (1, 28, 28), True
    from ..models import create_model, list_models

    names = list_models()
    if args.model not in names:
        raise _Refused(f"unknown model {args.model!r}; choose {', '.join(BUILT_IN + tuple(names))}")
    if args.weights is not None and not Path(args.weights).is_file():
        raise _Refused(f"weights file not found: {args.weights}")
    try:
        model = create_model(args.model, pretrained=args.weights or None)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise _Refused(f"cannot build {args.model}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}") \
            from None
    cfg = getattr(model, "pretrained_cfg", None)
    shape = tuple(getattr(cfg, "input_size", (3, 224, 224)))
    return model, args.weights or "random weights", shape, False


def _images(args, shape, count: int):
    import torch

    if args.data == "random":
        # its own stream: the Poisson encoder draws from the global generator, seeded with --seed, and the same
        # seed here would give noise equal to the pixels (every pixel would fire at step 0)
        generator = torch.Generator().manual_seed(args.seed + 1_000_003)
        if args.model in BUILT_IN:   # pixel intensities in [0, 1]
            return torch.rand((count, *shape), generator=generator), "random images, uniform in [0, 1]"
        return torch.randn((count, *shape), generator=generator), "random images, standard normal"
    from ..datasets import MNIST, DatasetFileError, FashionMNIST

    if args.data == "fashion" and args.data_dir is None:
        raise _Refused("--data fashion needs --data-dir (a folder with the four Fashion-MNIST .gz files)")
    try:
        dataset = (MNIST if args.data == "mnist" else FashionMNIST)(args.data_dir, train=False)
        images, _ = dataset.as_tensors()
    except (DatasetFileError, OSError) as e:
        raise _Refused(str(e).strip().splitlines()[0]) from None
    if tuple(images.shape[1:]) != tuple(shape):
        raise _Refused(f"{args.model} takes {'x'.join(map(str, shape))} images; --data {args.data} gives "
                       f"{'x'.join(map(str, images.shape[1:]))} (use --data random)")
    what = "MNIST" if args.data == "mnist" else "Fashion-MNIST"
    return images[:count].float().div_(255.0), f"{what} test set, first {min(count, len(images)):,} images"


def _costs(args):
    from .costs import CostTable, cost_table

    if (args.mac_pj is None) != (args.ac_pj is None):
        raise _Refused("--mac-pj and --ac-pj go together")
    if args.mac_pj is not None:
        try:
            return CostTable(args.mac_pj, args.ac_pj, name="custom", source="given on the command line")
        except ValueError as e:
            raise _Refused(str(e)) from None
    return cost_table(args.costs)


def _run(args) -> int:
    import torch

    for name, flag in (("T", "-T"), ("batches", "--batches"), ("batch_size", "--batch-size")):
        _positive(args, name, flag)
    costs = _costs(args)
    try:
        device = torch.device(args.device)
        torch.empty(0, device=device)
    except (RuntimeError, ValueError) as e:
        raise _Refused(f"device {args.device!r} is not available: {str(e).strip().splitlines()[0]}") from None
    model, weights, shape, built_in = _build(args)
    weights = Path(weights).name if args.weights else weights
    T = args.T or (100 if built_in else 1)
    batch_size = args.batch_size or (64 if built_in else 2)
    encoding = args.encoding or ("poisson" if built_in else "direct")
    images, data_text = _images(args, shape, args.batches * batch_size)
    torch.manual_seed(args.seed)
    model = model.to(device)
    loader = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    first = {"auto": None, "once": False, "per-step": True}[args.first_layer]

    from .estimate import estimate

    report = estimate(model, loader, T=T, encoder=encoding, costs=costs, first_layer_mac_per_step=first,
                      device=device, model_name=f"{args.model} ({weights})",
                      data_name=f"{data_text}, {encoding} coding")
    out = Path(args.out or f"energy-{args.model}")
    plot = not args.no_plot
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("matplotlib is not installed (pip install 'spikeforge[viz]'): energy.png skipped", file=sys.stderr)
            plot = False
    try:
        written = report.save(out, plot=plot)
    except OSError as e:
        raise _Refused(f"cannot write into {out}: {e.strerror or e}") from None
    from .report import format_energy

    ann = report.ann
    ratio = f", ANN / SNN = {ann['ann_over_snn']:.2f}x" if ann["ann_over_snn"] else ""
    print(f"{args.model}: {format_energy(report.total_energy_pj)} per sample "
          f"({report.total_energy_pj:,.1f} pJ; ANN {format_energy(ann['energy_pj'])}{ratio}), "
          f"T={report.T}, {report.samples:,} samples, {costs.name} costs")
    for path in written:
        print(f"  {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except _Refused as e:
        print(f"spikeforge energy: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spikeforge energy: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the command answers in one line, never with a traceback
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"spikeforge energy: error: {type(e).__name__}: {text}", file=sys.stderr)
        return 1
