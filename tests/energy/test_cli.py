"""``spikeforge energy`` end to end."""

import json
import os
import subprocess
import sys

import pytest
import torch

from spikeforge import cli

pytest.importorskip("matplotlib")


def _run(*argv, cwd):
    env = dict(os.environ, SPIKEFORGE_BACKEND="reference")   # no kernel compilation in a short subprocess
    return subprocess.run([sys.executable, "-m", "spikeforge.cli", "energy", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_lif_fc_mnist_random_data_in_a_subprocess(tmp_path):
    done = _run("--model", "lif_fc_mnist", "--data", "random", "-T", "8", "--batches", "1", "-b", "16",
                "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "per sample" in done.stdout
    for name in ("card.md", "card.json", "energy.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    card = json.loads((tmp_path / "out" / "card.json").read_text())
    (row,) = card["layers"]
    # Poisson spikes of uniform [0, 1) pixels: rate about 0.5; SOP = rate · 8 steps · 7840 MACs
    assert row["name"] == "layer.1" and row["input_is_spikes"] and row["flops"] == 784 * 10
    assert 0.45 < row["input_rate"] < 0.55
    assert row["sops"] == pytest.approx(row["input_rate"] * 8 * 7840)
    assert card["T"] == 8 and card["samples"] == 16


def test_bad_model_name_is_one_line_and_non_zero(tmp_path, capsys):
    # in process: main() returning (not raising) is what keeps the traceback away from the user
    assert cli.main(["energy", "--model", "no_such_net", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "unknown model 'no_such_net'" in err and "lif_fc_mnist" in err
    assert not (tmp_path / "x").exists()


def test_missing_or_unfit_weights(tmp_path, capsys):
    assert cli.main(["energy", "--model", "lif_fc_mnist", "--weights", str(tmp_path / "none.pth")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "weights file not found" in err
    torch.save({"model": {"layer.1.weight": torch.zeros(3, 3)}}, tmp_path / "bad.pth")
    assert cli.main(["energy", "--model", "lif_fc_mnist", "--weights", str(tmp_path / "bad.pth")]) == 2
    assert "does not fit lif_fc_mnist" in capsys.readouterr().err


def test_checkpoint_of_the_example_is_loaded(tmp_path, capsys, monkeypatch):
    # a checkpoint in the example's format; all-zero weights: no current, so no output spike and no change
    # to the input side: the first layer reads the Poisson spikes (declared) whatever the weights are
    monkeypatch.setenv("SPIKEFORGE_BACKEND", "reference")
    torch.save({"model": {"layer.1.weight": torch.zeros(10, 784)}, "epoch": 0}, tmp_path / "ck.pth")
    out = tmp_path / "out"
    assert cli.main(["energy", "--model", "lif_fc_mnist", "--weights", str(tmp_path / "ck.pth"), "--data",
                     "mnist", "-T", "4", "--batches", "1", "-b", "8", "--out", str(out), "--no-plot"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["neuron_rates"]["layer.2"] == 0.0
    assert "ck.pth" in card["model"] and "MNIST test set" in card["data"]
    assert not (out / "energy.png").exists()
    capsys.readouterr()
