"""Per-epoch metrics: ``metrics.jsonl`` (one JSON object per line) and TensorBoard scalars when installed.

Only one process writes: in a distributed run the engine creates the writer on rank 0 alone, after the
numbers were reduced over all ranks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["METRIC_KEYS", "MetricsWriter", "read_metrics"]

METRIC_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "max_test_acc", "train_speed",
               "test_speed")


class MetricsWriter:
    """Keep ``<out_dir>/metrics.jsonl`` at one record per epoch (and TensorBoard scalars when it is installed).

    Nothing is written before the first record: the file is then rewritten whole, under a temporary name that
    is renamed over the old file (so a run interrupted before its first epoch leaves an earlier run's file as
    it was, and no interruption leaves half a line). On resume (``start_epoch > 0``) the earlier records for
    epochs < ``start_epoch`` are kept and later ones dropped, so the file holds one curve without repeats (as
    TensorBoard's ``purge_step`` does for its event files, whose writer is also created at the first record).
    """

    def __init__(self, out_dir: str | os.PathLike, start_epoch: int = 0, tensorboard: bool = True):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / "metrics.jsonl"
        self.start_epoch = start_epoch
        self.records = ([r for r in _read_valid(self.path) if r.get("epoch", -1) < start_epoch]
                        if start_epoch else [])
        self.tensorboard = tensorboard
        self.writer = None

    def _summary_writer(self):
        if self.writer is None and self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional: `pip install spikeforge[tensorboard]`
                self.tensorboard = False
                return None
            self.writer = SummaryWriter(str(self.out_dir), purge_step=self.start_epoch)
        return self.writer

    def write(self, record: dict) -> None:
        from .checkpoint import write_atomic

        self.records.append(record)
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        writer = self._summary_writer()
        if writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    writer.add_scalar(key, value, record["epoch"])
            writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _read_valid(path: Path) -> list[dict]:
    """The records of ``path`` that parse (a line cut short by a crash of an older version is skipped)."""
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` file (empty list when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
