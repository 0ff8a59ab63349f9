"""Train the STBP models in fp32 or low bit, like the reference's ``main.py MODEL --dataset D [-q --bit B]``.

    python -m spikeforge.examples.stbp MNISTNet --dataset MNIST                     # fp32
    python -m spikeforge.examples.stbp MNISTNet --dataset MNIST -q --bit 8 --resume runs/<fp32 run>/checkpoint_max.pth
    python -m spikeforge.examples.stbp ResNet18 --dataset CIFAR10 --data-dir ~/data/cifar-10-batches-py
    torchrun --standalone --nproc_per_node=2 -m spikeforge.examples.stbp MNISTNet --dataset MNIST

``MODEL`` is a zoo name (``stbp_mnistnet``, ``stbp_cifarnet``, ``stbp_resnet18``) or the reference's
(``MNISTNet``, ``CifarNet``, ``ResNet18``). Images are normalised with the reference's mean/std and repeated
``--steps`` times (direct coding); the loss is cross-entropy on the output firing rate, as in the reference.
CIFAR-10 gets the reference's augmentation (random crop 32 with padding 4 and horizontal flip); MNIST and
Fashion-MNIST random crops with padding 2 (``--crop-pad``); the reference also flips MNIST horizontally, which
only hurts digits (``--flip`` restores it).

Defaults that reach the published accuracy on a CPU in minutes per epoch: Adam, lr 1e-3 with a cosine decay
over the run, batch 128, 15 epochs (fp32) or 5 (QAT; started from an fp32 checkpoint with ``--resume``, at
lr 1e-4). The
reference's own recipe (plain SGD at a constant lr 1e-3 for 200 epochs, batch 64) is ``--opt sgd --momentum 0
--schedule constant --epochs 200 -b 64``.

``-q --bit B`` trains with quantisation (:mod:`spikeforge.quantize`): by default the *integer* fake-quant model
(B-bit weights, integer thresholds, leak and biases, BatchNorm folded into the weights, a B-bit generic hardware
profile), which the run exports at the end as an integer network (``<out>/integer``), checks spike for spike
against the fake-quant model on the whole test set and reports in ``<out>/integer_report.json``.
``--profile NAME|JSON`` names the hardware profile it must fit (checked before training, every violation named).
``--export-only`` exports a finished quantised run's checkpoint (``-q --bit B --resume CKPT``) without training;
``--verify-integer DIR`` checks a saved integer network against the checkpoint's fake-quant model on the test set.
``--weights-only`` is the reference's scheme instead (fake-quantised Conv/Linear weights, everything else
float; nothing to export). ``--per-channel`` uses one weight scale per output channel.

``--resume CKPT``: a checkpoint of this script with the same model and quantisation resumes exactly (epoch,
optimizer, schedule, RNG); any other checkpoint of the same model (an fp32 run, the reference's
``{"model": state_dict, "acc", "epoch"}`` file) initialises the weights and training starts at epoch 0 (QAT from
fp32). Outputs in ``--out-dir``: ``args.txt``, ``metrics.jsonl`` (``test_acc`` per epoch), TensorBoard events,
``checkpoint_latest.pth`` and ``checkpoint_max.pth``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from spikeforge.errors import UsageError, check_device, check_existing, check_float, check_int, run_cli
from spikeforge.training import distributed

__all__ = ["build_parser", "main", "MODEL_ALIASES", "DATASETS", "load_dataset", "COMMAND"]

COMMAND = "python -m spikeforge.examples.stbp"

MODEL_ALIASES = {"mnistnet": "stbp_mnistnet", "cifarnet": "stbp_cifarnet", "resnet18": "stbp_resnet18"}

# name -> (mean, std, image shape); the reference's normalisation (facts file, C4)
DATASETS = {
    "MNIST": ((0.1307,), (0.3081,), (1, 28, 28)),
    "FashionMNIST": ((0.1307,), (0.3081,), (1, 28, 28)),
    "CIFAR10": ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261), (3, 32, 32)),
}
_RESUME_MUST_MATCH = ("model", "dataset", "quantize", "bit", "per_channel", "weights_only", "frac_bits", "steps",
                      "vth", "tau", "profile")


def _model_name(text: str) -> str:
    from spikeforge.models import is_model

    name = MODEL_ALIASES.get(text.lower(), text)
    if not is_model(name) or not name.startswith("stbp_"):
        raise argparse.ArgumentTypeError(f"unknown STBP model {text!r}; choose one of MNISTNet, CifarNet, "
                                         f"ResNet18 (or {', '.join(sorted(MODEL_ALIASES.values()))})")
    return name


def _bits(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bit must be an integer number of bits, got {text!r}") from None
    if not 2 <= value <= 16:
        raise argparse.ArgumentTypeError(f"--bit must be between 2 and 16 (the reference reports 8 and 4), "
                                         f"got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is reported in one line (no usage dump), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _profile_arg(text: str) -> str:
    """A profile name (``generic_int8``, ``generic_int4``) or a JSON file of :class:`HardwareProfile` fields."""
    from spikeforge.quantize import PROFILES

    if text in PROFILES or os.path.isfile(text):
        return text
    raise argparse.ArgumentTypeError(f"--profile {text!r} is neither a known profile ({', '.join(PROFILES)}) nor "
                                     "a JSON file of hardware profile fields")


def resolve_profile(text: str | None, bits: int):
    """The hardware profile ``--profile`` names (default: the generic ``bits``-bit profile)."""
    from spikeforge import quantize

    if text is None:
        return quantize.generic_profile(bits)
    if text in quantize.PROFILES:
        return quantize.PROFILES[text]
    try:
        data = json.loads(Path(text).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("the file must hold one JSON object of profile fields")
        data.setdefault("name", Path(text).stem)
        return quantize.HardwareProfile.from_dict(data)
    except (OSError, ValueError, TypeError) as error:
        raise UsageError(f"--profile {text}: not a usable hardware profile: {error}") from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=COMMAND, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=_model_name, metavar="MODEL", help="MNISTNet, CifarNet or ResNet18 (or zoo name)")
    p.add_argument("--dataset", "-d", choices=sorted(DATASETS), default="MNIST")
    p.add_argument("--data-dir", "--data_dir", default=None,
                   help="MNIST: the four .gz files (default: the copy inside spikeforge); FashionMNIST: the same "
                        "(default ../shared/data/fashion-mnist); CIFAR10: cifar-10-batches-py or "
                        "cifar-10-batches-bin, or the folder/archive holding one (required)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 15, or 5 with -q)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 1e-3, the reference's; 1e-4 for QAT started from fp32 weights)")
    p.add_argument("--opt", choices=["adam", "sgd"], default="adam", help="optimizer (reference: sgd, momentum 0)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                   help="lr schedule over the run, per iteration (reference: constant)")
    p.add_argument("-b", "--batch-size", dest="batch_size", type=int, default=128, help="batch size per process")
    p.add_argument("--test-batch-size", type=int, default=500)
    p.add_argument("--resume", "-r", default=None, metavar="CKPT",
                   help="resume this script's run, or initialise the weights from another checkpoint of the model")
    p.add_argument("-q", "--quantize", action="store_true", help="quantisation-aware training")
    p.add_argument("--bit", type=_bits, default=8, help="weight bits with -q (default 8)")
    p.add_argument("--per-channel", action="store_true", help="one weight scale per output channel")
    p.add_argument("--weights-only", action="store_true",
                   help="the reference's QAT: fake-quantised weights only (float neurons; no integer export)")
    p.add_argument("--frac-bits", type=int, default=None, help="fractional bits of the integer membrane")
    p.add_argument("--profile", type=_profile_arg, default=None, metavar="NAME|JSON",
                   help="with -q: the hardware profile the integer network must fit, checked before training and "
                        "at export (default generic_int<bit>; or a JSON file of HardwareProfile fields)")
    p.add_argument("--export-only", action="store_true",
                   help="with -q --resume CKPT (a quantised run of this script): no training; export CKPT's "
                        "integer network into --out-dir and check it spike for spike on the test set")
    p.add_argument("--verify-integer", default=None, metavar="DIR",
                   help="with -q --resume CKPT: no training; load the saved integer network DIR and check it "
                        "spike for spike against CKPT's fake-quant model on the test set")
    p.add_argument("--steps", "--timestep", "-T", dest="steps", type=int, default=2, help="time steps (default 2)")
    p.add_argument("--vth", "-v", "--Vth", dest="vth", type=float, default=0.4, help="threshold V_th (0.4)")
    p.add_argument("--tau", "-ta", dest="tau", type=float, default=0.25, help="membrane retention per step (0.25)")
    p.add_argument("--loss", choices=["ce_rate", "mse_rate"], default="ce_rate")
    p.add_argument("--flip", action="store_true", help="random horizontal flips on MNIST/FashionMNIST too")
    p.add_argument("--crop-pad", type=int, default=None, metavar="P",
                   help="random crops of the image padded by P pixels (default: 4 on CIFAR-10 as the reference, "
                        "2 on MNIST/FashionMNIST)")
    p.add_argument("--out-dir", "-o", default=None, help="run folder (default runs/<model>_<dataset>_<precision>)")
    p.add_argument("--seed", type=int, default=1, help="seed (the reference's: 1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per process")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--train-limit", type=int, default=None, help="use the first N training images")
    p.add_argument("--test-limit", type=int, default=None, help="use the first N test images")
    p.add_argument("--no-export", action="store_true", help="with -q: skip the integer export and its check")
    p.add_argument("--overwrite", action="store_true", help="write into --out-dir even if it holds an earlier run")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--p", "-p", dest="parallel", choices=["DDP", "ddp", "none"], default=None,
                   help="the reference's flag: DDP comes from torchrun (torchrun --nproc_per_node=N -m ...)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None,
                   help="accepted for torch.distributed.launch; torchrun sets LOCAL_RANK")
    return p


def check_args(args: argparse.Namespace) -> None:
    """:class:`~spikeforge.errors.UsageError` naming the first unusable option, before any work."""
    for name in ("batch_size", "test_batch_size", "steps"):
        check_int(getattr(args, name), f"--{name.replace('_', '-')}", minimum=1)
    check_int(args.epochs, "--epochs", minimum=0, allow_none=True)
    check_float(args.lr, "--lr", positive=True, allow_none=True)
    check_float(args.momentum, "--momentum", minimum=0.0)
    check_float(args.vth, "--vth")
    check_float(args.tau, "--tau")
    if not 0.0 <= args.tau <= 1.0:
        raise UsageError(f"--tau is STBP's retention factor and must be in [0, 1], got {args.tau}")
    check_int(args.train_limit, "--train-limit", minimum=1, allow_none=True)
    check_int(args.test_limit, "--test-limit", minimum=1, allow_none=True)
    check_int(args.threads, "--threads", minimum=1, allow_none=True)
    if (args.weights_only or args.per_channel or args.frac_bits is not None) and not args.quantize:
        raise UsageError("--weights-only, --per-channel and --frac-bits need -q")
    if args.crop_pad is not None and not 0 <= args.crop_pad <= 8:
        raise UsageError(f"--crop-pad must be in [0, 8], got {args.crop_pad}")
    if args.frac_bits is not None and not 0 <= args.frac_bits <= 8:
        raise UsageError(f"--frac-bits must be in [0, 8], got {args.frac_bits}")
    if args.model != "stbp_mnistnet" and args.dataset != "CIFAR10":
        raise UsageError(f"{args.model} takes 3x32x32 images; use --dataset CIFAR10")
    if args.model == "stbp_mnistnet" and args.dataset == "CIFAR10":
        raise UsageError("MNISTNet takes 1x28x28 images; use --dataset MNIST or FashionMNIST")
    if (args.profile is not None) and not (args.quantize and not args.weights_only):
        raise UsageError("--profile needs -q (and the integer model, not --weights-only)")
    if args.export_only and args.verify_integer:
        raise UsageError("--export-only writes an integer network and --verify-integer checks a saved one; pass one")
    for flag, on in (("--export-only", args.export_only), ("--verify-integer", args.verify_integer)):
        if on and (not (args.quantize and args.resume) or args.weights_only):
            raise UsageError(f"{flag} needs -q --bit B --resume CKPT, CKPT a quantised run of this script "
                             "(not --weights-only)")
    if args.verify_integer is not None:
        check_existing(args.verify_integer, "--verify-integer", kind="any")
    if args.resume and args.overwrite and not args.export_only:
        raise UsageError("--resume continues a run (or starts one from its weights) and --overwrite replaces one; "
                         "pass one of them")
    if args.resume:
        check_existing(args.resume, "--resume", kind="any")
    if args.data_dir is not None:
        check_existing(args.data_dir, "--data-dir", kind="any")
    if args.device is not None:
        check_device(args.device, "--device")


def default_out_dir(args) -> Path:
    precision = "fp32" if not args.quantize else f"q{args.bit}" + ("pc" if args.per_channel else "") + (
        "w" if args.weights_only else "")
    return Path("runs") / f"{args.model}_{args.dataset}_T{args.steps}_{precision}"


# ------------------------------------------------------------------------------------------------ data
def load_dataset(name: str, root=None, train_limit=None, test_limit=None):
    """``((train_x, train_y), (test_x, test_y))``: float images normalised with the reference's mean/std."""
    if name == "CIFAR10":
        from spikeforge.datasets import CIFAR10

        if root is None:
            raise UsageError("CIFAR10 needs --data-dir (cifar-10-batches-py or -bin, or the official archive "
                             "cifar-10-python.tar.gz / cifar-10-binary.tar.gz)")
        splits = [CIFAR10(root, train=t).as_tensors(torch.float32) for t in (True, False)]
    else:
        from spikeforge.datasets import MNIST, FashionMNIST

        cls = MNIST if name == "MNIST" else FashionMNIST
        splits = [cls(root, train=t).as_tensors(torch.float32) for t in (True, False)]
    mean, std, _ = DATASETS[name]
    mean = torch.tensor(mean).view(1, -1, 1, 1)
    std = torch.tensor(std).view(1, -1, 1, 1)
    (train_x, train_y), (test_x, test_y) = [((x - mean) / std, y) for x, y in splits]
    return (train_x[:train_limit], train_y[:train_limit]), (test_x[:test_limit], test_y[:test_limit])


def input_range(name: str) -> float:
    """The largest |value| a normalised image of data set ``name`` can take (pixels in [0, 1])."""
    mean, std, _ = DATASETS[name]
    return max(max(abs(-m / s), abs((1 - m) / s)) for m, s in zip(mean, std))


def make_augment(dataset: str, flip: bool, crop_pad: int | None = None):
    """``augment(x)`` for a training batch ``[N, C, H, W]`` (torch's global RNG, so resumes replay it): a random
    crop of the image padded by ``crop_pad`` pixels (default 4 for CIFAR-10, as the reference, else 0) and
    horizontal flips (CIFAR-10, or ``flip``)."""
    pad = (4 if dataset == "CIFAR10" else 0) if crop_pad is None else int(crop_pad)
    flip = flip or dataset == "CIFAR10"
    if not (pad or flip):
        return None
    mean, std, _ = DATASETS[dataset]
    black = torch.tensor([-m / s for m, s in zip(mean, std)]).view(1, -1, 1, 1)  # a normalised black pixel

    def augment(x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if pad:  # RandomCrop(size, padding=pad) before Normalize, as the reference: the border is black
            fill = black.to(x.device, x.dtype)
            padded = torch.nn.functional.pad(x - fill, (pad, pad, pad, pad)) + fill
            dy = torch.randint(0, 2 * pad + 1, (n,))
            dx = torch.randint(0, 2 * pad + 1, (n,))
            rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pad)
            x = padded.gather(2, rows.to(x.device))
            cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
            x = x.gather(3, cols.to(x.device))
        if flip:
            mask = (torch.rand(n) < 0.5).to(x.device)
            x = torch.where(mask.view(n, 1, 1, 1), x.flip(3), x)
        return x

    return augment


# ------------------------------------------------------------------------------------------------ checkpoints
def _read_resume(path: str, args) -> tuple[dict | None, dict | None]:
    """``(exact_resume_checkpoint, initial_state_dict)``: one of them is set."""
    from spikeforge.training import load_checkpoint
    from spikeforge.training.engine import REQUIRED_CHECKPOINT_KEYS

    ckpt = load_checkpoint(path)
    if all(k in ckpt for k in REQUIRED_CHECKPOINT_KEYS) and isinstance(ckpt.get("args"), dict):
        saved = ckpt["args"]
        if all(saved.get(k) == getattr(args, k) for k in _RESUME_MUST_MATCH):
            return ckpt, None
        if saved.get("model") not in (None, args.model):
            raise UsageError(f"--resume {path} is a checkpoint of {saved.get('model')}, not of {args.model}")
        if saved.get("quantize") and not args.quantize:
            raise UsageError(f"--resume {path} is a quantised run ({saved.get('bit')} bit); resume it with -q "
                             f"--bit {saved.get('bit')}")
        if saved.get("quantize"):
            raise UsageError(f"--resume {path} is a {saved.get('bit')}-bit run with other quantisation options; QAT "
                             "starts from an fp32 checkpoint (or resume that run with its own options)")
        return None, ckpt["net"]
    return None, ckpt


# ------------------------------------------------------------------------------------------------ main
def _main(argv: list[str]) -> int:
    from spikeforge.models import create_model, load_weights
    from spikeforge.models.stbp import checkpoint_filter_fn
    from spikeforge.training import CrossEntropyRateLoss, MSERateLoss, Trainer, WarmupCosine
    from spikeforge.training.cli import resume_checkpoint, resume_command, run_dir_for, run_fit, set_threads

    args = build_parser().parse_args(argv)
    check_args(args)
    exact, initial, resume_path = None, None, None
    if args.resume:
        resume_path = resume_checkpoint(args.resume, "--resume")
        exact, initial = _read_resume(str(resume_path), args)
    if args.epochs is None:
        args.epochs = 5 if args.quantize else 15
    if args.parallel and args.parallel.lower() == "ddp" and int(os.environ.get("WORLD_SIZE", "1") or 1) < 2:
        print("note: --p DDP: launch with torchrun --standalone --nproc_per_node=N -m spikeforge.examples.stbp "
              "... for several processes; running one process", file=sys.stderr)
    device = distributed.local_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ctx = distributed.init_distributed(device)
    torch.manual_seed(args.seed)
    if args.threads is not None:
        set_threads(args.threads)
    elif ctx.is_distributed and device.type == "cpu":
        set_threads(max(1, torch.get_num_threads() // ctx.world_size))
    main_rank = ctx.is_main
    try:
        num_classes = 10
        model = create_model(args.model, num_classes=num_classes, steps=args.steps, v_th=args.vth, tau=args.tau)
        if initial is not None:  # the weights of another run of this model (QAT from fp32) or a reference file
            load_weights(model, checkpoint_filter_fn(initial, model))
            if main_rank:
                print(f"initialised the weights from {resume_path}")
        if args.lr is None:  # resuming: the run's own
            args.lr = exact["args"].get("lr") if exact is not None else None
        if args.lr is None:
            args.lr = 1e-4 if (args.quantize and initial is not None) else 1e-3
        if args.crop_pad is None:
            args.crop_pad = 4 if args.dataset == "CIFAR10" else 2
        (train_x, train_y), test_data = load_dataset(args.dataset, args.data_dir, args.train_limit,
                                                     args.test_limit)
        if len(train_y) < args.batch_size * ctx.world_size and args.epochs > 0:
            raise UsageError(f"{len(train_y)} training images are fewer than one batch (-b {args.batch_size} x "
                             f"{ctx.world_size} processes); use more images or a smaller -b")
        if args.quantize:
            from spikeforge import quantize

            if args.weights_only:
                quantize.prepare_qat(model, bits=args.bit, per_channel=args.per_channel)
            else:
                model.eval()  # BatchNorm is folded with its running statistics
                # resuming: the same fractional bits as the run (they were chosen from its initial weights)
                frac_bits = exact["args"].get("frac_bits_layers") if exact is not None else None
                profile = resolve_profile(args.profile, args.bit)
                quantize.prepare_qat(model, bits=args.bit, per_channel=args.per_channel, integer=True,
                                     profile=profile, frac_bits=frac_bits if frac_bits else args.frac_bits,
                                     input_range=input_range(args.dataset))
                args.frac_bits_layers = model.integer_plan.frac_bits()
                if exact is not None:
                    model.load_state_dict(exact["net"])
                check_fits(model, profile, args)  # before any training: the layout must fit the chip
        if args.export_only or args.verify_integer:
            if exact is None:
                raise UsageError(f"--resume {resume_path} is not a checkpoint of a {args.bit}-bit run of this "
                                 "script with these options; pass the -q/--bit/--per-channel/--frac-bits/"
                                 "--profile/--steps/--vth/--tau it was trained with")
            return export_only(model, exact, resume_path, test_data, args)
        model.to(device)
        base = Path(args.out_dir) if args.out_dir else default_out_dir(args)
        out_dir = run_dir_for(base, resume=resume_path if exact is not None else None, overwrite=args.overwrite,
                              resume_flag="--resume")
        args.out_dir = str(out_dir)
        if main_rank:
            print(args)
            print(model)
            print(f"run folder: {out_dir}", flush=True)
        params = [p for p in model.parameters() if p.requires_grad]
        if args.opt == "adam":
            optimizer = torch.optim.Adam(params, lr=args.lr)
        else:
            optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum)
        steps_per_epoch = max(1, len(train_y) // (args.batch_size * ctx.world_size))
        schedule = WarmupCosine(optimizer, total_steps=max(1, args.epochs * steps_per_epoch)) \
            if args.schedule == "cosine" else None
        loss = CrossEntropyRateLoss() if args.loss == "ce_rate" else MSERateLoss(num_classes)
        augment = make_augment(args.dataset, args.flip, args.crop_pad)

        def forward(net, x):
            return net(augment(x)) if (augment is not None and net.training) else net(x)

        trainer = Trainer(model, optimizer, loss, forward=forward, schedule=schedule, device=device,
                          batch_size=args.batch_size, eval_batch_size=args.test_batch_size, out_dir=out_dir,
                          args=args, header=f"{args.model} {args.dataset} -> {out_dir}",
                          progress=not args.no_progress)
        exit_code = run_fit(trainer, (train_x, train_y), test_data, epochs=args.epochs,
                            resume=resume_path if exact is not None else None,
                            resume_hint=lambda ckpt: resume_command(COMMAND, argv, ckpt, "--resume"))
        if exit_code is not None:
            return exit_code
        if main_rank and args.quantize and not args.weights_only and not args.no_export:
            report = export_and_check(model, out_dir, test_data, args)
            print(json.dumps(report, indent=2))
        return 0
    finally:
        distributed.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Run the command; errors are reported in one line (``--debug`` for the traceback)."""
    return run_cli(_main, sys.argv[1:] if argv is None else list(argv), prog=COMMAND)


def check_fits(model, profile, args) -> None:
    """:class:`UsageError` in one line naming ``--profile`` and every violation, if the integer network of
    ``model`` (as it stands) does not fit ``profile``."""
    from spikeforge import quantize

    try:
        quantize.export_integer(model, profile=profile)
    except quantize.ProfileViolationError as error:
        flag = f"--profile {args.profile}" if args.profile else f"--bit {args.bit} (profile {profile.name})"
        raise UsageError(f"{flag}: the integer {args.model} violates hardware profile {profile.name!r}: "
                         + "; ".join(error.violations)) from None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check_integer(model, net, test_data, args, checkpoint) -> dict:
    """Run the integer network ``net`` and the fake-quant ``model`` on the test set: every spike of every layer,
    accuracy of both, sizes."""
    from spikeforge import quantize

    model.cpu().eval()
    cmp = quantize.compare_spikes(model, net, test_data[0], test_data[1], batch_size=args.test_batch_size)
    return {"model": args.model, "dataset": args.dataset, "bits": args.bit, "steps": args.steps,
            "checkpoint": str(checkpoint), **cmp, "size_bytes": net.size_bytes(),
            "fp32_bytes": 4 * sum(p.numel() for p in model.parameters()), "profile": net.profile.name}


def export_and_check(model, out_dir: Path, test_data, args, checkpoint=None) -> dict:
    """Export the integer network of ``checkpoint`` (default: the run's best) into ``out_dir/integer``, load it
    back and check it on the test set next to the fake-quant model; the report also goes to
    ``out_dir/integer_report.json``."""
    from spikeforge import quantize
    from spikeforge.training import load_checkpoint

    if checkpoint is None:
        best = out_dir / "checkpoint_max.pth"
        if best.is_file():
            model.load_state_dict(load_checkpoint(best)["net"])
        checkpoint = best if best.is_file() else "final weights"
    model.cpu().eval()
    net = quantize.export_integer(model, profile=resolve_profile(args.profile, args.bit))
    net.save(out_dir / "integer")
    net = quantize.load_integer(out_dir / "integer")
    report = check_integer(model, net, test_data, args, checkpoint)
    report["file_bytes"] = net.file_bytes(out_dir / "integer")
    _write_json(out_dir / "integer_report.json", report)
    return report


def export_only(model, ckpt: dict, path: Path, test_data, args) -> int:
    """``--export-only`` / ``--verify-integer``: no training, the checkpoint's integer network checked."""
    from spikeforge import quantize

    model.load_state_dict(ckpt["net"])
    if args.verify_integer:
        net = quantize.load_integer(args.verify_integer)  # IntegerFileError names a corrupt or foreign file
        report = check_integer(model, net, test_data, args, path)
        report["integer"] = str(args.verify_integer)
    else:
        base = Path(args.out_dir) if args.out_dir else Path(path).parent / f"export_{Path(path).stem}"
        from spikeforge.training.cli import run_dir_for

        out_dir = run_dir_for(base, overwrite=args.overwrite, resume_flag="--resume")
        out_dir.mkdir(parents=True, exist_ok=True)
        report = export_and_check(model, out_dir, test_data, args, checkpoint=path)
        report["integer"] = str(out_dir / "integer")
    print(json.dumps(report, indent=2))
    if report["mismatched_positions"] or not report["output_counts_identical"]:
        print(f"{COMMAND}: error: the integer network's spikes differ from the fake-quant model's at "
              f"{report['mismatched_positions']} positions", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
