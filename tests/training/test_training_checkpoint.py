"""Training checkpoints: atomic writes, plain data only, clear refusals; RNG state round trip."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from spikeforge import training
from spikeforge.training import CheckpointError, load_checkpoint, plain_args, save_checkpoint


def test_atomic_save_round_trip_leaves_no_temp_file(tmp_path):
    path = save_checkpoint({"w": torch.arange(3), "args": {"lr": 0.1, "name": "x"}, "epoch": 2}, tmp_path / "c.pth")
    state = load_checkpoint(path)
    assert torch.equal(state["w"], torch.arange(3)) and state["args"] == {"lr": 0.1, "name": "x"}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"epoch": 1}, tmp_path / "c.pth")

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]


def test_non_plain_state_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError, match=r"state\['args'\] is of type argparse.Namespace"):
        save_checkpoint({"args": argparse.Namespace(lr=0.1)}, tmp_path / "c.pth")
    assert not any(tmp_path.iterdir())


def test_plain_args_turns_a_namespace_into_plain_values():
    args = argparse.Namespace(lr=0.1, out=Path("/tmp/x"), steps=[1, 2], opt="sgd", flag=None)
    assert plain_args(args) == {"lr": 0.1, "out": "/tmp/x", "steps": [1, 2], "opt": "sgd", "flag": None}


class _RunsCode:
    marker: Path

    def __reduce__(self):
        return (Path.mkdir, (self.marker,))


def test_files_with_objects_are_refused_and_run_nothing(tmp_path):
    marker = tmp_path / "code-ran"
    evil = _RunsCode()
    evil.marker = marker
    torch.save({"net": {}, "payload": evil}, tmp_path / "evil.pth")
    torch.save({"net": {}, "args": argparse.Namespace(lr=1.0)}, tmp_path / "namespace.pth")
    for name in ("evil.pth", "namespace.pth"):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(tmp_path / name)
        message = str(info.value)
        assert str(tmp_path / name) in message
        assert "holds objects other than tensors and plain data" in message and "not loaded" in message
        assert "could run code" in message
        assert "weights_only" not in message  # never the advice to switch the protection off
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"refers to argparse\.Namespace"):
        load_checkpoint(tmp_path / "namespace.pth")


def test_missing_truncated_garbage_and_incomplete_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")
    path = save_checkpoint({"w": torch.zeros(100)}, tmp_path / "c.pth")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value)
    save_checkpoint({"w": 1}, path)
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(path, required=("net",))
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(path)


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    path = save_checkpoint({"rng": training.get_rng_state()}, tmp_path / "rng.pth")
    a = (torch.rand(3), np.random.rand(3), random.random())
    training.set_rng_state(load_checkpoint(path)["rng"])
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
