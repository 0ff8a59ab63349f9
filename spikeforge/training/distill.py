"""Knowledge distillation (DeiT's recipe, as Meta-SpikeFormer's stage 2 uses it) and the classification
criteria of the ImageNet recipes, as engine losses.

:class:`DistillationLoss` takes the student's output for a batch and the batch's inputs (it declares
``uses_inputs``, so the engine passes them):

* the student returns ``(out, out_kd)`` in training (Meta-SpikeFormer with ``kd=True``) — given to the loss as
  one tensor ``[2, B, C]`` (``stack``), or a plain ``[B, C]`` output without a distillation head;
* ``base = criterion(out, labels)``: label-smoothed cross-entropy, or soft-target cross-entropy on the mixup
  targets (:class:`SoftTargetCrossEntropy`), or plain cross-entropy;
* the teacher runs on the *same* inputs in eval mode without gradients; ``hard``: ``CE(out_kd,
  argmax teacher)``, ``soft``: ``tau^2 * KL(softmax(teacher/tau) || softmax(out_kd/tau))`` summed and divided
  by the number of logits ``B * C`` (DeiT's normalisation);
* ``loss = (1 - alpha) * base + alpha * kd`` (``distillation_type='none'``: ``base``).

In evaluation (``model.training`` false) the loss is plain cross-entropy of the output, as the reference's
``evaluate`` computes it.

:func:`build_teacher` makes the teacher from a name: a spikeforge zoo model, a ``module:attr`` / ``file.py:attr``
factory, or a timm model (the ``timm`` extra) — weights from a local file, never downloaded.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import functional
from ..errors import UsageError, UserError

__all__ = ["DistillationLoss", "SoftTargetCrossEntropy", "LabelSmoothingCrossEntropy", "build_teacher",
           "TeacherError", "load_teacher_weights"]


class TeacherError(UserError, RuntimeError):
    """The teacher model cannot be built or its weights cannot be loaded; the message says which and why."""


class SoftTargetCrossEntropy:
    """``mean_b sum_c -target[b, c] * log_softmax(x)[b, c]`` (targets from mixup / CutMix)."""

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sum(-target.to(logits.device) * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()

    def __repr__(self) -> str:
        return "SoftTargetCrossEntropy()"


class LabelSmoothingCrossEntropy:
    """``(1 - s) * NLL + s * mean_c(-log_softmax)``: cross-entropy against ``1 - s + s/C`` on the label."""

    def __init__(self, smoothing: float = 0.1):
        self.smoothing = float(smoothing)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.smoothing)

    def __repr__(self) -> str:
        return f"LabelSmoothingCrossEntropy(smoothing={self.smoothing})"


class DistillationLoss:
    """The training loss of the finetune recipe (see the module docstring).

    Args:
        criterion: ``(logits, targets) -> loss`` for the head (targets: labels, or ``mixup.last_targets``).
        model: the student; in eval mode the loss is plain cross-entropy.
        teacher: the teacher module (``None`` for ``distillation_type='none'``).
        distillation_type: ``'none'``, ``'soft'`` or ``'hard'``.
        alpha, tau: the weight of the distillation term and the soft temperature.
        mixup: a :class:`spikeforge.datasets.augment.Mixup` whose ``last_targets`` replace the labels while
            training (the training batches are mixed by it just before the forward pass).
    """

    uses_inputs = True

    def __init__(self, criterion: Callable, model: nn.Module, teacher: nn.Module | None = None,
                 distillation_type: str = "none", alpha: float = 0.5, tau: float = 1.0, mixup=None):
        if distillation_type not in ("none", "soft", "hard"):
            raise UsageError(f"--distillation_type must be none, soft or hard, got {distillation_type!r}")
        if distillation_type != "none" and teacher is None:
            raise UsageError(f"--distillation_type {distillation_type} needs a teacher model")
        self.criterion, self.model, self.teacher = criterion, model, teacher
        self.distillation_type, self.alpha, self.tau, self.mixup = distillation_type, float(alpha), float(tau), mixup
        self.last_parts: dict[str, float] = {}

    def teacher_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        self.teacher.eval()
        with torch.no_grad():
            out = self.teacher(inputs)
            if isinstance(out, (tuple, list)):
                out = out[0]
            functional.reset_net(self.teacher)  # a spiking teacher starts every batch from rest
        if out.dim() == 3:  # a spiking teacher's [T, B, C]
            out = out.mean(0)
        return out.float()

    def __call__(self, output: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor | None = None):
        if isinstance(output, (tuple, list)):
            output = torch.stack(list(output))
        if not self.model.training:
            logits = output.mean(0) if output.dim() == 3 else output
            return F.cross_entropy(logits.float(), labels)
        if output.dim() == 3:
            out, out_kd = output[0], output[1]
        else:
            out, out_kd = output, None
        targets = labels
        if self.mixup is not None and self.mixup.last_targets is not None:
            targets = self.mixup.last_targets.to(out.device)
        base = self.criterion(out.float(), targets)
        if self.distillation_type == "none":
            self.last_parts = {"base": float(base.detach())}
            return base
        if out_kd is None:
            raise UsageError("distillation needs a model with a distillation head (build it with --kd); its "
                             "training output must be (out, out_kd)")
        if inputs is None:
            raise ValueError("DistillationLoss needs the batch's inputs for the teacher")
        teacher = self.teacher_logits(inputs)
        if self.distillation_type == "soft":
            t = self.tau
            kd = F.kl_div(F.log_softmax(out_kd.float() / t, dim=1), F.log_softmax(teacher / t, dim=1),
                          reduction="sum", log_target=True) * (t * t) / out_kd.numel()
        else:
            kd = F.cross_entropy(out_kd.float(), teacher.argmax(dim=1))
        self.last_parts = {"base": float(base.detach()), "kd": float(kd.detach())}
        return base * (1.0 - self.alpha) + kd * self.alpha

    def __repr__(self) -> str:
        return (f"DistillationLoss(criterion={self.criterion!r}, type={self.distillation_type!r}, "
                f"alpha={self.alpha}, tau={self.tau}, teacher={type(self.teacher).__name__ if self.teacher else None})")


# ---------------------------------------------------------------------------------------------- teachers
def _factory_from_spec(spec: str) -> Callable:
    """``package.module:attr`` or ``path/to/file.py:attr`` -> the attribute (a factory or an nn.Module)."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise TeacherError(f"--teacher_model {spec!r}: expected module:attr or file.py:attr")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise TeacherError(f"--teacher_model {spec!r}: {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"_spikeforge_teacher_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as error:  # noqa: BLE001 - a user file: name it and its error
            raise TeacherError(f"--teacher_model {spec!r}: {path} failed to import ({type(error).__name__}: "
                               f"{error})") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise TeacherError(f"--teacher_model {spec!r}: cannot import {target} ({error})") from None
    if not hasattr(module, attr):
        raise TeacherError(f"--teacher_model {spec!r}: {target} has no attribute {attr!r}")
    return getattr(module, attr)


def _state_dict_in(obj, path) -> dict:
    from ..models._weights import unwrap_state_dict

    state = unwrap_state_dict(obj, ("model", "net", "state_dict", "state_dict_ema", "model_ema"))
    if not state:
        raise TeacherError(f"--teacher_path {path} holds no state_dict (a mapping of names to tensors, bare or "
                           f"under 'model' / 'net' / 'state_dict')")
    return state


def load_teacher_weights(teacher: nn.Module, path) -> nn.Module:
    """Load a teacher checkpoint (``weights_only``) strictly; a mismatch names the first differing keys."""
    from ..errors import load_plain

    state = _state_dict_in(load_plain(path, what="--teacher_path", error=TeacherError), path)
    result = teacher.load_state_dict(state, strict=False)
    problems = [f"missing {k}" for k in result.missing_keys] + [f"unexpected {k}" for k in result.unexpected_keys]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise TeacherError(f"--teacher_path {path} does not fit the teacher {type(teacher).__name__}: "
                           f"{', '.join(problems[:3])}{more}")
    return teacher


def build_teacher(name: str, path=None, num_classes: int | None = None, device="cpu") -> nn.Module:
    """The frozen teacher (eval mode, no gradients) on ``device``.

    ``name`` is tried as (1) ``module:attr`` / ``file.py:attr`` — an ``nn.Module`` or a factory called with
    ``num_classes=`` when it takes it; (2) a spikeforge zoo model (:func:`spikeforge.models.create_model`);
    (3) a timm model (``timm.create_model(name, pretrained=False, num_classes=...)``, needs the ``timm``
    extra). ``path`` (``--teacher_path``) loads its weights: nothing is downloaded, so a timm teacher without
    ``path`` is refused.
    """
    from ..models import create_model, is_model

    kwargs = {"num_classes": num_classes} if num_classes is not None else {}
    if ":" in name and not Path(name).exists():
        factory = _factory_from_spec(name)
        if isinstance(factory, nn.Module):
            teacher = factory
        else:
            try:
                teacher = factory(**kwargs)
            except TypeError:
                teacher = factory()
        if not isinstance(teacher, nn.Module):
            raise TeacherError(f"--teacher_model {name!r} gave a {type(teacher).__name__}, not an nn.Module")
    elif is_model(name):
        teacher = create_model(name, **kwargs)
    else:
        try:
            import timm
        except ImportError:
            raise TeacherError(f"--teacher_model {name!r} is not a spikeforge model, and timm models need timm "
                               f"(pip install 'spikeforge[timm]'); a zoo name or module:factory works without it"
                               ) from None
        if path is None:
            raise TeacherError(f"--teacher_model {name}: pass its weights with --teacher_path (nothing is "
                               f"downloaded)")
        try:
            teacher = timm.create_model(name, pretrained=False, **kwargs)
        except RuntimeError as error:  # timm: "Unknown model (...)"
            raise TeacherError(f"--teacher_model {name!r}: {error}") from None
    if path is not None:
        load_teacher_weights(teacher, path)
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
