"""Train a small timm ANN on an image folder, to be the teacher of a distillation run of ``main_finetune``.

    python -m spikeforge.datasets.imagefolder --out mnist10k --train-limit 10000 --val-limit 2000
    python -m spikeforge.examples.train_teacher --model resnet10t --data_path mnist10k --input_size 64 \\
        --epochs 2 --output teacher_resnet10t.pth
    python -m spikeforge.examples.main_finetune --model metaspikformer_tiny --data_path mnist10k --kd \\
        --teacher_model resnet10t --teacher_path teacher_resnet10t.pth --distillation_type hard ...

The teacher sees the student's inputs: the same evaluation transform (resize + centre crop, ImageNet
normalisation) and, for training, the same random-resized-crop augmentation without RandAugment or erasing.
AdamW with a cosine schedule, through the training engine (progress bar, ``metrics.jsonl`` in ``--run_dir``
when given). The weights go to ``--output`` as a plain ``state_dict`` (written atomically; an existing file is
never replaced) that ``--teacher_path`` reads with ``weights_only=True``. Needs the ``timm`` extra.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spikeforge.errors import UsageError, check_existing, check_float, check_int, run_cli

COMMAND = "python -m spikeforge.examples.train_teacher"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=COMMAND, description="Train a timm ANN teacher on an image folder "
                                                               "(train/ + val/) for main_finetune --kd")
    add = parser.add_argument
    add("--model", default="resnet10t", help="timm model name (default: resnet10t)")
    add("--data_path", required=True, help="folder with train/ and val/ image folders")
    add("--input_size", default=224, type=int, help="image size; use the student's (default: 224)")
    add("--epochs", default=2, type=int)
    add("--batch_size", default=64, type=int)
    add("--lr", default=2e-3, type=float, help="AdamW learning rate (default: 2e-3)")
    add("--weight_decay", default=0.05, type=float)
    add("--scale", type=float, nargs=2, default=(0.5, 1.0), metavar=("MIN", "MAX"),
        help="random-resized-crop area range (default: 0.5 1.0)")
    add("--output", required=True, help="the .pth file to write (must not exist)")
    add("--run_dir", default=None, help="optional run folder for metrics.jsonl / TensorBoard")
    add("--num_workers", default=1, type=int)
    add("--seed", default=0, type=int)
    add("--no_progress", action="store_true")
    return parser


def _main(argv: list[str]) -> int:
    args = get_args_parser().parse_args(argv)
    for name, minimum in (("input_size", 8), ("epochs", 1), ("batch_size", 1), ("num_workers", 0), ("seed", 0)):
        check_int(getattr(args, name), f"--{name}", minimum=minimum)
    check_float(args.lr, "--lr", positive=True)
    check_float(args.weight_decay, "--weight_decay", minimum=0.0)
    root = check_existing(args.data_path, "--data_path", kind="folder")
    for split in ("train", "val"):
        check_existing(root / split, "--data_path", kind="folder")
    output = Path(args.output).expanduser()
    if output.exists():
        raise UsageError(f"--output {output} exists already; choose another file (a teacher is never replaced)")
    if not output.parent.is_dir():
        raise UsageError(f"--output {output}: the folder {output.parent} does not exist")
    try:
        import timm
    except ImportError:
        raise UsageError("train_teacher needs timm: pip install 'spikeforge[timm]'") from None
    if not timm.is_model(args.model):
        raise UsageError(f"--model {args.model!r} is not a timm model (see timm.list_models())")

    import torch
    from torch.utils.data import DataLoader

    from spikeforge.datasets.augment import build_transform
    from spikeforge.datasets.imagefolder import ImageFolder
    from spikeforge.training import CrossEntropyLoss, Trainer
    from spikeforge.training.checkpoint import save_checkpoint
    from spikeforge.training.schedule import WarmupCosine

    torch.manual_seed(args.seed)
    train_tf = build_transform(True, args.input_size, aa=None, color_jitter=None, reprob=0.0, hflip=0.0,
                               scale=tuple(args.scale))
    train = ImageFolder(root / "train", train_tf)
    val = ImageFolder(root / "val", build_transform(False, args.input_size))
    model = timm.create_model(args.model, pretrained=False, num_classes=len(train.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    common = dict(batch_size=args.batch_size, num_workers=args.num_workers)
    train_loader = DataLoader(train, shuffle=True, drop_last=True, **common)
    schedule = WarmupCosine(optimizer, total_steps=args.epochs * len(train_loader))
    trainer = Trainer(model, optimizer, CrossEntropyLoss(), schedule=schedule, progress=not args.no_progress,
                      out_dir=args.run_dir, checkpoints=False, batch_size=args.batch_size, reset=False)
    trainer.fit(train_loader, DataLoader(val, **common), epochs=args.epochs)
    save_checkpoint(model.state_dict(), output)
    print(f"saved the {args.model} teacher ({len(train.classes)} classes) to {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, sys.argv[1:] if argv is None else list(argv), prog="train_teacher")


if __name__ == "__main__":
    sys.exit(main())
