"""The training examples, the training utilities behind them, and ``spikeforge demo`` (short runs)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spikeforge import training
from spikeforge.examples import conv_fashion_mnist, lif_fc_mnist

SHARED = Path(__file__).resolve().parents[2] / "shared"
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


def _tiny_fit(out_dir, epochs, resume=None, interrupt_at=None):
    """A deterministic 2-layer fit on random data; optionally raise KeyboardInterrupt at call N."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(123)
    x = torch.randint(0, 256, (192, 1, 28, 28), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (192,), generator=gen)
    net = lif_fc_mnist.SNN(tau=2.0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    calls = {"n": 0}

    def forward(images):
        calls["n"] += 1
        if interrupt_at is not None and calls["n"] == interrupt_at:
            raise KeyboardInterrupt
        return net.firing_rate(images, 6)

    return training.fit_classifier(net=net, forward=forward, optimizer=optimizer, train_data=(x[:128], y[:128]),
                                   test_data=(x[128:], y[128:]), batch_size=32, epochs=epochs, out_dir=out_dir,
                                   resume=resume, progress=False, tensorboard=False, log=lambda s: None)


def test_resume_after_interrupt_continues_the_same_curve(tmp_path):
    straight = _tiny_fit(tmp_path / "a", epochs=3)
    # Ctrl-C in the middle of epoch 1 (calls: 4 train + 2 test per epoch)
    with pytest.raises(KeyboardInterrupt):
        _tiny_fit(tmp_path / "b", epochs=3, interrupt_at=6 + 3)
    latest = tmp_path / "b" / "checkpoint_latest.pth"
    assert training.load_checkpoint(latest)["epoch"] == 0
    resumed = _tiny_fit(tmp_path / "b", epochs=3, resume=latest)
    assert [r["epoch"] for r in resumed] == [1, 2]
    for a, b in zip(straight[1:], resumed):
        assert _without_speed(a) == _without_speed(b)
    assert [r["epoch"] for r in _metrics(tmp_path / "b")] == [0, 1, 2]  # one curve, no repeats


def test_interrupt_in_first_epoch_leaves_a_resumable_checkpoint(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _tiny_fit(tmp_path, epochs=2, interrupt_at=2)
    state = training.load_checkpoint(tmp_path / "checkpoint_latest.pth")
    assert state["epoch"] == -1
    resumed = _tiny_fit(tmp_path, epochs=2, resume=tmp_path / "checkpoint_latest.pth")
    straight = _tiny_fit(tmp_path / "ref", epochs=2)
    assert [_without_speed(r) for r in resumed] == [_without_speed(r) for r in straight]


def test_checkpoint_atomic_save_and_clear_errors(tmp_path):
    path = training.save_checkpoint({"w": torch.arange(3)}, tmp_path / "c.pth")
    assert torch.equal(training.load_checkpoint(path)["w"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]  # no temp file left
    with pytest.raises(training.CheckpointError, match="does not exist"):
        training.load_checkpoint(tmp_path / "missing.pth")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(training.CheckpointError, match="truncated or corrupt"):
        training.load_checkpoint(path)
    training.save_checkpoint({"w": 1}, path)
    with pytest.raises(training.CheckpointError, match="lacks"):
        training.load_checkpoint(path, required=("net",))


def test_main_reports_corrupt_resume_file(tmp_path, capsys):
    bad = tmp_path / "checkpoint_latest.pth"
    bad.write_bytes(b"not a checkpoint")
    argv = ["-T", "2", "-epochs", "1", "-out-dir", str(tmp_path), "--train-limit", "64", "--test-limit", "64",
            "--no-progress", "-resume", str(bad)]
    assert lif_fc_mnist.main(argv) == 2
    assert str(bad) in capsys.readouterr().err


def test_rng_state_round_trip():
    state = training.get_rng_state()
    a = (torch.rand(3), np.random.rand(3), __import__("random").random())
    training.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


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
