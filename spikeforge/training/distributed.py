"""Data-parallel training under ``torchrun`` (DistributedDataParallel; gloo on the CPU, NCCL on CUDA).

``torchrun --standalone --nproc_per_node=N script.py ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`init_distributed` reads them and joins the
process group (a no-op in a plain single process). The engine then

* shards each global batch over the ranks (``batch_size`` per rank; rank r takes the r-th slice of the same
  global permutation, see :class:`spikeforge.training.data.TensorBatches`),
* wraps the model in ``DistributedDataParallel`` (gradients averaged over ranks),
* sums loss x count, correct and count over ranks (:func:`all_reduce_sums`) before computing metrics,
* writes logs, metrics, checkpoints, plots and ``args.txt`` on rank 0 only.

Neuron state is not touched by DDP: a :class:`spikeforge.base.MemoryModule` keeps it in a Python dict
(``_memories``), not in parameters or buffers, so it is neither broadcast nor averaged; each rank's membranes
belong to its own samples and are reset after every batch. DDP's ``broadcast_buffers`` only concerns real
buffers such as BatchNorm running statistics. :func:`convert_sync_batchnorm` replaces BatchNorm layers (plain
or spikeforge's step-mode ones) by :class:`SyncBatchNorm`, whose training statistics cover the global batch.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistContext", "init_distributed", "context", "is_main_process", "local_device", "barrier",
           "all_reduce_sums", "broadcast_tensor", "all_gather_object", "wrap_ddp", "unwrap", "SyncBatchNorm",
           "convert_sync_batchnorm", "broadcast_buffers", "cleanup"]


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_SINGLE = DistContext()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def context() -> DistContext:
    """The current context: the initialised process group's, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), dist.get_backend())
    return _SINGLE


def is_main_process() -> bool:
    return context().is_main


def local_device(device: torch.device | str | None = None) -> torch.device:
    """``device``, except that a CUDA device becomes ``cuda:LOCAL_RANK`` under torchrun (one GPU per process)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and _env_int("WORLD_SIZE", 1) > 1:
        return torch.device("cuda", _env_int("LOCAL_RANK", 0))
    return device


def init_distributed(device: torch.device | str | None = None, backend: str | None = None) -> DistContext:
    """Join the process group described by torchrun's environment variables; idempotent.

    Without ``WORLD_SIZE > 1`` in the environment this does nothing and returns a single-process context.
    The backend defaults to NCCL for CUDA devices and gloo otherwise.
    """
    if dist.is_available() and dist.is_initialized():
        return context()
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return _SINGLE
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    device = local_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    dist.init_process_group(backend=backend, init_method="env://", rank=_env_int("RANK", 0),
                            world_size=world_size)
    return context()


def cleanup() -> None:
    """Leave the process group (if one was joined); called from the examples' ``finally``.

    On the success path it first waits for every rank: a worker that is done early (the non-main ranks skip the
    outputs) tearing its group down while rank 0 still runs aborted at exit now and then ("terminate called
    without an active exception"). Not while an exception is propagating: then torchrun stops the others."""
    if dist.is_available() and dist.is_initialized():
        if sys.exc_info()[0] is None:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if context().is_distributed:
        dist.barrier()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sums(values: list[float]) -> list[float]:
    """Element-wise sums over all ranks (float64); the values themselves in a single process."""
    if not context().is_distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def broadcast_tensor(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``tensor`` on every rank (same shape and dtype required); unchanged in a single process."""
    if not context().is_distributed:
        return tensor
    device = _collective_device()
    buffer = tensor.to(device).contiguous()
    dist.broadcast(buffer, src=src)
    return buffer.to(tensor.device)


def all_gather_object(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    ctx = context()
    if not ctx.is_distributed:
        return [obj]
    gathered = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics ...) to every rank, in place."""
    if not context().is_distributed:
        return
    for buffer in module.buffers():
        buffer.copy_(broadcast_tensor(buffer, src))


def wrap_ddp(module: nn.Module, device: torch.device | str, **ddp_kwargs) -> nn.Module:
    """``DistributedDataParallel(module)`` under a process group; ``module`` itself otherwise."""
    if not context().is_distributed:
        return module
    device = torch.device(device)
    if device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [device.index if device.index is not None else torch.cuda.current_device()])
    return nn.parallel.DistributedDataParallel(module, **ddp_kwargs)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP / DataParallel wrapper."""
    while isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        module = module.module
    return module


def _sync_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation whose training-mode statistics are those of the global batch over all ranks.

    Works with any backend (gloo on the CPU too): per channel the sum and, after centring, the sum of squares
    are summed over ranks with an autograd-aware all-reduce, so gradients are those of one big batch. In eval
    mode, or without a process group, it is ``BatchNorm``. ``step_mode='m'`` folds ``[T, N, ...]`` into
    ``[T*N, ...]`` as spikeforge's step-mode layers do.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, step_mode: str = "s", device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.step_mode = step_mode

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "m":
            if x.dim() < 3:
                raise ValueError(f"SyncBatchNorm in multi-step mode expects [T, N, C, ...], got {tuple(x.shape)}")
            return self._forward_flat(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        return self._forward_flat(x)

    def _forward_flat(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _sync_active()):
            return super().forward(x)
        import torch.distributed.nn.functional as dist_nn

        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        xf = x.float()
        count = xf.new_tensor([x.numel() // x.shape[1]])
        sums = dist_nn.all_reduce(torch.cat([xf.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = xf - mean.view(shape)
        var = dist_nn.all_reduce((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                total = float(n)
                self.running_mean.mul_(1 - factor).add_(mean.detach().to(self.running_mean.dtype), alpha=factor)
                unbiased = var.detach() * (total / max(total - 1.0, 1.0))
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, step_mode={self.step_mode}"


def _plain_batchnorm_types() -> tuple[type, ...]:
    from spikeforge import layer

    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, layer.BatchNorm1d, layer.BatchNorm2d, layer.BatchNorm3d)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d (torch's or spikeforge's step-mode one) by :class:`SyncBatchNorm`.

    The new layers reuse the old parameters and buffers (an optimizer built before still updates them) and keep
    the step mode. BatchNorm variants with their own arithmetic (tdBN, threshold-dependent BN) are left as they
    are, with a warning: their statistics stay per rank.
    """
    plain = _plain_batchnorm_types()
    if type(module) in plain:
        converted = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats, step_mode=getattr(module, "step_mode", "s"))
        if module.affine:
            converted.weight = module.weight
            converted.bias = module.bias
        if module.track_running_stats:
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    synced = (SyncBatchNorm, nn.SyncBatchNorm)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, synced):
        warnings.warn(f"convert_sync_batchnorm: {type(module).__name__} is not converted (its normalisation is "
                      f"not plain BatchNorm); its statistics stay per rank", stacklevel=2)
    for name, child in module.named_children():
        new = convert_sync_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module
