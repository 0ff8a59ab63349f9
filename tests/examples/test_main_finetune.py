"""``python -m spikeforge.examples.main_finetune`` (the Meta-SpikeFormer seed's CLI) on a tiny generated image
folder: train, resume, evaluate, finetune into a distillation head, distil from a zoo / file teacher, the released
checkpoint format, one-line errors, and a 2-process torchrun with --dist_eval."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("PIL", reason="image folders need Pillow (the vision extra)")

from spikeforge import training  # noqa: E402
from spikeforge.examples import main_finetune  # noqa: E402

from .image_folders import write_noise_folder  # noqa: E402

TINY = ["--model", "metaspikformer_tiny", "--input_size", "32", "--batch_size", "8", "--num_workers", "0",
        "--no_progress", "--threads", "1", "--aa", "none", "--reprob", "0", "--warmup_epochs", "0"]


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two classes (dark / bright noise), 16 + 16 training and 4 + 4 validation PNGs of 36 x 36."""
    return write_noise_folder(tmp_path_factory.mktemp("if"), train=16, val=4, size=36)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "t1"
    code = main_finetune.main([*TINY, "--data_path", str(data), "--epochs", "1", "--output_dir", str(out)])
    assert code == 0
    return out


def test_one_epoch_writes_the_engine_outputs_with_plain_args(trained):
    assert {"args.txt", "metrics.jsonl", "checkpoint_latest.pth", "checkpoint_max.pth"} <= {
        p.name for p in trained.iterdir()}
    records = _records(trained)
    assert [r["epoch"] for r in records] == [0] and 0.0 <= records[0]["test_acc"] <= 1.0
    ckpt = training.load_checkpoint(trained / "checkpoint_latest.pth")  # weights_only: plain data only
    assert ckpt["args"]["model"] == "metaspikformer_tiny" and ckpt["optimizer_type"] == "Lamb"
    assert ckpt["args"]["lr"] == pytest.approx(6e-4 * 8 / 256)  # blr x total batch / 256
    groups = ckpt["optimizer"]["param_groups"]
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.05]  # 1-D parameters undecayed


def test_resume_continues_and_eval_reproduces_the_logged_accuracy(trained, data, capsys):
    capsys.readouterr()
    args = [*TINY, "--data_path", str(data), "--epochs", "2", "--resume", str(trained / "checkpoint_latest.pth")]
    assert main_finetune.main(args) == 0
    records = _records(trained)
    assert [r["epoch"] for r in records] == [0, 1]
    assert main_finetune.main([*TINY, "--data_path", str(data), "--eval", "--resume",
                               str(trained / "checkpoint_latest.pth")]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("Accuracy of the network on the 8")][-1]
    assert f"{100 * records[-1]['test_acc']:.1f}%" in line  # the weights of epoch 1, evaluated again


def test_a_new_run_never_writes_into_a_finished_one(trained, data):
    before = (trained / "checkpoint_latest.pth").read_bytes()
    assert main_finetune.main([*TINY, "--data_path", str(data), "--epochs", "1", "--output_dir", str(trained)]) == 0
    assert (trained / "checkpoint_latest.pth").read_bytes() == before
    assert (trained.parent / f"{trained.name}-2" / "metrics.jsonl").is_file()


def test_finetune_into_a_kd_model_and_distil_from_a_zoo_teacher(trained, data, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "t2"
    code = main_finetune.main([*TINY, "--data_path", str(data), "--epochs", "1", "--output_dir", str(out),
                               "--finetune", str(trained / "checkpoint_latest.pth"), "--time_steps", "2", "--kd",
                               "--teacher_model", "metaspikformer_tiny", "--distillation_type", "soft"])
    assert code == 0
    text = capsys.readouterr().out
    assert "missing keys (2): ['head_kd.weight', 'head_kd.bias']" in text  # a fresh distillation head
    assert "unexpected keys (0)" in text and "type='soft'" in text
    ckpt = training.load_checkpoint(out / "checkpoint_latest.pth")
    assert "head_kd.weight" in ckpt["net"] and ckpt["args"]["time_steps"] == 2


def test_hard_distillation_from_a_teacher_file_with_its_weights(data, tmp_path, capsys):
    teacher_py = tmp_path / "teacher.py"
    teacher_py.write_text("import torch\n\ndef make(num_classes=2):\n"
                          "    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),\n"
                          "                               torch.nn.Linear(3, num_classes))\n")
    teacher = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))
    torch.save({"model": teacher.state_dict()}, tmp_path / "teacher.pth")
    capsys.readouterr()
    code = main_finetune.main([*TINY, "--data_path", str(data), "--epochs", "1", "--output_dir",
                               str(tmp_path / "kd"), "--kd", "--teacher_model", f"{teacher_py}:make",
                               "--teacher_path", str(tmp_path / "teacher.pth")])
    assert code == 0
    assert "type='hard'" in capsys.readouterr().out  # --kd alone means hard distillation, as the seed
    # a teacher file of another shape is one clear line
    torch.save({"model": torch.nn.Linear(3, 5).state_dict()}, tmp_path / "wrong.pth")
    code = main_finetune.main([*TINY, "--data_path", str(data), "--epochs", "1", "--output_dir",
                               str(tmp_path / "kd2"), "--kd", "--teacher_model", f"{teacher_py}:make",
                               "--teacher_path", str(tmp_path / "wrong.pth")])
    assert code == 2 and "--teacher_path" in capsys.readouterr().err


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_released_checkpoint_format_evaluates_and_code_is_refused(trained, data, tmp_path, capsys):
    net = training.load_checkpoint(trained / "checkpoint_latest.pth")["net"]
    official = {"model": net, "optimizer": {}, "epoch": 1, "scaler": {},
                "args": argparse.Namespace(model="metaspikformer_tiny", time_steps=1)}
    torch.save(official, tmp_path / "official.pth")
    capsys.readouterr()
    assert main_finetune.main([*TINY, "--data_path", str(data), "--eval", "--resume",
                               str(tmp_path / "official.pth")]) == 0
    assert "Accuracy of the network on the 8 test images" in capsys.readouterr().out
    torch.save({"model": net, "args": _Evil()}, tmp_path / "evil.pth")
    assert main_finetune.main([*TINY, "--data_path", str(data), "--eval", "--resume",
                               str(tmp_path / "evil.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "posix.system" in err[0] and "weights_only=False" not in err[0]


@pytest.mark.parametrize("extra,flag", [
    (["--epochs", "1"], "--data_path"),
    (["--model", "metaspikformer_8_513"], "--model"),
    (["--epochs", "2", "--warmup_epochs", "2"], "--warmup_epochs"),
    (["--distillation_type", "hard"], "--kd"),
    (["--accum_iter", "2"], "--accum_iter"),
    (["--model_mode", "sew"], "--model_mode"),
    (["--batch_size", "0"], "--batch_size"),
    (["--eval"], "--eval"),
    (["--kd", "--teacher_model", "no_such_teacher_anywhere"], "--teacher_model"),
])
def test_bad_input_is_one_line_naming_the_flag(data, tmp_path, capsys, extra, flag):
    base = [] if flag == "--data_path" else ["--data_path", str(data)]
    argv = [*TINY, *base, "--epochs", "1", "--output_dir", str(tmp_path / "r"), *extra]
    assert main_finetune.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0], err


def test_snnmlp_gets_its_published_recipe():
    from spikeforge.models import create_model

    args = main_finetune.get_args_parser().parse_args(["--model", "snnmlp_t", "--batch_size", "128"])
    main_finetune.resolve_recipe(args, world_size=8)
    assert (args.opt, args.warmup_epochs, args.clip_grad, args.epochs) == ("adamw", 20, 5.0, 300)
    assert args.lr == pytest.approx(5e-4 * 1024 / 512) and args.min_lr == pytest.approx(5e-6 * 1024 / 512)
    assert (args.mixup, args.cutmix, args.smoothing, args.color_jitter) == (0.8, 1.0, 0.1, 0.4)
    model = create_model("snnmlp_t", embed_dim=8, depths=(1, 1, 1, 1), num_classes=3)
    opt = main_finetune.build_optimizer(model, args)
    main_group, lif_group = opt.param_groups
    assert isinstance(opt, torch.optim.AdamW) and main_group["weight_decay"] == 0.05
    assert lif_group["lr"] == 1e-4 and lif_group["weight_decay"] == 0.0
    lif_names = {n for n, _ in model.named_parameters() if "tau" in n or "Vth" in n}
    assert len(lif_group["params"]) == len(lif_names) == 16


def test_two_processes_under_torchrun_with_dist_eval(data, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file() and shutil.which("torchrun") is None:
        pytest.skip("torchrun not installed next to the interpreter")
    out = tmp_path / "ddp"
    command = [str(torchrun) if torchrun.is_file() else "torchrun", "--standalone", "--nproc_per_node=2", "-m",
               "spikeforge.examples.main_finetune", *TINY, "--data_path", str(data), "--epochs", "1",
               "--output_dir", str(out), "--dist_eval", "--batch_size", "4"]
    env = {**os.environ, "SPIKEFORGE_BACKEND": "reference", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("Accuracy of the network on the 8 test images") == 1  # rank 0 prints
    assert "effective batch size: 8" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]
    ckpt = training.load_checkpoint(out / "checkpoint_latest.pth")
    assert ckpt["world_size"] == 2 and ckpt["args"]["lr"] == pytest.approx(6e-4 * 8 / 256)
    assert [r["epoch"] for r in _records(out)] == [0]
