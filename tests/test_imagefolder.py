"""Image folders (write MNIST out, read it back with Pillow), the augmentation pipeline, mixup and the
distillation loss."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("PIL", reason="image folders need Pillow (the vision extra)")

from spikeforge.datasets import MNIST, augment  # noqa: E402
from spikeforge.datasets.imagefolder import ImageFolder, ImageFolderError, main, write_imagefolder  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_imagefolder(tmp_path_factory.mktemp("if") / "mnist", "mnist", train_limit=40, val_limit=12)


def test_written_folder_reads_back_as_the_data_set(folder):
    mnist = MNIST(train=True)
    train = ImageFolder(folder / "train")
    assert train.classes == sorted(str(c) for c in set(mnist.targets[:40].tolist()))
    assert len(train) == 40 and len(ImageFolder(folder / "val")) == 12
    # every file holds the pixels of the MNIST image its name gives, under the folder of its label
    for path, label in train.samples:
        index = int(path.rsplit("/", 1)[1].split(".")[0])
        assert int(train.classes[label]) == int(mnist.targets[index])
        image = train.load(train.samples.index((path, label)))
        assert image.mode == "RGB"
        pixels = np.asarray(image)[:, :, 0]
        assert np.array_equal(pixels, mnist.data[index].numpy())


def test_existing_split_is_refused_and_cli_errors_are_one_line(folder, capsys):
    with pytest.raises(Exception, match="exists already"):
        write_imagefolder(folder, "mnist", train_limit=5, val_limit=5)
    assert main(["--out", str(folder), "--train-limit", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists already" in err[0]
    assert main(["--out", str(folder / "x"), "--train-limit", "0"]) == 2
    assert "--train-limit" in capsys.readouterr().err


def test_missing_or_empty_folders_name_the_folder(tmp_path):
    with pytest.raises(ImageFolderError, match="does not exist"):
        ImageFolder(tmp_path / "nope")
    (tmp_path / "a").mkdir()
    with pytest.raises(ImageFolderError, match="no class sub-folders"):
        ImageFolder(tmp_path / "a")
    (tmp_path / "a" / "x").mkdir()
    with pytest.raises(ImageFolderError, match="holds no images"):
        ImageFolder(tmp_path / "a")


def test_eval_transform_is_resize_center_crop_normalise(folder):
    image = ImageFolder(folder / "val").load(0)  # 28 x 28
    x = augment.build_transform(False, 24)(image)  # resize int(24 / 0.875) = 27, crop 24
    from PIL import Image

    resized = image.resize((27, 27), Image.Resampling.BICUBIC)
    expect = torch.from_numpy(np.asarray(resized, dtype=np.float32)[2:26, 2:26]).permute(2, 0, 1) / 255
    mean, std = torch.tensor(augment.IMAGENET_MEAN).view(3, 1, 1), torch.tensor(augment.IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(x, (expect - mean) / std)


def test_train_transform_shapes_and_seeded_repeatability(folder):
    image = ImageFolder(folder / "train").load(3)
    t = augment.build_transform(True, 32, aa="rand-m9-mstd0.5-inc1", reprob=1.0)
    random.seed(0), torch.manual_seed(0)
    a = t(image)
    random.seed(0), torch.manual_seed(0)
    b = t(image)
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    ops = [s for s in t.transforms if isinstance(s, augment.RandAugment)][0]
    assert (ops.num_ops, ops.magnitude, ops.magnitude_std, ops.prob, len(ops.ops)) == (2, 9.0, 0.5, 0.5, 15)
    for name in ops.ops:  # every operation runs on an RGB image and keeps its size
        assert ops.table[name](image, 9.0, (124, 116, 104), ops._resample).size == image.size
    with pytest.raises(Exception, match="--aa"):
        augment.rand_augment_transform("auto-m9", 32)


def test_random_erasing_fills_one_rectangle():
    random.seed(1), torch.manual_seed(1)
    x = torch.zeros(3, 20, 20)
    augment.RandomErasing(p=1.0, mode="const")(x)
    assert torch.count_nonzero(x) == 0
    augment.RandomErasing(p=1.0, mode="pixel")(x)
    rows, cols = torch.nonzero(x[0], as_tuple=True)
    area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert 0.02 * 400 * 0.5 <= len(rows) == area <= 400 / 3 * 1.2  # one filled rectangle of 2-33 % of the area


def test_mixup_targets_and_cutmix_box_area():
    labels = torch.tensor([0, 1, 2, 3])
    t = augment.mixup_target(labels, 5, 0.7, smoothing=0.1)
    assert torch.allclose(t.sum(1), torch.ones(4))
    assert t[0, 0] == pytest.approx(0.7 * (0.9 + 0.02) + 0.3 * 0.02)
    assert t[0, 3] == pytest.approx(0.3 * 0.92 + 0.7 * 0.02)
    random.seed(3), np.random.seed(3)
    mix = augment.Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=5)
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 10, 10).clone()
    targets = mix.mix(x, labels)
    swapped = (x[0] != 0).float().mean().item()  # the fraction of image 0 replaced by image 3
    assert targets[0, 0].item() == pytest.approx(1 - swapped) and targets[0, 3].item() == pytest.approx(swapped)
    random.seed(0), np.random.seed(0)
    x = torch.randn(4, 3, 8, 8)
    orig = x.clone()
    targets = augment.Mixup(mixup_alpha=1.0, label_smoothing=0.0, num_classes=5).mix(x, labels)
    lam = targets[0, 0].item()
    torch.testing.assert_close(x, lam * orig + (1 - lam) * orig.flip(0))


def test_distillation_loss_hard_and_soft_by_hand():
    from spikeforge.training.distill import DistillationLoss, LabelSmoothingCrossEntropy

    torch.manual_seed(0)
    teacher = torch.nn.Linear(6, 4)
    student = torch.nn.Linear(6, 4)  # only its training flag matters here
    inputs, labels = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0])
    out, out_kd = torch.randn(5, 4), torch.randn(5, 4)
    t_logits = teacher(inputs).detach()
    base = F.cross_entropy(out, labels, label_smoothing=0.1)
    hard = DistillationLoss(LabelSmoothingCrossEntropy(0.1), student, teacher, "hard", alpha=0.3)
    want = 0.7 * base + 0.3 * F.cross_entropy(out_kd, t_logits.argmax(1))
    torch.testing.assert_close(hard(torch.stack([out, out_kd]), labels, inputs=inputs), want)
    tau = 2.0
    p_t = F.softmax(t_logits / tau, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(out_kd / tau, 1))).sum() * tau * tau / out_kd.numel()
    soft = DistillationLoss(LabelSmoothingCrossEntropy(0.1), student, teacher, "soft", alpha=0.5, tau=tau)
    torch.testing.assert_close(soft((out, out_kd), labels, inputs=inputs), 0.5 * base + 0.5 * kl)
    assert not any(p.requires_grad for p in teacher.parameters()) or teacher.weight.grad is None
    student.eval()  # evaluation: plain cross-entropy of the output
    torch.testing.assert_close(hard(out, labels, inputs=inputs), F.cross_entropy(out, labels))
