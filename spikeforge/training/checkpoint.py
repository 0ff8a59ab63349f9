"""Training checkpoints: written atomically, read without running code.

A *training* checkpoint is one dict of plain data: the model's and optimizer's ``state_dict``, the LR schedule,
the AMP scaler, the epoch, the RNG states and the run's arguments (as a dict). It is what ``-resume`` reads.
For a model's weights alone (a zoo model, a pretrained file) use :func:`spikeforge.models.load_weights`
instead; it accepts a bare ``state_dict`` and reports shape mismatches.

* :func:`save_checkpoint` writes a temporary file in the target's folder, flushes and fsyncs it and renames it
  over the target (``os.replace`` is atomic), so a crash or Ctrl-C mid-write leaves the previous file intact.
  It refuses (before writing anything) a state holding anything but tensors and plain Python data, so every
  checkpoint it writes can be read back by :func:`load_checkpoint`.
* :func:`load_checkpoint` always uses ``torch.load(..., weights_only=True)``. A missing, truncated or corrupt
  file, or one holding other objects, raises :class:`CheckpointError` with a message naming the file.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import UserError, load_plain

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "plain_args", "check_plain", "write_atomic"]

# leaves torch.load(weights_only=True) reads without an allow-list
_PLAIN_LEAVES = (torch.Tensor, str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device,
                 torch.Size)


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file is missing, truncated, corrupt, not plain data, or not a spikeforge training checkpoint."""


def check_plain(obj, where: str = "state") -> None:
    """Raise ``TypeError`` naming the first value in ``obj`` that is not a tensor or plain Python data.

    Plain data: dicts (str/int keys), lists, tuples, sets, ``str``, numbers, ``bool``, ``None``, tensors,
    ``torch.Size``/``dtype``/``device``.
    """
    stack = [(obj, where)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _PLAIN_LEAVES):
            continue
        if isinstance(value, (dict, collections.OrderedDict)):
            for key, item in value.items():
                if not isinstance(key, (str, int, float, bool, type(None))):
                    raise TypeError(f"{path} has a key of type {type(key).__name__}; checkpoints hold plain data")
                stack.append((item, f"{path}[{key!r}]"))
        elif isinstance(value, (list, tuple, set, frozenset)) and type(value) in (list, tuple, set, frozenset):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
        else:
            kind = f"{type(value).__module__}.{type(value).__qualname__}"
            raise TypeError(f"{path} is of type {kind}; a checkpoint holds only tensors and plain data (dict, "
                            f"list, str, numbers), so convert it first (for example vars(args) for an "
                            f"argparse.Namespace)")


def plain_args(args) -> dict | None:
    """An argparse ``Namespace`` (or a mapping) as a dict of plain values; other values become ``str``."""
    if args is None:
        return None
    items = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    out = {}
    for key, value in items.items():
        try:
            check_plain(value)
        except TypeError:
            value = str(value)
        out[str(key)] = value
    return out


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` (tensors and plain data only) to ``path`` atomically: temp file in the same folder,
    flush + fsync, ``os.replace``. Returns the path."""
    check_plain(state)
    return write_atomic(path, lambda f: torch.save(state, f))


def write_atomic(path: str | os.PathLike, content) -> Path:
    """Replace ``path`` by ``content`` (``bytes``, ``str`` (UTF-8) or ``write(file)``) all at once.

    The data goes to a temporary file in the same folder, is flushed and fsynced, and is renamed over ``path``
    (``os.replace`` is atomic), so an interruption at any moment leaves either the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    required: tuple[str, ...] = ()) -> dict:
    """Read a training checkpoint with ``torch.load(weights_only=True)``.

    Raises :class:`CheckpointError` when the file is missing, empty, truncated or corrupt, not a torch file,
    holds objects other than tensors and plain data (it is then not loaded at all: unpickling them could run
    code), is not a dict, or lacks one of the ``required`` keys. The message names the file.
    """
    state = load_plain(path, what="checkpoint", error=CheckpointError, map_location=map_location,
                       advice="use another checkpoint (checkpoint_latest.pth or checkpoint_max.pth of a run) or "
                              "start a new run")
    path = Path(path)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; it is not a training checkpoint of this "
                              f"script (for a model's weights alone use spikeforge.models.load_weights)")
    return dict(state)
