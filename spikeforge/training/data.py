"""Batches of in-memory tensors, sharded over distributed ranks (a DataLoader + DistributedSampler without the
per-item cost).

With ``W`` ranks and ``batch_size`` b per rank a *global batch* is ``G = b * W`` consecutive indices of one
permutation of the data set; rank ``r`` takes positions ``[r*b, (r+1)*b)`` of it. So the N-process run sees,
batch for batch, exactly the samples of a one-process run with batch size ``G``, and with gradients averaged
by DDP it takes the same optimisation steps.

The permutation of an epoch comes from torch's global generator (rank 0 draws it and broadcasts it), so a
single-process run draws the same batches as before the engine existed and a checkpoint's RNG state
reproduces them; ``seed=`` instead derives it from ``seed + epoch`` on every rank, as ``DistributedSampler``
does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from . import distributed

__all__ = ["batches", "TensorBatches", "load_split_tensors"]


def batches(n: int, batch_size: int, shuffle: bool, drop_last: bool,
            generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Index tensors for one pass over ``n`` samples in one process (``torch.randperm`` when shuffling)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


class TensorBatches:
    """Iterate ``tuple(t[idx] for t in tensors)`` over this rank's share of each global batch.

    ``rank`` / ``world_size`` default to the current process group's (one process when there is none).
    Call :meth:`set_epoch` before each epoch when ``seed`` is given (the engine does).
    """

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int, shuffle: bool = False,
                 drop_last: bool = False, rank: int | None = None, world_size: int | None = None,
                 seed: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors = tuple(tensors)
        lengths = {len(t) for t in self.tensors}
        if len(lengths) != 1:
            raise ValueError(f"tensors of different lengths: {sorted(lengths)}")
        self.n = lengths.pop()
        ctx = distributed.context()
        self.rank = ctx.rank if rank is None else rank
        self.world_size = ctx.world_size if world_size is None else world_size
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        g = self.global_batch_size
        full, rest = divmod(self.n, g)
        if self.drop_last or rest <= self.rank * self.batch_size:
            return full
        return full + 1

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        if self.seed is not None:
            return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        if self.world_size == 1:
            return torch.randperm(self.n)
        if not distributed.context().is_distributed:
            raise ValueError("shuffling for several ranks without a process group needs seed= (the ranks cannot "
                             "share rank 0's permutation)")
        order = torch.randperm(self.n) if self.rank == 0 else torch.empty(self.n, dtype=torch.int64)
        return distributed.broadcast_tensor(order, src=0)

    def index_batches(self) -> Iterator[torch.Tensor]:
        """This rank's index tensors for one epoch."""
        order = self._order()
        g = self.global_batch_size
        stop = self.n - self.n % g if self.drop_last else self.n
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for start in range(0, stop, g):
            mine = order[start:start + g][lo:hi]
            if len(mine):
                yield mine

    def __iter__(self):
        for idx in self.index_batches():
            yield tuple(t[idx] for t in self.tensors)


def load_split_tensors(dataset: str, root=None, train_limit: int | None = None, test_limit: int | None = None,
                       dtype: torch.dtype = torch.uint8):
    """``((train_x, train_y), (test_x, test_y))`` of ``'mnist'`` or ``'fashion-mnist'`` held in memory, each split
    cut to its first ``train_limit`` / ``test_limit`` samples; uint8 grey levels, or values in [0, 1] for a
    float ``dtype``. Raises :class:`spikeforge.datasets.DatasetFileError` for missing files."""
    from ..datasets import MNIST, FashionMNIST
    from ..errors import UsageError, check_int

    classes = {"mnist": MNIST, "fashion-mnist": FashionMNIST}
    if dataset not in classes:
        raise UsageError(f"dataset must be one of {sorted(classes)}, got {dataset!r}")
    check_int(train_limit, "train_limit", minimum=1, allow_none=True)  # [:0] and [:-5] would be silently wrong
    check_int(test_limit, "test_limit", minimum=1, allow_none=True)
    train_x, train_y = classes[dataset](root, train=True).as_tensors(dtype)
    test_x, test_y = classes[dataset](root, train=False).as_tensors(dtype)
    return (train_x[:train_limit], train_y[:train_limit]), (test_x[:test_limit], test_y[:test_limit])
