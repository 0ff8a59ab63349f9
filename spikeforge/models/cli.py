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
    parser.add_argument("--img-size", type=int, default=None,
                        help="crop size (default: the model's, 224; the model must accept it)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _error(message: str) -> int:
    """Raise the message as a :class:`~spikeforge.errors.UsageError`: ``spikeforge`` prints it in one line and
    exits with status 2 (:func:`spikeforge.errors.run_cli`)."""
    from ..errors import UsageError

    raise UsageError(message)


def _unknown_model(name: str) -> str | None:
    """The error for an unregistered ``--model`` (naming close matches), or ``None`` if it is registered."""
    from ._registry import is_model, unknown_model_message

    if is_model(name):
        return None
    return unknown_model_message(name).replace("unknown model name", "unknown --model", 1)


def _check_img_size(model: str, img_size: int, default: int) -> None:
    """``UsageError`` unless the model runs on ``img_size`` x ``img_size`` images (tried on the meta device, no
    weights allocated: well under a second)."""
    from ..errors import UsageError, check_int
    from .profile import profile_model

    check_int(img_size, "--img-size", minimum=1)
    try:
        profile_model(model, img_size=img_size)
    except (ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"--img-size {img_size}: {model} cannot take {img_size}x{img_size} images ({reason}); "
                         f"use its own size, {default}") from None


def run_classify(args: argparse.Namespace) -> int:
    from ..errors import UsageError, UserError, check_device, check_int

    if not (args.weights or args.pretrained or args.random_weights):
        return _error("no weights given: pass --weights FILE, --pretrained to download the official weights, "
                      "or --random-weights to run an untrained model (its predictions are meaningless)")
    check_int(args.top_k, "--top-k", minimum=1)
    check_int(args.img_size, "--img-size", minimum=1, allow_none=True)  # 0 is not "the default"
    if (unknown := _unknown_model(args.model)) is not None:
        return _error(unknown)
    device = check_device(args.device, "--device")
    import torch

    from ._factory import create_model
    from ._pretrained import PretrainedCfg
    from ._registry import get_pretrained_cfg
    from ._weights import load_checkpoint
    from .transforms import imagenet_class_names, imagenet_eval_transform, load_image

    cfg = get_pretrained_cfg(args.model) or PretrainedCfg(architecture=args.model)  # ImageNet defaults
    if args.img_size is not None and args.img_size != cfg.input_size[-1]:
        _check_img_size(args.model, args.img_size, cfg.input_size[-1])
    flag = "--pretrained" if args.pretrained else "--weights"
    try:
        # a --weights file is read (and refused when unusable) before the model is built
        pretrained = True if args.pretrained else (load_checkpoint(args.weights) if args.weights else None)
        model = create_model(args.model, pretrained=pretrained).to(device).eval()
    except UserError as err:
        message = str(err).removeprefix("pretrained: ").replace("the given state_dict", f"{args.weights}", 1)
        raise UsageError(f"{flag}: {message}") from None
    if args.random_weights:
        print("warning: --random-weights: the model is untrained, its predictions are meaningless",
              file=sys.stderr)
    cfg = getattr(model, "pretrained_cfg", None) or cfg
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
        return _error(f"--img-size must be >= 1, got {args.img_size}")
    try:
        result = profile_model(args.model, img_size=args.img_size)
    except (ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return _error(f"cannot profile {args.model} at --img-size {args.img_size}: {reason}")
    print(result)
    print("(multiply-accumulates of convolutions and matmuls from torch.utils.flop_counter; "
          "normalisation, activations and LIF recurrences are not counted)")
    return 0
