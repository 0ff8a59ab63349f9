"""Model cost: parameters and multiply-accumulates, counted by ``torch.utils.flop_counter``.

The counter sees every matmul/convolution the forward actually runs, so the numbers follow the code rather than
a hand-written formula. It counts 2 FLOPs per multiply-accumulate and ignores normalisation, activations and the
LIF recurrences (elementwise work), which is also the convention of the published MAC figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["ModelProfile", "profile_model"]


@dataclass(frozen=True)
class ModelProfile:
    """Cost of one forward pass, per image."""

    name: str
    params: int
    macs: int
    input_shape: tuple[int, ...]
    macs_by_op: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [
            f"model:  {self.name}",
            f"input:  {'x'.join(str(s) for s in self.input_shape)}",
            f"params: {self.params:,} ({self.params / 1e6:.2f} M)",
            f"MACs:   {self.macs:,} ({self.macs / 1e9:.3f} G)",
        ]
        lines += [f"  {op}: {m / 1e9:.3f} G" for op, m in sorted(self.macs_by_op.items(), key=lambda kv: -kv[1])]
        return "\n".join(lines)


def profile_model(model: nn.Module | str, img_size: int | tuple[int, int] = 224, in_chans: int = 3,
                  batch_size: int = 1, **model_kwargs) -> ModelProfile:
    """Count parameters and multiply-accumulates of one forward at ``img_size``.

    Args:
        model: a module, or a zoo name; a name is built on the ``meta`` device, so even the largest model is
            profiled in a fraction of a second without allocating its weights.
        img_size: input height and width (an int means square).
        in_chans: input channels.
        batch_size: images in the traced batch; the result is per image.
        **model_kwargs: constructor overrides when ``model`` is a name.
    """
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    if len(img_size) != 2 or min(img_size) < 1:
        raise ValueError(f"img_size must be a positive int or (H, W), got {img_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from torch.utils.flop_counter import FlopCounterMode

    if isinstance(model, str):
        from ._factory import create_model

        name = model
        with torch.device("meta"):
            model = create_model(name, **model_kwargs)
    elif isinstance(model, nn.Module):
        if model_kwargs:
            raise TypeError("model_kwargs are only used when model is given by name")
        name = getattr(getattr(model, "pretrained_cfg", None), "architecture", None) or type(model).__name__
    else:
        raise TypeError(f"model must be an nn.Module or a registered name, got {type(model).__name__}")

    params = sum(p.numel() for p in model.parameters())
    try:
        reference = next(model.parameters())
        device, dtype = reference.device, reference.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    x = torch.zeros(batch_size, in_chans, *img_size, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    by_op = {str(op).split(".")[-1] if "." in str(op) else str(op): int(n) // (2 * batch_size)
             for op, n in counter.get_flop_counts().get("Global", {}).items()}
    macs = counter.get_total_flops() // (2 * batch_size)
    return ModelProfile(name=name, params=params, macs=int(macs), input_shape=(in_chans, *img_size),
                        macs_by_op=by_op)
