"""The training examples on the engine, the conversion examples, and ``spikeforge demo`` (short runs)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from spikeforge import training
from spikeforge.examples import conv_fashion_mnist, lif_fc_mnist

SHARED = Path(__file__).resolve().parents[3] / "shared"
SJ_FLAGS = ["-T", "-device", "-b", "-epochs", "-j", "-data-dir", "-out-dir", "-resume", "-amp", "-opt",
            "-momentum", "-lr"]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _without_speed(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.endswith("_speed")}


@pytest.mark.parametrize("module,extra", [(lif_fc_mnist, ["-tau"]), (conv_fashion_mnist, ["-channels", "-save-es"])])
def test_help_lists_spikingjelly_flags(module, extra):
    text = module.build_parser().format_help()
    for flag in SJ_FLAGS + extra:
        assert f"{flag} " in text or f"{flag}\n" in text, flag
    defaults = module.build_parser().parse_args([])
    if module is lif_fc_mnist:
        assert (defaults.T, defaults.b, defaults.epochs, defaults.opt, defaults.lr, defaults.tau) == (
            100, 64, 100, "adam", 1e-3, 2.0)
    else:
        assert (defaults.T, defaults.b, defaults.epochs, defaults.lr, defaults.channels) == (4, 128, 64, 0.1, 128)


def test_lif_fc_mnist_short_run_learns_and_writes_everything(tmp_path, capsys):
    argv = ["-T", "8", "-b", "32", "-epochs", "2", "-out-dir", str(tmp_path), "--train-limit", "1024",
            "--test-limit", "500", "--seed", "0", "--no-progress"]
    assert lif_fc_mnist.main(argv) == 0
    run_dir = tmp_path / "T8_b32_adam_lr0.001"
    out = capsys.readouterr().out
    assert "epoch =1, train_loss =" in out and "train speed =" in out and "Firing rate:" in out
    records = _metrics(run_dir)
    assert [r["epoch"] for r in records] == [0, 1]
    assert set(training.METRIC_KEYS) <= set(records[0])
    assert records[-1]["test_acc"] > 0.6  # chance is 0.1
    for name in ("args.txt", "checkpoint_latest.pth", "checkpoint_max.pth"):
        assert (run_dir / name).is_file()
    v, s = np.load(run_dir / "v_t_array.npy"), np.load(run_dir / "s_t_array.npy")
    assert v.shape == (8, 10) and s.shape == (8, 10) and set(np.unique(s)) <= {0.0, 1.0}
    if importlib.util.find_spec("matplotlib"):
        for name in ("spikes.png", "membrane.png", "curves.png"):
            assert (run_dir / name).stat().st_size > 2000


def test_fused_and_dense_paths_train_alike(tmp_path):
    # the fused encoder+linear and the plain Sequential compute the same model: similar accuracy
    accs = []
    for dense in (False, True):
        argv = ["-T", "8", "-b", "32", "-epochs", "1", "-lr", "0.005", "-out-dir", str(tmp_path / str(dense)),
                "--seed", "1", "--train-limit", "640", "--test-limit", "400", "--no-progress", "--no-plots"]
        assert lif_fc_mnist.main(argv + (["--dense"] if dense else [])) == 0
        accs.append(_metrics(tmp_path / str(dense) / "T8_b32_adam_lr0.005")[0]["test_acc"])
    assert min(accs) > 0.5 and abs(accs[0] - accs[1]) < 0.1


def test_main_reports_corrupt_resume_file(tmp_path, capsys):
    bad = tmp_path / "checkpoint_latest.pth"
    bad.write_bytes(b"not a checkpoint")
    argv = ["-T", "2", "-epochs", "1", "-out-dir", str(tmp_path), "--train-limit", "64", "--test-limit", "64",
            "--no-progress", "-resume", str(bad)]
    assert lif_fc_mnist.main(argv) == 2
    assert str(bad) in capsys.readouterr().err


def test_conv_fashion_mnist_short_run(tmp_path):
    data = SHARED / "data" / "fashion-mnist"
    if not data.is_dir():
        pytest.skip(f"Fashion-MNIST copy not found at {data}")
    argv = ["-channels", "4", "-b", "32", "-epochs", "1", "-data-dir", str(data), "-out-dir", str(tmp_path),
            "--train-limit", "256", "--test-limit", "128", "--seed", "0", "--no-progress", "--no-plots"]
    assert conv_fashion_mnist.main(argv) == 0
    run_dir = tmp_path / "T4_b32_sgd_lr0.1_c4"
    record = _metrics(run_dir)[0]
    assert 0.0 <= record["test_acc"] <= 1.0 and np.isfinite(record["train_loss"])
    assert np.load(run_dir / "s_t_array.npy").shape == (4, 10)


def test_demo_command(tmp_path, capsys):
    from spikeforge import cli

    status = cli.main(["demo", "--out-dir", str(tmp_path), "-T", "8", "--train-limit", "1024",
                       "--batch-size", "16", "--no-progress"])
    assert status == 0
    out = capsys.readouterr().out
    assert "test accuracy after 1 epoch(s):" in out
    accuracy = float(out.split("test accuracy after 1 epoch(s): ")[1].split("%")[0])
    assert accuracy > 50.0
    if importlib.util.find_spec("matplotlib"):
        assert "plots written:" in out and "spikes.png" in out


@pytest.mark.parametrize("dense", [False, True])
def test_amp_bf16_run(tmp_path, dense):
    argv = ["-T", "4", "-b", "32", "-epochs", "1", "-amp", "-out-dir", str(tmp_path), "--train-limit", "320",
            "--test-limit", "160", "--no-progress", "--no-plots"] + (["--dense"] if dense else [])
    assert lif_fc_mnist.main(argv) == 0
    record = _metrics(tmp_path / "T4_b32_adam_lr0.001_amp")[0]
    assert np.isfinite(record["train_loss"]) and 0.0 <= record["test_acc"] <= 1.0


def test_no_example_or_benchmark_imports_an_example():
    import ast

    root = Path(__file__).resolve().parents[2]
    files = sorted((root / "spikeforge" / "examples").glob("*.py")) + sorted((root / "bench").glob("*.py"))
    assert len(files) > 8
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                assert node.level == 0, f"{path.name}: relative import"
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(n.startswith("spikeforge.examples") for n in names), f"{path.name} imports {names}"


def test_lif_fc_mnist_under_torchrun_writes_one_set_of_outputs(tmp_path):
    import shutil
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file() and shutil.which("torchrun") is None:
        pytest.skip("torchrun not installed next to the interpreter")
    command = [str(torchrun) if torchrun.is_file() else "torchrun", "--standalone", "--nproc_per_node=2", "-m",
               "spikeforge.examples.lif_fc_mnist", "-T", "4", "-b", "16", "-epochs", "1", "-out-dir", str(tmp_path),
               "--train-limit", "512", "--test-limit", "256", "--seed", "0", "--no-progress", "--no-plots", "--dense"]
    # --dense and the reference kernel: plain torch, so the two workers spend no time compiling numba kernels
    env = {**os.environ, "SPIKEFORGE_BACKEND": "reference"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("epoch =0, train_loss =") == 1  # rank 0 prints, rank 1 does not
    run_dir = tmp_path / "T4_b16_adam_lr0.001"
    records = _metrics(run_dir)
    assert [r["epoch"] for r in records] == [0] and 0.0 <= records[0]["test_acc"] <= 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["T4_b16_adam_lr0.001"]
    written = {p.name for p in run_dir.iterdir()}
    assert {"args.txt", "checkpoint_latest.pth", "metrics.jsonl", "v_t_array.npy"} <= written
    assert training.load_checkpoint(run_dir / "checkpoint_latest.pth")["world_size"] == 2
