"""The memory flags of the example command lines: one-line errors, and short runs in every train mode."""

from __future__ import annotations

import json

import pytest

from spikeforge.examples import lif_fc_mnist


def _record(run_dir):
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])


@pytest.mark.parametrize("argv, message", [
    (["--tbptt-k", "4"], "--tbptt-k is for --train-mode tbptt"),
    (["--train-mode", "tbptt"], "needs --tbptt-k"),
    (["--train-mode", "ottt", "--checkpoint-segments", "2"], "--checkpoint-segments is for --train-mode bptt"),
    (["--checkpoint-segments", "0"], "--checkpoint-segments must be >= 1"),
])
def test_bad_flags_are_one_line_errors(argv, message, capsys, tmp_path):
    assert lif_fc_mnist.main(argv + ["-out-dir", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("flags", [["--train-mode", "tbptt", "--tbptt-k", "3"], ["--train-mode", "ottt"],
                                   ["--checkpoint-segments", "2", "--dense", "--bit-spikes"]])
def test_lif_fc_mnist_trains_in_every_mode(flags, tmp_path):
    argv = ["-T", "6", "-b", "32", "-epochs", "1", "-out-dir", str(tmp_path), "--train-limit", "256",
            "--test-limit", "128", "--seed", "0", "--no-progress", "--no-plots", *flags]
    assert lif_fc_mnist.main(argv) == 0
    run_dir = next(p for p in tmp_path.iterdir() if p.is_dir())
    record = _record(run_dir)
    assert 0.0 <= record["test_acc"] <= 1.0 and record["train_loss"] > 0
