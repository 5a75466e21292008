from __future__ import annotations

import csv
import io
import math
import zipfile

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image

from lightly_derm.data import GroupedViewCollate
from lightly_derm.methods import FGSSLClassifier
from tests.methods.test_fgssl import SMALL, Recorder, trainer  # noqa: F401


@pytest.fixture(scope="module")
def dermamnist(dermamnist_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """48 DermaMNIST training images upsampled to 32 px (grids 8, 4, 2 divide it)."""
    with open(dermamnist_dir / "labels.csv", newline="") as f:
        rows = [
            r for r in csv.DictReader(f) if r["image_id"].startswith("DermaMNIST_train")
        ]
    classes = sorted({r["dx"] for r in rows})
    rows = rows[:48]
    images, targets = [], []
    with zipfile.ZipFile(dermamnist_dir / "dermamnist_jpg.zip") as archive:
        for row in rows:
            data = archive.read(f"images/{row['image_id']}.jpg")
            image = Image.open(io.BytesIO(data)).convert("RGB")
            images.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255))
            targets.append(classes.index(row["dx"]))
    x = torch.stack(images).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=32, mode="bilinear", align_corners=False)
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    return x, torch.tensor(targets)


@pytest.mark.slow
def test_fine_tunes_on_dermamnist(dermamnist) -> None:
    pl.seed_everything(0, verbose=False)
    images, targets = dermamnist
    model = FGSSLClassifier(**SMALL, num_classes=7, lr=0.05, backbone_lr=0.02)
    dataset = torch.utils.data.TensorDataset(images, targets)
    loader = torch.utils.data.DataLoader(dataset, batch_size=16)
    recorder = Recorder()
    fit = trainer(4, [recorder], limit_val_batches=1)
    fit.fit(model, loader, val_dataloaders=loader)
    assert recorder.steps == 4 * 4 * len(loader) == fit.global_step
    assert recorder.parts == pytest.approx(recorder.losses, rel=1e-5)
    assert sum(recorder.losses[-3:]) < 0.8 * sum(recorder.losses[:3]), recorder.losses
    metrics = fit.callback_metrics
    assert 0 <= float(metrics["val_acc"]) <= 1 and math.isfinite(
        float(metrics["val_loss"])
    )
    # prediction: argmax of the summed heads of the unshuffled image
    model.eval()
    with torch.no_grad():
        out = model.blocks(images[:5])
        logits = model.predict_step((images[:5], targets[:5]), 0)
    expected = out.logits[0] + out.logits[1] + out.logits[2] + out.logits[3]
    torch.testing.assert_close(logits, expected)


def test_batches_and_targets() -> None:
    model = FGSSLClassifier(**SMALL, num_classes=3)
    views = [([torch.rand(3, 32, 32)], i % 3) for i in range(4)]
    grouped = GroupedViewCollate()(views)
    images, targets = model.labelled_batch(grouped)
    assert torch.equal(images, grouped.view(0)) and targets.tolist() == [0, 1, 2, 0]
    images, targets = model.labelled_batch((torch.rand(2, 3, 32, 32), [1, 2]))
    assert targets.dtype == torch.long and targets.tolist() == [1, 2]
    # unlabelled targets (-1) are ignored by the loss
    logits = torch.randn(3, 3)
    assert model._ce(logits, torch.tensor([-1, 2, -1])) == pytest.approx(
        F.cross_entropy(logits[1:2], torch.tensor([2])).item()
    )
    with pytest.raises(ValueError, match=r"targets must be class indices \(B,\)"):
        model.labelled_batch((torch.rand(2, 3, 32, 32), torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="grid 8 does not divide"):
        model.labelled_batch((torch.rand(2, 3, 28, 28), torch.zeros(2)))
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        FGSSLClassifier(**SMALL, num_classes=1)
    with pytest.raises(ValueError, match="missing keys"):
        FGSSLClassifier(
            **SMALL, blocks_weights={"blocks.concat_block.1.weight": torch.zeros(1)}
        )


@pytest.mark.parametrize(("input_size", "resize"), [(224, 256), (64, 73), (32, 37)])
def test_eval_views_are_resize_then_center_crop(input_size, resize) -> None:
    import torchvision.transforms.functional as TF

    model = FGSSLClassifier(**SMALL)
    rng = np.random.default_rng(0)
    for size in [(300, 200), (97, 130)]:
        image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
        (view,) = model.eval_transform(input_size)(image)
        expected = TF.normalize(
            TF.to_tensor(TF.center_crop(TF.resize(image, resize), input_size)),
            mean=[0.485, 0.456, 0.406],
            std=[0.229, 0.224, 0.225],
        )
        torch.testing.assert_close(view, expected)


def test_training_views_are_the_authors_recipe() -> None:
    model = FGSSLClassifier(**SMALL)
    transform = model.cpu_view_transform(32)
    steps = [type(t).__name__ for t in transform.transforms[0].transforms]
    assert steps == [
        "_ToRGB",
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "RandomVerticalFlip",
        "AugMix",
        "ToTensor",
        "Normalize",
    ]
    image = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (80, 120, 3), dtype=np.uint8)
    )
    torch.manual_seed(0)
    first, second = transform(image)[0], transform(image)[0]
    assert first.shape == (3, 32, 32) and not torch.equal(first, second)
    with pytest.raises(ValueError, match="input_size 30 is not divisible"):
        model.eval_transform(30)
