"""Loading zoo weights: official release downloads and local checkpoints, always with ``weights_only=True``."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

__all__ = ["WeightsMismatchError", "download_weights", "load_checkpoint", "load_weights", "describe_mismatch"]

_MAX_LISTED = 12  # per category in a mismatch report; enough to recognise the pattern


class WeightsMismatchError(RuntimeError):
    """A checkpoint's keys or shapes do not match the model; the message lists the differences."""


def download_weights(url: str, *, progress: bool = True) -> Path:
    """Return the cached copy of ``url`` under ``<torch.hub dir>/checkpoints``, downloading it on first use."""
    file_name = os.path.basename(urlparse(url).path)
    target = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # download_url_to_file writes a temporary file and renames it, so an interrupted download leaves no
        # truncated checkpoint behind.
        torch.hub.download_url_to_file(url, str(target), progress=progress)
    except (OSError, ValueError) as err:  # URLError and HTTPError are OSErrors
        raise RuntimeError(
            f"could not download pretrained weights from {url} ({err}).\n"
            f"If this machine is offline, fetch the file elsewhere and either place it at {target} "
            f"or pass pretrained='/path/to/{file_name}'."
        ) from err
    return target


def load_checkpoint(path, map_location="cpu") -> dict[str, torch.Tensor]:
    """Read a state_dict from ``path``: a bare state_dict or one wrapped as ``{"model": ...}``
    (``{"state_dict": ...}`` is accepted too). A DataParallel ``module.`` prefix on every key is removed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained: checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"pretrained: {path} holds objects other than tensors and plain containers (for example a training "
            "checkpoint with its config), which are not loaded for safety. Re-save just the weights with "
            "torch.save(checkpoint['model'], 'weights.pt')."
        ) from err
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"pretrained: {path} does not hold a state_dict (a mapping of names to tensors)")
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


def load_weights(model: nn.Module, pretrained, *, url: str | None = None, progress: bool = True) -> nn.Module:
    """Load ``pretrained`` into ``model`` strictly and return the model.

    Args:
        model: the freshly built model.
        pretrained: ``True`` for the official file at ``url`` (cached in the torch.hub directory), or a path.
        url: the release address used when ``pretrained is True``.

    Raises:
        WeightsMismatchError: listing missing, unexpected and wrongly shaped entries.
    """
    if pretrained is True:
        if url is None:
            raise ValueError(f"pretrained=True, but no official weights are published for {type(model).__name__}")
        source = download_weights(url, progress=progress)
    elif isinstance(pretrained, (str, os.PathLike)):
        source = Path(pretrained).expanduser()
    else:
        raise TypeError(f"pretrained must be None, False, True or a file path, got {type(pretrained).__name__}")
    state = load_checkpoint(source)
    diff = describe_mismatch(model.state_dict(), state)
    if diff:
        name = getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
        raise WeightsMismatchError(f"checkpoint {source} does not match model {name}:\n{diff}")
    model.load_state_dict(state)
    return model
