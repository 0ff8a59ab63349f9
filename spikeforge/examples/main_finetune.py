"""Train, finetune, distil and evaluate zoo models on an image folder: the Meta-SpikeFormer seed's
``main_finetune.py`` with its flags, on spikeforge's training engine.

Data: ``--data_path`` holds ``train/<class>/<image>`` and ``val/<class>/<image>`` (ImageNet's layout; images are
read with Pillow, the ``vision`` extra). ``python -m spikeforge.datasets.imagefolder`` writes MNIST or
Fashion-MNIST in this layout.

Meta-SpikeFormer's two published stages (8 GPUs; ``--batch_size`` is per process, lr = blr x total batch / 256)::

    # stage 1, T = 1: LAMB (trust clip, weight decay 0.05 except 1-D parameters), lr 6e-4 x 1024 / 256
    torchrun --nproc_per_node=8 -m spikeforge.examples.main_finetune --batch_size 128 --blr 6e-4 \\
        --warmup_epochs 10 --epochs 200 --model metaspikformer_8_512 --data_path /data/imagenet \\
        --output_dir outputs/T1 --log_dir outputs/T1 --model_mode ms --dist_eval
    # stage 2, T = 4 with hard distillation from a CAFormer teacher (its weights from a local file)
    torchrun --nproc_per_node=8 -m spikeforge.examples.main_finetune --batch_size 24 --blr 2e-5 \\
        --warmup_epochs 5 --epochs 50 --model metaspikformer_8_512 --data_path /data/imagenet \\
        --output_dir outputs/T4 --log_dir outputs/T4 --model_mode ms --dist_eval \\
        --finetune outputs/T1/checkpoint_max.pth --time_steps 4 --kd --teacher_model caformer_b36_in21ft1k \\
        --teacher_path caformer_b36_in21ft1k.pth --distillation_type hard
    # evaluation of a checkpoint (ours, or the released 55M_kd.pth format)
    python -m spikeforge.examples.main_finetune --model metaspikformer_8_512 --kd --time_steps 4 \\
        --resume 55M_kd.pth --eval --data_path /data/imagenet

What each part is:

* **recipe** — ``--model metaspikformer_*`` (and any other zoo model except SNN-MLP): LAMB as timm's
  (``trust_clip=True``, global gradient-norm clip 1 inside the optimizer), weight decay on >= 2-D parameters
  only, RandAugment ``rand-m9-mstd0.5-inc1``, label smoothing 0.1, random erasing 0.25, no mixup, min_lr 1e-6.
  ``--model snnmlp_*``: SNN-MLP's published recipe: AdamW (eps 1e-8, weight decay 0.05 on every non-LIF
  parameter), the LIF parameters (``tau``, ``Vth``) in their own group at lr 1e-4 without decay, lr 5e-4 x
  total batch / 512 (``--blr 2.5e-4`` here), warm-up 20 epochs, min_lr 5e-6 x total batch / 512, gradient
  clipping at 5, colour jitter 0.4, mixup 0.8 / CutMix 1.0, 300 epochs. Every flag given overrides the recipe.
* **schedule** — per iteration: linear warm-up over ``--warmup_epochs``, then half a cosine to ``--min_lr``
  (the engine's ``WarmupCosine``).
* **AMP** — on by default (bf16 autocast on the CPU, fp16 + GradScaler on CUDA); ``--no_amp`` turns it off.
* **checkpoints** — the engine's: ``checkpoint_latest.pth`` every epoch, ``checkpoint_max.pth`` on a new best,
  ``metrics.jsonl``, ``args.txt``, TensorBoard scalars when tensorboard is installed (in ``--log_dir`` when
  given, else in the run folder). ``--resume`` continues a run exactly (same batches and draws); a new run never
  writes into a folder holding another run (``--output_dir`` is taken as given when empty, else ``-2``, ``-3``
  ...; ``--overwrite`` replaces it). Checkpoints hold ``args`` as plain data.
* **finetune** — ``--finetune FILE`` loads a checkpoint's weights non-strictly (ours, the released format, or a
  bare state_dict) and prints the missing and unexpected entries (e.g. a fresh ``head_kd``); entries whose
  shape differs (another number of classes) are skipped and listed.
* **distillation** — ``--kd`` builds the model with a second head ``head_kd``; the teacher (``--teacher_model``:
  a timm model name with weights from ``--teacher_path``, a spikeforge zoo model, or ``module:factory`` /
  ``file.py:factory``) runs in eval mode without gradients on the same inputs; loss = (1 - alpha) CE_smooth(head)
  + alpha KD(head_kd), ``hard``: CE to the teacher's argmax, ``soft``: tau^2 KL. ``--kd`` alone means ``hard``.
* **torchrun** — ``--batch_size`` per process; training batches are sharded with a ``DistributedSampler``;
  ``--dist_eval`` shards the validation set too (without padding, so every image counts once), otherwise every
  process evaluates all of it.

Flags of the seed that change nothing here are accepted: ``--global_pool/--cls_token``, ``--world_size``,
``--local-rank``, ``--dist_on_itp``, ``--dist_url`` (torchrun's environment is used), ``--start_epoch``
(resume sets it), ``--drop_path`` for Meta-SpikeFormer (the reference never passes it to the model) and
``--layer_decay`` (the reference assigns every Meta-SpikeFormer parameter the same layer id, so the scale is
1 for all; reproduced). ``--accum_iter`` > 1 is refused (the engine steps every batch).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from spikeforge.errors import UsageError, check_existing, check_float, check_int, check_writable_dir, run_cli

COMMAND = "python -m spikeforge.examples.main_finetune"

# the recipe defaults, by model family; a flag given on the command line wins
RECIPES = {
    "metaspikformer": dict(opt="lamb", blr=6e-4, weight_decay=0.05, warmup_epochs=10, min_lr=1e-6, clip_grad=None,
                           mixup=0.0, cutmix=0.0, smoothing=0.1, color_jitter=None, epochs=200),
    "snnmlp": dict(opt="adamw", blr=5e-4 / 2, weight_decay=0.05, warmup_epochs=20, min_lr=None, clip_grad=5.0,
                   mixup=0.8, cutmix=1.0, smoothing=0.1, color_jitter=0.4, epochs=300),
}
SNNMLP_LIF_LR = 1e-4


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=COMMAND, description="Meta-SpikeFormer / SNN-MLP training, finetuning, distillation and evaluation "
                                  "on an image folder (train/ + val/)")
    add = parser.add_argument
    add("--batch_size", default=64, type=int, help="batch size per process (total: batch_size x processes)")
    add("--epochs", default=None, type=int, help="total epochs (recipe: 200; SNN-MLP 300)")
    add("--accum_iter", default=1, type=int, help="gradient accumulation (only 1 is supported)")
    add("--finetune", default="", help="start from the weights of this checkpoint (loaded non-strictly)")
    add("--data_path", default=None, type=str, help="folder with train/ and val/ image folders")
    # model
    add("--model", default="metaspikformer_8_512", type=str, metavar="MODEL", help="zoo model to train")
    add("--model_mode", default="ms", type=str, help="ms: membrane-shortcut models (the only ones released)")
    add("--input_size", default=224, type=int, help="image size")
    add("--drop_path", type=float, default=None, metavar="PCT",
        help="drop path rate (SNN-MLP only; the Meta-SpikeFormer reference never passes it on)")
    # optimizer
    add("--opt", default=None, choices=["lamb", "adamw"], help="optimizer (recipe: lamb; SNN-MLP adamw)")
    add("--clip_grad", type=float, default=None, metavar="NORM", help="clip the gradient norm (SNN-MLP: 5)")
    add("--weight_decay", type=float, default=None, help="weight decay (recipe: 0.05)")
    add("--lr", type=float, default=None, metavar="LR", help="absolute learning rate (default: blr x batch / 256)")
    add("--blr", type=float, default=None, metavar="LR",
        help="base learning rate: lr = blr x total batch / 256 (recipe: 6e-4; SNN-MLP 2.5e-4)")
    add("--layer_decay", type=float, default=1.0,
        help="layer-wise lr decay (as in the reference, every Meta-SpikeFormer parameter is in the last layer)")
    add("--min_lr", type=float, default=None, metavar="LR", help="lr at the end of the cosine (recipe: 1e-6)")
    add("--warmup_epochs", type=int, default=None, metavar="N", help="linear warm-up epochs (recipe: 10)")
    # augmentation
    add("--color_jitter", type=float, default=None, metavar="PCT",
        help="colour jitter (only without RandAugment)")
    add("--aa", type=str, default="rand-m9-mstd0.5-inc1", metavar="NAME",
        help="RandAugment policy, or 'none' (default: rand-m9-mstd0.5-inc1)")
    add("--smoothing", type=float, default=None, help="label smoothing (recipe: 0.1)")
    add("--hflip", type=float, default=0.5, help="horizontal flip probability (default: 0.5)")
    add("--scale", type=float, nargs=2, default=(0.08, 1.0), metavar=("MIN", "MAX"),
        help="random-resized-crop area range (default: 0.08 1.0)")
    add("--reprob", type=float, default=0.25, metavar="PCT", help="random erase probability (default: 0.25)")
    add("--remode", type=str, default="pixel", help="random erase mode: pixel, rand or const")
    add("--recount", type=int, default=1, help="random erase count")
    add("--resplit", action="store_true", default=False, help="accepted (no augmentation splits here)")
    add("--mixup", type=float, default=None, help="mixup alpha, mixup enabled if > 0 (recipe: 0)")
    add("--cutmix", type=float, default=None, help="cutmix alpha, cutmix enabled if > 0 (recipe: 0)")
    add("--cutmix_minmax", type=float, nargs="+", default=None, help="cutmix min/max box ratio")
    add("--mixup_prob", type=float, default=1.0, help="probability of mixing a batch")
    add("--mixup_switch_prob", type=float, default=0.5, help="probability of cutmix when both are enabled")
    add("--mixup_mode", type=str, default="batch", help='"batch", "pair" or "elem"')
    add("--global_pool", action="store_true", help="accepted (the models pool globally)")
    parser.set_defaults(global_pool=True)
    add("--cls_token", action="store_false", dest="global_pool", help="accepted (no class token)")
    add("--time_steps", default=1, type=int, help="T: time steps (the image is repeated T times)")
    # data and run
    add("--nb_classes", default=None, type=int, help="number of classes (default: the class folders of train/)")
    add("--output_dir", default="./output_dir", help="run folder (a taken one gets -2, -3 ...); '' for no files")
    add("--log_dir", default=None, help="TensorBoard folder (default: the run folder)")
    add("--device", default=None, help="device (default: cuda if available, else cpu)")
    add("--seed", default=0, type=int)
    add("--resume", default=None, help="continue the run of this checkpoint (with --eval: evaluate its weights)")
    add("--start_epoch", default=0, type=int, metavar="N", help="accepted (--resume sets the start epoch)")
    add("--eval", action="store_true", help="evaluate only")
    add("--dist_eval", action="store_true", default=False, help="under torchrun, shard the validation set")
    add("--num_workers", default=min(10, os.cpu_count() or 1), type=int, help="data loading processes")
    add("--pin_mem", action="store_true", help="pin CPU memory in the DataLoader (CUDA)")
    add("--no_pin_mem", action="store_false", dest="pin_mem")
    parser.set_defaults(pin_mem=True)
    add("--amp", dest="amp", action="store_true", help="mixed precision (default on: bf16 on the CPU)")
    add("--no_amp", dest="amp", action="store_false", help="train in float32")
    parser.set_defaults(amp=True)
    add("--overwrite", action="store_true", help="write into --output_dir even if an earlier run is there")
    add("--threads", type=int, default=None, help="CPU threads for torch and numba")
    add("--no_progress", action="store_true", help="no progress bars")
    # distillation
    add("--kd", action="store_true", default=False, help="build the model with a distillation head and distil")
    add("--teacher_model", default="caformer_b36_in21ft1k", type=str, metavar="MODEL",
        help="timm model name (needs --teacher_path), spikeforge zoo model, or module:factory / file.py:factory")
    add("--teacher_path", default=None, help="the teacher's weights (a local file; nothing is downloaded)")
    add("--distillation_type", default="none", choices=["none", "soft", "hard"], type=str)
    add("--distillation_alpha", default=0.5, type=float)
    add("--distillation_tau", default=1.0, type=float)
    # distributed (torchrun's environment is what counts)
    add("--world_size", default=1, type=int, help="accepted (torchrun sets WORLD_SIZE)")
    add("--local-rank", "--local_rank", default=-1, type=int, help="accepted (torchrun sets LOCAL_RANK)")
    add("--dist_on_itp", action="store_true", help="accepted")
    add("--dist_url", default="env://", help="accepted (env:// is used)")
    add("--debug", action="store_true", help="show the traceback of an error (or set SPIKEFORGE_DEBUG=1)")
    return parser


def recipe_name(model: str) -> str:
    return "snnmlp" if model.startswith("snnmlp") else "metaspikformer"


def resolve_recipe(args: argparse.Namespace, world_size: int) -> argparse.Namespace:
    """Fill the flags left unset from the model family's recipe and compute ``lr`` (in place; returned)."""
    recipe = RECIPES[recipe_name(args.model)]
    for key, value in recipe.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    eff = args.batch_size * args.accum_iter * world_size
    if recipe_name(args.model) == "snnmlp" and args.min_lr is None:
        args.min_lr = 5e-6 * eff / 512
    if args.lr is None:
        args.lr = args.blr * eff / 256
    if args.kd and args.distillation_type == "none":
        args.distillation_type = "hard"  # as the reference: --kd means hard distillation unless told otherwise
    return args


def check_args(args: argparse.Namespace) -> None:
    """Every flag checked before any work; a :class:`UsageError` names the flag."""
    for name, minimum in (("batch_size", 1), ("input_size", 8), ("time_steps", 1), ("num_workers", 0),
                          ("recount", 0), ("accum_iter", 1), ("seed", 0)):
        check_int(getattr(args, name), f"--{name}", minimum=minimum)
    check_int(args.epochs, "--epochs", minimum=0)
    check_int(args.warmup_epochs, "--warmup_epochs", minimum=0)
    check_int(args.nb_classes, "--nb_classes", minimum=1, allow_none=True)
    check_int(args.threads, "--threads", minimum=1, allow_none=True)
    if args.accum_iter != 1:
        raise UsageError(f"--accum_iter {args.accum_iter}: gradient accumulation is not supported; use a larger "
                         f"--batch_size or more processes (the learning rate follows the total batch)")
    if args.model_mode != "ms":
        why = "the reference never released its 'sew' models (models_sew.py is missing, issue #2)" \
            if args.model_mode == "sew" else "only 'ms' exists"
        raise UsageError(f"--model_mode {args.model_mode!r}: {why}; use --model_mode ms")
    for name in ("lr", "blr"):
        check_float(getattr(args, name), f"--{name}", positive=True, allow_none=True)
    for name in ("weight_decay", "min_lr", "smoothing", "mixup", "cutmix", "reprob", "hflip",
                 "distillation_alpha", "mixup_prob", "mixup_switch_prob", "layer_decay"):
        check_float(getattr(args, name), f"--{name}", minimum=0.0, allow_none=True)
    for name in ("smoothing", "reprob", "hflip", "distillation_alpha", "mixup_prob", "mixup_switch_prob"):
        value = getattr(args, name)
        if value is not None and value > 1:
            raise UsageError(f"--{name} must be in [0, 1], got {value}")
    check_float(args.clip_grad, "--clip_grad", positive=True, allow_none=True)
    check_float(args.color_jitter, "--color_jitter", minimum=0.0, allow_none=True)
    check_float(args.distillation_tau, "--distillation_tau", positive=True)
    if not 0 < args.scale[0] <= args.scale[1] <= 1:
        raise UsageError(f"--scale {args.scale[0]} {args.scale[1]}: need 0 < MIN <= MAX <= 1")
    if args.remode not in ("pixel", "rand", "const"):
        raise UsageError(f"--remode must be pixel, rand or const, got {args.remode!r}")
    if args.mixup_mode not in ("batch", "pair", "elem"):
        raise UsageError(f"--mixup_mode must be batch, pair or elem, got {args.mixup_mode!r}")
    if args.cutmix_minmax is not None and not (len(args.cutmix_minmax) == 2
                                               and 0 < args.cutmix_minmax[0] < args.cutmix_minmax[1] <= 1):
        raise UsageError(f"--cutmix_minmax needs two ratios 0 < MIN < MAX <= 1, got {args.cutmix_minmax}")
    if args.distillation_type != "none" and not args.kd:
        raise UsageError(f"--distillation_type {args.distillation_type} needs --kd (the model's distillation "
                         f"head is what learns from the teacher)")
    if args.epochs > 0 and not args.eval and args.warmup_epochs >= args.epochs:
        raise UsageError(f"--warmup_epochs {args.warmup_epochs} must be smaller than --epochs {args.epochs}")
    from spikeforge.models import is_model, list_models

    if not is_model(args.model):
        import difflib

        close = difflib.get_close_matches(args.model, list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else f"; one of {', '.join(list_models())}"
        raise UsageError(f"--model {args.model!r} is not a spikeforge model{hint}")
    if args.data_path is None:
        raise UsageError("--data_path is required: a folder with train/ and val/ image folders")
    data = check_existing(args.data_path, "--data_path", kind="dir")
    for split in (("val",) if args.eval else ("train", "val")):
        if not (data / split).is_dir():
            raise UsageError(f"--data_path {data}: no {split}/ folder (expected {data}/{split}/<class>/<image>)")
    if args.finetune:
        check_existing(args.finetune, "--finetune", kind="file")
    if args.teacher_path:
        check_existing(args.teacher_path, "--teacher_path", kind="file")
    if args.eval and not (args.resume or args.finetune):
        raise UsageError("--eval needs weights: pass --resume CHECKPOINT (or --finetune CHECKPOINT)")
    if args.resume:
        if args.eval:
            check_existing(args.resume, "--resume", kind="file")
        else:
            from spikeforge.training.cli import resume_checkpoint

            resume_checkpoint(args.resume, "--resume")
        if args.overwrite:
            raise UsageError("--resume continues a run in its own folder and --overwrite replaces one; pass one")
    elif args.output_dir and not args.eval:
        check_writable_dir(args.output_dir, "--output_dir")
    if args.log_dir:
        check_writable_dir(args.log_dir, "--log_dir")
    from spikeforge.errors import check_device

    check_device(args.device, "--device")


# ---------------------------------------------------------------------------------------------- weights
def read_weights(path, flag: str) -> dict:
    """The model state_dict in ``path``: ours (``net``), the reference's ``{model, optimizer, epoch, scaler,
    args}`` (its ``args`` an ``argparse.Namespace``, the one non-plain type allowed), or a bare state_dict;
    read with ``weights_only=True``."""
    from spikeforge.errors import UserError, load_plain
    from spikeforge.models._weights import CHECKPOINT_ALLOWED_GLOBALS, unwrap_state_dict

    class _WeightsError(UserError, ValueError):
        pass

    # the released checkpoint format stores the run's argparse.Namespace: exactly that class is allowed
    obj = load_plain(path, what=flag, error=_WeightsError, allowed_globals=CHECKPOINT_ALLOWED_GLOBALS)
    state = unwrap_state_dict(obj, ("net", "model", "state_dict"))
    if not state:
        raise UsageError(f"{flag} {path} holds no model state_dict (expected a training checkpoint or a mapping "
                         f"of names to tensors)")
    return state


def load_finetune(model, path, log=print) -> dict:
    """``--finetune``: load non-strictly; prints missing, unexpected and reshaped (skipped) entries."""
    state = read_weights(path, "--finetune")
    own = model.state_dict()
    reshaped = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    for key in reshaped:
        log(f"skipping {key}: {tuple(state[key].shape)} in {path}, {tuple(own[key].shape)} in the model")
        del state[key]
    result = model.load_state_dict(state, strict=False)
    log(f"Load pre-trained checkpoint from: {path}")
    log(f"missing keys ({len(result.missing_keys)}): {result.missing_keys}")
    log(f"unexpected keys ({len(result.unexpected_keys)}): {result.unexpected_keys}")
    return {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys),
            "reshaped": reshaped}


def load_for_eval(model, path) -> None:
    """``--eval --resume``: the checkpoint's weights, strictly (a mismatch lists the differences)."""
    from spikeforge.models import load_weights

    load_weights(model, read_weights(path, "--resume"))


# ------------------------------------------------------------------------------------------------ parts
def build_model(args, num_classes: int):
    from spikeforge.models import create_model

    kwargs = {"num_classes": num_classes}
    if args.kd:
        kwargs["kd"] = True
    if recipe_name(args.model) == "snnmlp" and args.drop_path is not None:
        kwargs["drop_path_rate"] = args.drop_path
    try:
        model = create_model(args.model, **kwargs)
    except TypeError as error:
        if args.kd and "kd" in str(error):
            raise UsageError(f"--kd: {args.model} has no distillation head (Meta-SpikeFormer models have one)"
                             ) from None
        raise
    if args.time_steps != 1 and not hasattr(model, "T"):
        raise UsageError(f"--time_steps {args.time_steps}: {args.model} has no time steps (it runs once per image)")
    if hasattr(model, "T"):
        model.T = args.time_steps
    return model


def build_optimizer(model, args):
    """LAMB with the 1-D parameters undecayed (Meta-SpikeFormer), or SNN-MLP's AdamW + LIF group."""
    import torch

    from spikeforge.optim import Lamb, param_groups_weight_decay

    if recipe_name(args.model) == "snnmlp":
        lif = [p for n, p in model.named_parameters() if p.requires_grad and ("tau" in n or "Vth" in n)]
        lif_ids = {id(p) for p in lif}
        main = [p for p in model.parameters() if p.requires_grad and id(p) not in lif_ids]
        groups = [dict(params=main, weight_decay=args.weight_decay)]
        if lif:
            groups.append(dict(params=lif, weight_decay=0.0, lr=SNNMLP_LIF_LR))
        if args.opt == "lamb":
            return Lamb(groups, lr=args.lr, trust_clip=True)
        return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    groups = param_groups_weight_decay(model, args.weight_decay, extra={"lr_scale": 1.0})
    if args.opt == "adamw":
        return torch.optim.AdamW(groups, lr=args.lr)
    return Lamb(groups, lr=args.lr, trust_clip=True)


class ShardSampler:
    """Rank ``r`` of ``w`` takes indices ``r, r + w, r + 2w ...`` in order: no padding, each index once."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class MixedBatches:
    """The training loader with mixup / CutMix applied to every batch (the soft targets go to
    ``mixup.last_targets``, read by the loss)."""

    def __init__(self, loader, mixup):
        self.loader, self.mixup, self.sampler = loader, mixup, loader.sampler

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            self.mixup.mix(images, labels)
            yield images, labels


def build_loaders(args, ctx, train: bool):
    import torch
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

    from spikeforge.datasets.augment import build_transform
    from spikeforge.datasets.imagefolder import ImageFolder

    root = Path(args.data_path)
    aug = dict(aa=args.aa, color_jitter=args.color_jitter, reprob=args.reprob, remode=args.remode,
               recount=args.recount, hflip=args.hflip, scale=tuple(args.scale))
    val_set = ImageFolder(root / "val", transform=build_transform(False, args.input_size))
    train_set = ImageFolder(root / "train", transform=build_transform(True, args.input_size, **aug)) if train \
        else None
    pin = bool(args.pin_mem and torch.device(args.device).type == "cuda")
    common = dict(num_workers=args.num_workers, pin_memory=pin, persistent_workers=False)
    if args.dist_eval and ctx.is_distributed:
        val_sampler = ShardSampler(len(val_set), ctx.rank, ctx.world_size)
    else:
        val_sampler = SequentialSampler(val_set)
    val_loader = DataLoader(val_set, batch_size=args.batch_size, sampler=val_sampler, drop_last=False, **common)
    train_loader = None
    if train_set is not None:
        if ctx.is_distributed:
            sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                         seed=args.seed)
        else:
            sampler = RandomSampler(train_set)
        train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, drop_last=True, **common)
    return train_set, val_set, train_loader, val_loader


def _forward(model, images):
    """The model's output as one tensor: ``(out, out_kd)`` (training with a distillation head) is stacked to
    ``[2, B, C]``, which the engine's accuracy reads as their mean (what the model returns in eval)."""
    import torch

    out = model(images)
    if isinstance(out, (tuple, list)):
        out = torch.stack(list(out))
    return out


class _EpochLog:
    """The engine's per-epoch record printed the reference's way (and TensorBoard into ``--log_dir``)."""

    def __init__(self, n_val: int, epochs: int, log_dir: str | None, optimizer):
        self.n_val, self.epochs, self.optimizer = n_val, epochs, optimizer
        self.writer = None
        if log_dir:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print(f"--log_dir {log_dir}: tensorboard is not installed, no TensorBoard scalars are written")
            else:
                self.writer = SummaryWriter(log_dir)

    def __call__(self, record: dict, seconds: float) -> None:
        lr = max(g["lr"] for g in self.optimizer.param_groups)
        print(f"Epoch {record['epoch']}/{self.epochs}: train_loss {record['train_loss']:.4f}, "
              f"train_acc {100 * record['train_acc']:.2f}%, lr {lr:.3e}, {seconds:.1f} s, "
              f"{record['train_speed']:.1f} images/s")
        if record["test_acc"] is not None:
            print(f"Accuracy of the network on the {self.n_val} test images: {100 * record['test_acc']:.1f}%")
            print(f"Max accuracy: {100 * record['max_test_acc']:.2f}%", flush=True)
        if self.writer is not None:
            for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
                if record.get(key) is not None:
                    self.writer.add_scalar(key, record[key], record["epoch"])
            self.writer.add_scalar("lr", lr, record["epoch"])
            self.writer.flush()


def _main(argv: list[str]) -> int:
    import torch

    from spikeforge.training import Trainer, WarmupCosine, distributed
    from spikeforge.training.cli import resume_command, run_dir_for, run_fit, set_threads
    from spikeforge.training.distill import (
        DistillationLoss,
        LabelSmoothingCrossEntropy,
        SoftTargetCrossEntropy,
        build_teacher,
    )

    args = get_args_parser().parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    resolve_recipe(args, world)
    check_args(args)
    device = distributed.local_device(args.device)
    ctx = distributed.init_distributed(device)
    main_rank = ctx.is_main
    log = print if main_rank else (lambda *a, **k: None)
    try:
        torch.manual_seed(args.seed)  # every rank builds the same model; the engine splits the streams after
        import random

        import numpy as np

        random.seed(args.seed)
        np.random.seed(args.seed)
        if args.threads is not None:
            set_threads(args.threads)
        train_set, val_set, train_loader, val_loader = build_loaders(args, ctx, train=not args.eval)
        classes = len(val_set.classes) if train_set is None else len(train_set.classes)
        nb_classes = args.nb_classes if args.nb_classes is not None else classes
        if nb_classes < classes:
            raise UsageError(f"--nb_classes {nb_classes}: {args.data_path} has {classes} class folders")
        args.nb_classes = nb_classes
        model = build_model(args, nb_classes)
        log(f"{args}".replace(", ", ",\n"))
        n_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(f"Model = {args.model} (T = {getattr(model, 'T', 1)}, kd = {args.kd}), number of params (M): "
            f"{n_parameters / 1e6:.2f}")
        if args.finetune and not args.eval:
            load_finetune(model, args.finetune, log)
        if args.eval:
            load_for_eval(model, args.resume or args.finetune)
            trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0),
                              DistillationLoss(None, model), forward=_forward, amp=args.amp, device=device,
                              batch_size=args.batch_size, progress=not args.no_progress and main_rank)
            stats = trainer.evaluate(val_loader)
            log(f"Accuracy of the network on the {len(val_set)} test images: {100 * stats['acc']:.1f}% "
                f"(loss {stats['loss']:.4f})")
            return 0

        eff = args.batch_size * world
        log(f"base lr: {args.lr * 256 / eff:.2e}\nactual lr: {args.lr:.2e}\neffective batch size: {eff}")
        optimizer = build_optimizer(model, args)
        iters = len(train_loader)
        if iters == 0:
            raise UsageError(f"--batch_size {args.batch_size}: {len(train_set)} training images give no full batch "
                             f"over {world} process(es); use a smaller --batch_size")
        schedule = None
        if args.epochs > 0:
            schedule = WarmupCosine(optimizer, total_steps=args.epochs * iters, warmup_steps=args.warmup_epochs * iters,
                                    min_lr=args.min_lr)
        mixup = None
        if args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None:
            from spikeforge.datasets.augment import Mixup

            if args.batch_size % 2:
                raise UsageError(f"--batch_size {args.batch_size}: mixup/cutmix needs an even batch size")
            mixup = Mixup(args.mixup, args.cutmix, args.cutmix_minmax, args.mixup_prob, args.mixup_switch_prob,
                          args.mixup_mode, label_smoothing=args.smoothing, num_classes=nb_classes)
            train_loader = MixedBatches(train_loader, mixup)
            criterion = SoftTargetCrossEntropy()
        elif args.smoothing > 0:
            criterion = LabelSmoothingCrossEntropy(args.smoothing)
        else:
            criterion = torch.nn.functional.cross_entropy
        teacher = None
        if args.kd:
            log(f"Creating teacher model: {args.teacher_model}")
            teacher = build_teacher(args.teacher_model, args.teacher_path, num_classes=nb_classes, device=device)
        loss = DistillationLoss(criterion, model, teacher, args.distillation_type, args.distillation_alpha,
                                args.distillation_tau, mixup)
        log(f"criterion = {loss}\noptimizer = {type(optimizer).__name__} ({len(optimizer.param_groups)} groups)")
        resume = None
        if args.resume:
            from spikeforge.training.cli import resume_checkpoint

            resume = resume_checkpoint(args.resume, "--resume")
        out_dir = None
        if args.output_dir:
            out_dir = run_dir_for(Path(args.output_dir), resume=resume, overwrite=args.overwrite, log=log,
                                  resume_flag="--resume")
            log(f"run folder: {out_dir}", flush=True)
        trainer = Trainer(model, optimizer, loss, forward=_forward, schedule=schedule, amp=args.amp, device=device,
                          batch_size=args.batch_size, clip_grad_norm=args.clip_grad, out_dir=out_dir, args=args,
                          progress=not args.no_progress, tensorboard=not args.log_dir,
                          epoch_log=_EpochLog(len(val_set), args.epochs, args.log_dir, optimizer) if main_rank
                          else (lambda record, seconds: None))
        log(f"Start training for {args.epochs} epochs")
        code = run_fit(trainer, train_loader, val_loader, epochs=args.epochs, resume=resume,
                       resume_hint=lambda checkpoint: resume_command(COMMAND, argv, checkpoint, "--resume"))
        return code or 0
    finally:
        distributed.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Run the command; errors are one line (``--debug`` for the traceback), see
    :func:`spikeforge.errors.run_cli`."""
    return run_cli(_main, sys.argv[1:] if argv is None else list(argv), prog="main_finetune")


if __name__ == "__main__":
    sys.exit(main())
