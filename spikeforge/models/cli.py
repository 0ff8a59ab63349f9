"""``spikeforge classify`` and ``spikeforge profile``: the model zoo from the command line.

Only argparse is imported at module level so ``spikeforge --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys


def configure_classify_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image file(s) to classify")
    parser.add_argument("--model", default="snnmlp_t", help="zoo model name (default: snnmlp_t)")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--weights", metavar="FILE", help="checkpoint file (bare state_dict or {'model': ...})")
    weights.add_argument("--pretrained", action="store_true",
                         help="download the official weights into the torch.hub cache (needs network once)")
    weights.add_argument("--random-weights", action="store_true",
                         help="run with untrained weights (for smoke tests; the predictions mean nothing)")
    parser.add_argument("--top-k", type=int, default=5, help="how many classes to print (default: 5)")
    parser.add_argument("--img-size", type=int, default=None, help="crop size (default: the model's, 224)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _error(message: str) -> int:
    print(f"spikeforge: error: {message}", file=sys.stderr)
    return 2


def _unknown_model(name: str) -> str | None:
    """The error for an unregistered ``--model`` (naming close matches), or ``None`` if it is registered."""
    from ._registry import is_model, unknown_model_message

    if is_model(name):
        return None
    return unknown_model_message(name).replace("unknown model name", "unknown --model", 1)


def run_classify(args: argparse.Namespace) -> int:
    if not (args.weights or args.pretrained or args.random_weights):
        return _error("no weights given: pass --weights FILE, --pretrained to download the official weights, "
                      "or --random-weights to run an untrained model (its predictions are meaningless)")
    if args.top_k < 1:
        return _error(f"--top-k must be >= 1, got {args.top_k}")
    import torch

    from ._factory import create_model
    from ._weights import WeightsMismatchError
    from .transforms import imagenet_class_names, imagenet_eval_transform, load_image

    if (unknown := _unknown_model(args.model)) is not None:
        return _error(unknown)
    pretrained = True if args.pretrained else args.weights
    try:
        device = torch.device(args.device)
        model = create_model(args.model, pretrained=pretrained).to(device).eval()
    except (FileNotFoundError, ValueError, WeightsMismatchError, RuntimeError) as err:
        return _error(str(err))
    if args.random_weights:
        print("warning: --random-weights: the model is untrained, its predictions are meaningless",
              file=sys.stderr)
    from ._pretrained import PretrainedCfg

    cfg = getattr(model, "pretrained_cfg", None) or PretrainedCfg(architecture=args.model)  # ImageNet defaults
    img_size = args.img_size or cfg.input_size[-1]
    transform = imagenet_eval_transform(img_size, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation,
                                        mean=cfg.mean, std=cfg.std)
    names = imagenet_class_names()
    try:
        batch = torch.stack([transform(load_image(path)) for path in args.images]).to(device)
    except (FileNotFoundError, OSError) as err:
        return _error(f"cannot read IMAGE: {err}")
    with torch.inference_mode():
        probabilities = model(batch).float().softmax(dim=-1)
    k = min(args.top_k, probabilities.shape[-1])
    top_p, top_i = probabilities.topk(k, dim=-1)
    weights_note = "random weights" if args.random_weights else ("official weights" if args.pretrained
                                                                  else args.weights)
    for path, p_row, i_row in zip(args.images, top_p.tolist(), top_i.tolist()):
        print(f"{path}  ({args.model}, {weights_note})")
        for rank, (p, i) in enumerate(zip(p_row, i_row), start=1):
            label = names[i] if i < len(names) else f"class {i}"
            print(f"  {rank}. {label:<32s} {p:.4f}")
    return 0


def configure_profile_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="snnmlp_t", help="zoo model name (default: snnmlp_t)")
    parser.add_argument("--img-size", type=int, default=224, help="input height and width (default: 224)")


def run_profile(args: argparse.Namespace) -> int:
    from .profile import profile_model

    if (unknown := _unknown_model(args.model)) is not None:
        return _error(unknown)
    if args.img_size < 1:
        return _error(f"--img-size must be positive, got {args.img_size}")
    try:
        result = profile_model(args.model, img_size=args.img_size)
    except (ValueError, RuntimeError) as err:
        return _error(f"cannot profile {args.model} at --img-size {args.img_size}: {err}")
    print(result)
    print("(multiply-accumulates of convolutions and matmuls from torch.utils.flop_counter; "
          "normalisation, activations and LIF recurrences are not counted)")
    return 0
