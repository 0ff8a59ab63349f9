"""``python -m spikeforge.examples.stbp``: flags, fp32 → QAT → integer export, resume, errors, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spikeforge.examples import stbp as cli
from spikeforge.training import read_metrics

TINY = ["--train-limit", "256", "--test-limit", "128", "-b", "64", "--test-batch-size", "128", "--no-progress",
        "--threads", "1"]


def test_flags_parse_like_the_reference_and_bad_values_are_named(capsys):
    args = cli.build_parser().parse_args(["MNISTNet", "--dataset", "MNIST", "-v", "0.3", "-ta", "0.5",
                                          "--p", "DDP", "--local_rank", "0", "-q", "--bit", "4"])
    assert (args.model, args.vth, args.tau, args.bit, args.parallel) == ("stbp_mnistnet", 0.3, 0.5, 4, "DDP")
    assert cli.build_parser().parse_args(["resnet18", "--dataset", "CIFAR10"]).model == "stbp_resnet18"
    for argv, message in ((["MNISTNet", "--bit", "1"], "--bit must be between 2 and 16"),
                          (["MNISTNet", "--bit", "3.5"], "--bit must be an integer number of bits"),
                          (["VGG19"], "unknown STBP model 'VGG19'")):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(argv)
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err  # one line, no usage dump
    for argv, message in ((["CifarNet", "--dataset", "MNIST"], "3x32x32 images; use --dataset CIFAR10"),
                          (["MNISTNet", "--tau", "2"], "--tau is STBP's retention factor"),
                          (["MNISTNet", "--vth", "nan"], "--vth must be a finite number"),
                          (["MNISTNet", "--per-channel"], "need -q"),
                          (["MNISTNet", "--resume", "/no/such.pth"], "--resume /no/such.pth: no such")):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err  # one line


def test_fp32_then_qat_then_exact_resume_and_integer_report(tmp_path):
    fp32, q4 = tmp_path / "fp32", tmp_path / "q4"
    assert cli.main(["MNISTNet", "--dataset", "MNIST", "--epochs", "1", "--out-dir", str(fp32), *TINY]) == 0
    records = read_metrics(fp32 / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0] and 0.0 <= records[0]["test_acc"] <= 1.0
    # QAT from the fp32 checkpoint (weights only), then resume that QAT run exactly for one more epoch
    argv = ["MNISTNet", "-q", "--bit", "4", "--out-dir", str(q4), *TINY]
    assert cli.main([*argv, "--epochs", "1", "--resume", str(fp32 / "checkpoint_max.pth")]) == 0
    report = json.loads((q4 / "integer_report.json").read_text())
    assert report["mismatched_positions"] == 0 and report["output_counts_identical"]
    assert report["n_images"] == 128 and report["fake_quant_acc"] == report["integer_acc"]
    assert report["size_bytes"] < report["fp32_bytes"] / 7 and report["profile"] == "generic_int4"
    assert cli.main([*argv, "--epochs", "2", "--resume", str(q4 / "checkpoint_latest.pth"), "--no-export"]) == 0
    assert [r["epoch"] for r in read_metrics(q4 / "metrics.jsonl")] == [0, 1]
    saved = torch.load(q4 / "checkpoint_latest.pth", weights_only=True)["args"]
    assert saved["frac_bits_layers"]["conv1_lif"] in (0, 1, 2) and saved["bit"] == 4


def test_export_only_verify_integer_and_their_errors(tmp_path, capsys):
    fp32, q4 = tmp_path / "fp32", tmp_path / "q4"
    assert cli.main(["MNISTNet", "--epochs", "1", "--out-dir", str(fp32), *TINY]) == 0
    assert cli.main(["MNISTNet", "-q", "--bit", "4", "--epochs", "1", "--resume", str(fp32 / "checkpoint_max.pth"),
                     "--out-dir", str(q4), "--no-export", *TINY]) == 0
    assert not (q4 / "integer").exists()
    capsys.readouterr()
    # export the finished QAT run afterwards: a new folder next to the checkpoint, spikes checked
    ckpt = str(q4 / "checkpoint_max.pth")
    assert cli.main(["MNISTNet", "-q", "--bit", "4", "--resume", ckpt, "--export-only", *TINY]) == 0
    report = json.loads((q4 / "export_checkpoint_max" / "integer_report.json").read_text())
    assert report["mismatched_positions"] == 0 and report["n_images"] == 128
    assert report["integer_acc"] == report["fake_quant_acc"] and report["spikes_fake"] == report["spikes_integer"]
    # check a saved integer network against the checkpoint again, then a damaged copy of it
    integer = q4 / "export_checkpoint_max" / "integer"
    assert cli.main(["MNISTNet", "-q", "--bit", "4", "--resume", ckpt, "--verify-integer", str(integer), *TINY]) == 0
    assert '"mismatched_positions": 0' in capsys.readouterr().out
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in integer.iterdir():
        data = bytearray(f.read_bytes())
        if f.suffix == ".npz":
            data[len(data) // 2] ^= 0xFF
        (bad / f.name).write_bytes(bytes(data))
    assert cli.main(["MNISTNet", "-q", "--bit", "4", "--resume", ckpt, "--verify-integer", str(bad), *TINY]) == 2
    err = capsys.readouterr().err
    assert "arrays.npz" in err and "corrupt" in err and err.count("\n") == 1, err
    # the export needs a quantised run of these options; an 8-bit network does not fit a 4-bit profile
    assert cli.main(["MNISTNet", "-q", "--bit", "4", "--resume", str(fp32 / "checkpoint_max.pth"),
                     "--export-only", *TINY]) == 2
    assert "is not a checkpoint of a 4-bit run" in capsys.readouterr().err
    code = cli.main(["MNISTNet", "-q", "--bit", "8", "--profile", "generic_int4", "--epochs", "1", "--resume",
                     str(fp32 / "checkpoint_max.pth"), "--out-dir", str(tmp_path / "q8"), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "--profile generic_int4: the integer stbp_mnistnet violates hardware profile 'generic_int4'" in err
    assert "conv 'conv2': weight codes up to 127 need 8 bits, the profile allows 4" in err
    assert not (tmp_path / "q8" / "metrics.jsonl").exists()  # refused before training
    assert cli.main(["MNISTNet", "--profile", "generic_int8", *TINY]) == 2
    assert "--profile needs -q" in capsys.readouterr().err


def test_checkpoint_of_another_model_is_refused(tmp_path, capsys):
    other = tmp_path / "CifarNet_ckpt.pth"
    torch.save({"model": {"conv0.weight": torch.zeros(1), "bn0.weight": torch.zeros(1)}, "acc": 1.0, "epoch": 0},
               other)
    code = cli.main(["MNISTNet", "--epochs", "1", "--out-dir", str(tmp_path / "run"), "--resume", str(other), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "does not match model stbp_mnistnet" in err and "conv0.weight" in err
    fp32 = {"model": {"conv1.weight": torch.zeros(15, 1, 5, 5), "conv1_s.layer.weight": torch.ones(15, 1, 5, 5)}}
    torch.save(fp32, tmp_path / "disagreeing.pth")
    code = cli.main(["MNISTNet", "--out-dir", str(tmp_path / "run"), "--resume", str(tmp_path / "disagreeing.pth"),
                     *TINY])
    assert code == 2 and "'conv1.weight' and 'conv1_s.layer.weight'" in capsys.readouterr().err
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    code = cli.main(["MNISTNet", "--out-dir", str(tmp_path / "run"), "--resume", str(tmp_path / "broken.pth"),
                     *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "broken.pth" in err and "corrupt" in err


def test_torchrun_two_processes_on_cpu(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", SPIKEFORGE_BACKEND="reference")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "spikeforge.examples.stbp", "MNISTNet", "--dataset", "MNIST", "--epochs", "1", "--out-dir", str(out),
           "--p", "DDP", "--train-limit", "256", "--test-limit", "128", "-b", "32", "--no-progress"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_metrics(out / "metrics.jsonl")
    assert len(records) == 1 and records[0]["train_acc"] is not None and (out / "checkpoint_max.pth").is_file()
    assert json.loads(json.dumps(torch.load(out / "checkpoint_latest.pth", weights_only=True)["world_size"])) == 2


def test_resnet18_trains_through_the_cli_on_generated_cifar10(tmp_path):
    # CifarNet trains a few steps in test_models (its 45M-parameter checkpoints are too big to write here)
    from .cifar_files import write_cifar

    folder, _ = write_cifar(tmp_path, "binary", n_per_batch=2)  # 10 training images, 2 test images
    out = tmp_path / "run"
    argv = ["ResNet18", "--dataset", "CIFAR10", "--data-dir", str(folder), "--epochs", "1", "-b", "4",
            "--test-batch-size", "2", "--out-dir", str(out), "--no-progress", "--threads", "1", "--steps", "1"]
    assert cli.main(argv) == 0
    (record,) = read_metrics(out / "metrics.jsonl")
    assert record["epoch"] == 0 and 0.0 <= record["test_acc"] <= 1.0 and record["train_loss"] > 0
    saved = torch.load(out / "checkpoint_latest.pth", weights_only=True)
    assert saved["args"]["model"] == "stbp_resnet18" and saved["args"]["dataset"] == "CIFAR10"
