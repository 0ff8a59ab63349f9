"""Learning-rate schedules for the engine.

A schedule has ``step()`` (called after every optimizer step), ``epoch_end()`` (after every training epoch),
``state_dict()`` / ``load_state_dict()`` (saved in checkpoints) and ``optimizer``.

Per-iteration schedules compute the learning rate of iteration ``i`` in closed form from each parameter
group's base LR (``initial_lr``, else the ``lr`` it had when the schedule was made), so a resumed run has
exactly the same LRs:

* :class:`WarmupCosine` — ``lr(i) = base * (i + 1) / warmup`` for ``i < warmup``, then half a cosine from
  ``base`` down to ``min_lr``: ``min_lr + (base - min_lr) * (1 + cos(pi * (i - warmup) / (total - warmup))) / 2``,
  and ``min_lr`` from ``i = total`` on;
* :class:`StepDecay` — the same warm-up, then ``base * gamma ** k`` where ``k`` counts the milestones passed
  (every ``step_size`` iterations after the warm-up, or at the listed ``milestones``);
* :class:`TorchSchedule` — any ``torch.optim.lr_scheduler`` scheduler, stepped once per epoch (``interval=
  'epoch'``, e.g. ``CosineAnnealingLR(opt, T_max=epochs)`` as the Fashion-MNIST example does) or once per
  iteration.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch

__all__ = ["IterationSchedule", "WarmupCosine", "StepDecay", "TorchSchedule", "as_schedule"]


class IterationSchedule:
    """Base class: sets every group's ``lr`` to ``lr_for(base_lr, iteration)`` before each optimizer step."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 0):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.optimizer = optimizer
        self.warmup_steps = int(warmup_steps)
        self.base_lrs = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]
        self.iteration = 0
        self._apply()

    def lr_for(self, base_lr: float, iteration: int) -> float:
        if iteration < self.warmup_steps:
            return base_lr * (iteration + 1) / self.warmup_steps
        return self.after_warmup(base_lr, iteration - self.warmup_steps)

    def after_warmup(self, base_lr: float, iteration: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def lr_at(self, iteration: int) -> list[float]:
        """The LR of every parameter group at (0-based) iteration ``iteration``."""
        return [self.lr_for(base, iteration) for base in self.base_lrs]

    def _apply(self) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.lr_at(self.iteration)):
            group["lr"] = lr

    def step(self) -> None:
        self.iteration += 1
        self._apply()

    def epoch_end(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = int(state["iteration"])
        self.base_lrs = list(state["base_lrs"])
        self._apply()


class WarmupCosine(IterationSchedule):
    """Linear warm-up over ``warmup_steps`` iterations, then a half cosine to ``min_lr`` at ``total_steps``."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                 min_lr: float = 0.0):
        if total_steps <= warmup_steps:
            raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
        self.total_steps = int(total_steps)
        self.min_lr = float(min_lr)
        super().__init__(optimizer, warmup_steps)

    def after_warmup(self, base_lr: float, iteration: int) -> float:
        span = self.total_steps - self.warmup_steps
        if iteration >= span:
            return self.min_lr
        return self.min_lr + (base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * iteration / span))


class StepDecay(IterationSchedule):
    """``base * gamma ** k`` after the warm-up; ``k`` = milestones passed (every ``step_size`` iterations, or
    the iterations in ``milestones``, counted from the end of the warm-up)."""

    def __init__(self, optimizer: torch.optim.Optimizer, step_size: int | None = None,
                 milestones: Sequence[int] | None = None, gamma: float = 0.1, warmup_steps: int = 0):
        if (step_size is None) == (milestones is None):
            raise ValueError("give exactly one of step_size and milestones")
        if step_size is not None and step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        self.step_size = step_size
        self.milestones = sorted(int(m) for m in milestones) if milestones is not None else None
        self.gamma = float(gamma)
        super().__init__(optimizer, warmup_steps)

    def after_warmup(self, base_lr: float, iteration: int) -> float:
        if self.step_size is not None:
            passed = iteration // self.step_size
        else:
            passed = bisect.bisect_right(self.milestones, iteration)
        return base_lr * self.gamma**passed


class TorchSchedule:
    """A ``torch.optim.lr_scheduler`` scheduler driven by the engine, once per epoch or once per iteration."""

    def __init__(self, scheduler, interval: str = "epoch"):
        if interval not in ("epoch", "iteration"):
            raise ValueError(f"interval must be 'epoch' or 'iteration', got {interval!r}")
        self.scheduler = scheduler
        self.interval = interval
        self.optimizer = scheduler.optimizer

    def step(self) -> None:
        if self.interval == "iteration":
            self.scheduler.step()

    def epoch_end(self) -> None:
        if self.interval == "epoch":
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def as_schedule(schedule, interval: str = "epoch"):
    """``None``, an engine schedule, or a bare torch scheduler (wrapped in :class:`TorchSchedule`)."""
    if schedule is None or hasattr(schedule, "epoch_end"):
        return schedule
    if isinstance(schedule, torch.optim.lr_scheduler.LRScheduler) or hasattr(schedule, "optimizer"):
        return TorchSchedule(schedule, interval)
    raise TypeError(f"not a learning-rate schedule: {type(schedule).__name__}")
