"""torchrun/DDP on the CPU (gloo): 2 spawned processes against 1 process with the same global batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist

from . import ddp_workers

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs gloo")


def _without_speed(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.endswith("_speed")}


def _assert_params_close(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    return tmp, ddp_workers.spawn("all", tmp)


@pytest.fixture(scope="module")
def equivalence(spawned):
    return [result["equivalence"] for result in spawned[1]]


@pytest.mark.parametrize("bn", [False, True], ids=["no-bn", "sync-bn"])
def test_two_processes_take_the_steps_of_one_with_the_same_global_batch(equivalence, bn):
    # 2 ranks x 8 samples (SyncBatchNorm with bn) against 1 process x 16 samples (plain BatchNorm)
    reference_params, reference_history = ddp_workers.train_direct(bn, sync_bn=False, batch_size=16)
    for rank_result in equivalence:
        params, history = rank_result[f"bn={bn}"]
        _assert_params_close(params, reference_params)
        for got, want in zip(history, reference_history):
            assert got["epoch"] == want["epoch"]
            assert got["train_acc"] == want["train_acc"] and got["test_acc"] == want["test_acc"]
            assert math.isclose(got["train_loss"], want["train_loss"], rel_tol=1e-6)
            assert math.isclose(got["test_loss"], want["test_loss"], rel_tol=1e-6)


def test_neuron_state_is_not_a_ddp_buffer_nor_broadcast(equivalence):
    for rank_result in equivalence:
        assert not any(name.endswith("v") for name in rank_result["buffers"])
    v0, v1 = equivalence[0]["v"], equivalence[1]["v"]
    assert v0.shape == v1.shape == (3, 16) and not torch.equal(v0, v1)  # each rank kept its own membranes


@pytest.fixture(scope="module")
def resume(spawned):
    return spawned[0], [result["resume"] for result in spawned[1]]


def test_two_process_run_resumes_from_its_checkpoint_on_the_same_curve(resume):
    _, results = resume
    for result in results:
        assert [r["epoch"] for r in result["resumed"]] == [1, 2]
        assert [_without_speed(r) for r in result["resumed"]] == [_without_speed(r) for r in result["straight"][1:]]
        for key, value in result["straight_params"].items():
            assert torch.equal(value, result["resumed_params"][key]), key
    # the ranks agree (metrics are reduced over both), and the file holds one curve without repeats
    assert results[0]["resumed"] == results[1]["resumed"] or all(
        _without_speed(a) == _without_speed(b) for a, b in zip(results[0]["resumed"], results[1]["resumed"]))
    assert [r["epoch"] for r in results[0]["file_records"]] == [0, 1, 2]


def test_only_rank_zero_writes(resume):
    tmp, _ = resume
    for name in ("straight", "interrupted"):
        files = sorted(p.name for p in (tmp / name).iterdir())
        assert files == ["checkpoint_latest.pth", "checkpoint_max.pth", "metrics.jsonl"]
        assert not (tmp / f"{name}_rank1").exists()
