"""Loading zoo weights: official release downloads and local checkpoints, always with ``weights_only=True``."""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from ..errors import UsageError, UserError, load_plain

__all__ = ["WeightsMismatchError", "WeightsHashError", "WeightsFileError", "WeightsFileNotFoundError",
           "WeightsDownloadError", "download_weights", "file_sha256", "load_checkpoint", "read_checkpoint",
           "state_dict_of", "unwrap_state_dict", "CHECKPOINT_ALLOWED_GLOBALS",
           "load_weights", "describe_mismatch"]

_MAX_LISTED = 12  # per category in a mismatch report; enough to recognise the pattern


class WeightsMismatchError(UserError, RuntimeError):
    """A checkpoint's keys or shapes do not match the model; the message lists the differences."""


class WeightsHashError(UserError, RuntimeError):
    """A weights file's sha256 is not the one published for it (a corrupted or substituted file)."""


class WeightsFileError(UserError, ValueError):
    """A weights file cannot be used: empty, truncated, not a torch file, not a state_dict, or holding objects
    other than tensors and plain data (not loaded: that could run code). The message names the file."""


class WeightsFileNotFoundError(UserError, FileNotFoundError):
    """A weights file does not exist; the message names it."""


class WeightsDownloadError(UserError, RuntimeError):
    """The official weights could not be downloaded; the message says where to put the file by hand."""


def file_sha256(path) -> str:
    """Hex sha256 digest of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_weights(url: str, *, file_name: str | None = None, sha256: str | None = None,
                     progress: bool = True) -> Path:
    """Return the cached copy of ``url`` under ``<torch.hub dir>/checkpoints``, downloading it on first use.

    Args:
        url: the release address.
        file_name: name of the cached file (default: the url's last path component).
        sha256: the file's published hex digest. When given, a fresh download that does not match is deleted and
            refused, and so is a cached copy (reported with its path, so it can be removed and fetched again).
    """
    file_name = file_name or os.path.basename(urlparse(url).path)
    target = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if target.is_file():
        _check_sha256(target, sha256, f"the cached copy of {url}",
                      f"Delete {target} to download it again, or pass pretrained='/path/to/{file_name}'.")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # download_url_to_file writes a temporary file and renames it, so an interrupted download leaves no
        # truncated checkpoint behind.
        torch.hub.download_url_to_file(url, str(target), progress=progress)
    except (OSError, ValueError) as err:  # URLError and HTTPError are OSErrors
        raise WeightsDownloadError(
            f"could not download pretrained weights from {url} ({err}).\n"
            f"If this machine is offline, fetch the file elsewhere and either place it at {target} "
            f"or pass pretrained='/path/to/{file_name}'."
        ) from err
    try:
        _check_sha256(target, sha256, f"the file downloaded from {url}", "It has been deleted; try again later.")
    except WeightsHashError:
        target.unlink(missing_ok=True)
        raise
    return target


def _check_sha256(path: Path, expected: str | None, what: str, advice: str) -> None:
    if expected is None:
        return
    actual = file_sha256(path)
    if actual != expected.lower():
        raise WeightsHashError(f"sha256 of {what} is {actual}, but the published weights have {expected.lower()}: "
                               f"the file is corrupted or not the released one. {advice}")


# Classes a weights file may rebuild besides tensors and plain data: the arguments that MAE/DeiT-style training
# scripts (timm's, BICLab's Meta-SpikeFormer ``misc.save_model``) store in ``{"model", ..., "args"}``.
# A Namespace is rebuilt from its attribute dict; no code of the file runs.
CHECKPOINT_ALLOWED_GLOBALS = (argparse.Namespace,)


def read_checkpoint(path, map_location="cpu"):
    """The object stored at ``path`` (``torch.load(weights_only=True)``; ``argparse.Namespace`` is the one class
    allowed beyond tensors and plain data, for training checkpoints ``{model, optimizer, epoch, scaler, args}``).

    Raises :class:`WeightsFileNotFoundError` for a missing file and :class:`WeightsFileError` for one that is
    empty, truncated, not a torch file, or holds other objects (not loaded: that could run code).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsFileNotFoundError(f"pretrained: checkpoint file not found: {path}")
    return load_plain(path, what="pretrained: weights file", error=WeightsFileError, map_location=map_location,
                      allowed_globals=CHECKPOINT_ALLOWED_GLOBALS,
                      advice="pass a state_dict saved with torch.save(model.state_dict(), path), or download the "
                             "file again",
                      objects_advice="If it is a training checkpoint that also stores its config, save only the "
                                     "weights where it is written: torch.save(checkpoint['model'], 'weights.pt')")


def load_checkpoint(path, map_location="cpu") -> dict[str, torch.Tensor]:
    """Read a state_dict from ``path``: a bare state_dict or one wrapped as ``{"model": ...}``
    (``{"state_dict": ...}`` is accepted too; other entries such as ``optimizer`` or an ``argparse.Namespace``
    ``args`` are read and ignored). A DataParallel ``module.`` prefix on every key is removed.

    Raises :class:`WeightsFileNotFoundError` for a missing file and :class:`WeightsFileError` for one that is
    empty, truncated, not a torch file, not a state_dict, or holds objects other than tensors and plain data.
    """
    return _state_dict_of(read_checkpoint(path, map_location), str(Path(path).expanduser()))


def state_dict_of(obj, where: str = "the given mapping") -> dict[str, torch.Tensor]:
    """The state_dict in ``obj`` (bare, or under ``"model"``/``"state_dict"``), ``module.`` prefixes removed;
    :class:`WeightsFileError` naming ``where`` if there is none."""
    return _state_dict_of(obj, where)


def _state_dict_of(obj, where: str) -> dict[str, torch.Tensor]:
    state = unwrap_state_dict(obj)
    if state is None:
        raise WeightsFileError(f"pretrained: {where} does not hold a state_dict (a mapping of names to tensors)")
    return state


def unwrap_state_dict(obj, wrappers: tuple[str, ...] = ("model", "state_dict")) -> dict[str, torch.Tensor] | None:
    """The state_dict in ``obj``: bare, or under the first of ``wrappers`` that holds a mapping (training
    checkpoints), with a DataParallel ``module.`` prefix on every key removed; None when there is none. The
    callers raise their own error (``pretrained=``, ``--finetune``, ``--teacher_path``)."""
    if isinstance(obj, Mapping):
        for wrapper in wrappers:
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in obj.items()):
        return None
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def describe_mismatch(model_state: Mapping[str, torch.Tensor], checkpoint: Mapping[str, torch.Tensor]) -> str:
    """Human-readable key/shape differences between a model's and a checkpoint's state; empty if they agree."""
    missing = [k for k in model_state if k not in checkpoint]
    unexpected = [k for k in checkpoint if k not in model_state]
    reshaped = [k for k in model_state if k in checkpoint and tuple(model_state[k].shape) != tuple(checkpoint[k].shape)]
    lines = []

    def section(title, keys, describe):
        if not keys:
            return
        lines.append(f"  {title} ({len(keys)}):")
        lines.extend(f"    {describe(k)}" for k in keys[:_MAX_LISTED])
        if len(keys) > _MAX_LISTED:
            lines.append(f"    ... and {len(keys) - _MAX_LISTED} more")

    section("missing from the checkpoint", missing, lambda k: f"{k} {tuple(model_state[k].shape)}")
    section("not in the model", unexpected, lambda k: f"{k} {tuple(checkpoint[k].shape)}")
    section("shape differs", reshaped,
            lambda k: f"{k}: checkpoint {tuple(checkpoint[k].shape)} vs model {tuple(model_state[k].shape)}")
    return "\n".join(lines)


def load_weights(model: nn.Module, pretrained, *, url: str | None = None, sha256: str | None = None,
                 file_name: str | None = None, progress: bool = True,
                 skip_mismatched: Iterable[str] = ()) -> nn.Module:
    """Load ``pretrained`` into ``model`` strictly and return the model.

    Args:
        model: the freshly built model.
        pretrained: ``True`` for the official file at ``url`` (cached in the torch.hub directory), a path to a
            checkpoint file, or a state_dict (a mapping of names to tensors). Files and mappings may wrap the
            state_dict as ``{"model": ...}`` or ``{"state_dict": ...}``; a ``module.`` prefix on every key is
            removed.
        url, sha256, file_name: the release address, its published digest (checked when given) and the name of
            the cached copy, used when ``pretrained is True``.
        skip_mismatched: modules (``"head"`` means ``head.weight`` and ``head.bias``) loaded only if all their
            entries fit the model; otherwise they are left out on both sides and keep the model's initialisation
            (a classifier being replaced). Everything else is loaded strictly.

    Raises:
        WeightsMismatchError: listing missing, unexpected and wrongly shaped entries.
        WeightsHashError: the downloaded or cached official file does not have the published sha256.
    """
    if pretrained is True:
        if url is None:
            raise UsageError(f"pretrained=True, but no official weights are published for {_model_name(model)}; "
                             f"pass pretrained='/path/to/weights.pt' instead")
        path = download_weights(url, file_name=file_name, sha256=sha256, progress=progress)
        source, state = f"checkpoint {path}", load_checkpoint(path)
    elif isinstance(pretrained, (str, os.PathLike)):
        path = Path(pretrained).expanduser()
        source, state = f"checkpoint {path}", load_checkpoint(path)
    elif isinstance(pretrained, Mapping):
        source, state = "the given state_dict", _state_dict_of(pretrained, "the given mapping")
    else:
        raise TypeError("pretrained must be None, False, True, a file path or a state_dict, "
                        f"got {type(pretrained).__name__}")
    expected = model.state_dict()
    skipped = [m for m in skip_mismatched if describe_mismatch(_entries_of(expected, m), _entries_of(state, m))]
    if skipped:
        state = {k: v for k, v in state.items() if not _in_any(k, skipped)}
        expected = {k: v for k, v in expected.items() if not _in_any(k, skipped)}
    diff = describe_mismatch(expected, state)
    if diff:
        raise WeightsMismatchError(f"{source} does not match model {_model_name(model)}:\n{diff}")
    model.load_state_dict(state, strict=not skipped)
    return model


def _in_any(key: str, modules) -> bool:
    return any(key == m or key.startswith(m + ".") for m in modules)


def _entries_of(state: Mapping[str, torch.Tensor], module: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if _in_any(k, (module,))}


def _model_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None)
    name = getattr(cfg, "architecture", None)
    if name is None and isinstance(cfg, Mapping):  # a dict-valued config from elsewhere
        name = cfg.get("architecture")
    return name or type(model).__name__
