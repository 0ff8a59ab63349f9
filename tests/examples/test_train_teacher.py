"""``python -m spikeforge.examples.train_teacher``: a timm teacher trained on an image folder, saved as a plain
state_dict that ``main_finetune --teacher_path`` reads; one-line errors for the expected mistakes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("PIL", reason="image folders need Pillow (the vision extra)")

from spikeforge.examples import train_teacher  # noqa: E402

from .image_folders import write_noise_folder  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_noise_folder(tmp_path_factory.mktemp("teacher_if"), train=8, val=4, size=20)


def test_missing_data_path_is_one_line(tmp_path, capsys):
    code = train_teacher.main(["--data_path", str(tmp_path / "nope"), "--output", str(tmp_path / "t.pth")])
    err = capsys.readouterr().err
    assert code != 0 and "--data_path" in err and "Traceback" not in err


def test_an_existing_teacher_is_never_replaced(data, tmp_path, capsys):
    out = tmp_path / "t.pth"
    out.write_bytes(b"earlier work")
    code = train_teacher.main(["--data_path", str(data), "--output", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and "--output" in err and "exists" in err
    assert out.read_bytes() == b"earlier work"


def test_without_timm_the_message_names_the_extra(data, tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm" or name.startswith("timm."):
            raise ImportError("no timm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    code = train_teacher.main(["--data_path", str(data), "--output", str(tmp_path / "t.pth")])
    err = capsys.readouterr().err
    assert code != 0 and "spikeforge[timm]" in err and not (tmp_path / "t.pth").exists()


def test_trains_and_the_distillation_loader_reads_it(data, tmp_path):
    timm = pytest.importorskip("timm", reason="the teacher is a timm model (the timm extra)")
    from spikeforge.training.distill import build_teacher

    out = tmp_path / "teacher.pth"
    code = train_teacher.main(["--model", "resnet10t", "--data_path", str(data), "--input_size", "32",
                               "--epochs", "1", "--batch_size", "4", "--num_workers", "0", "--no_progress",
                               "--output", str(out)])
    assert code == 0 and out.is_file()
    state = torch.load(out, weights_only=True)
    reference = timm.create_model("resnet10t", num_classes=2).state_dict()
    assert set(state) == set(reference)
    teacher = build_teacher("resnet10t", str(out), num_classes=2)
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    torch.testing.assert_close(teacher.state_dict()["fc.weight"], state["fc.weight"])
