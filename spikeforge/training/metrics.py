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
    """Append one record per epoch to ``<out_dir>/metrics.jsonl`` (and TensorBoard when it is installed).

    On resume (``start_epoch > 0``) lines for epochs >= ``start_epoch`` are dropped first, so the file holds
    one curve without repeats (as TensorBoard's ``purge_step`` does for its event files).
    """

    def __init__(self, out_dir: str | os.PathLike, start_epoch: int = 0, tensorboard: bool = True):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_metrics(self.path) if r.get("epoch", -1) < start_epoch] if start_epoch else []
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional: `pip install spikeforge[tensorboard]`
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(out_dir), purge_step=start_epoch)

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` file (empty list when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
