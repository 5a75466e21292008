"""``evaluate`` with candidate lists: kNN k, probe weight decay and class weight chosen on validation data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightly_derm.jobs import evaluate
from lightly_derm.jobs.evaluate import EvaluateConfig, resolve_evaluate_config
from lightly_derm.models import resnet


@pytest.fixture(scope="module")
def random_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("backbone") / "resnet18.pt"
    torch.save(resnet("resnet18").state_dict(), path)
    return path


SYNTHETIC = {
    "input_size": 32,
    "synthetic_images": 48,
    "synthetic_test_images": 24,
    "fractions": [],
    "plots": False,
    "progress_bar": False,
}


def test_lists_are_chosen_on_a_held_out_share_and_refit(
    random_backbone: Path, tmp_path: Path
) -> None:
    from lightly_derm.evaluation import (
        extract_features,
        select_knn,
        select_linear_probe,
        stratified_subset,
    )
    from lightly_derm.jobs import load_backbone
    from lightly_derm.jobs.evaluate import evaluation_datasets

    results = evaluate(
        checkpoint=str(random_backbone),
        backbone="resnet18",
        knn_k=[1, 5, 40],
        linear_weight_decay=[1e-3, 1.0],
        linear_class_weight=["none", "balanced"],
        selection_metric="balanced_accuracy",
        out=str(tmp_path / "eval"),
        verbose=False,
        **SYNTHETIC,
    )
    selection = results["selection"]
    assert selection["data"] == "a stratified 20% of the training images"
    assert results["knn"]["knn_k"] == selection["knn_k"]
    assert results["linear"]["linear_weight_decay"] == selection["linear_weight_decay"]
    assert (results["linear"]["linear_class_weight"] or "none") == selection[
        "linear_class_weight"
    ]
    # the same choice by hand: features of the training images, a stratified 20 %
    cfg = resolve_evaluate_config(
        EvaluateConfig(
            checkpoint=str(random_backbone), backbone="resnet18", **SYNTHETIC
        )
    )
    train, _, _, _ = evaluation_datasets(cfg)
    backbone, _ = load_backbone(random_backbone, "resnet18")
    features = extract_features(backbone, train, batch_size=64)
    targets = features.targets.numpy()
    held = stratified_subset(targets, 0.2, seed=0)
    rest = np.setdiff1d(np.arange(targets.size), held)

    def part(index: np.ndarray):
        ids = torch.as_tensor(index)
        return type(features)(
            features.features[ids], features.targets[ids], [None] * len(index)
        )

    knn = select_knn(part(rest), part(held), [1, 5, 40], 3, 0.1, "balanced_accuracy")
    linear = select_linear_probe(
        part(rest), part(held), [1e-3, 1.0], [None, "balanced"], 3, "balanced_accuracy"
    )
    assert selection["knn_scores"] == pytest.approx(
        {str(k): v for k, v in knn["scores"].items()}, abs=1e-6
    )
    assert selection["linear_scores"] == pytest.approx(linear["scores"], abs=1e-6)


def test_single_values_choose_nothing(random_backbone: Path, tmp_path: Path) -> None:
    results = evaluate(
        checkpoint=str(random_backbone),
        backbone="resnet18",
        knn_k=3,
        out=str(tmp_path / "eval"),
        verbose=False,
        **SYNTHETIC,
    )
    assert "selection" not in results and results["knn"]["knn_k"] == 3


def test_dermamnist_chooses_on_its_val_split(
    dermamnist_dir: Path, random_backbone: Path, tmp_path: Path
) -> None:
    import csv
    import zipfile

    # a small copy of the export: the first images of each split
    with open(dermamnist_dir / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    counts = {"train": 40, "val": 20, "test": 20}
    chosen = []
    for split, count in counts.items():
        chosen += [r for r in rows if r["image_id"].split("_")[1] == split][:count]
    folder = tmp_path / "dermamnist"
    folder.mkdir()
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    with (
        zipfile.ZipFile(dermamnist_dir / "dermamnist_jpg.zip") as source,
        zipfile.ZipFile(folder / "dermamnist_jpg.zip", "w") as target,
    ):
        for row in chosen:
            name = f"images/{row['image_id']}.jpg"
            target.writestr(name, source.read(name))
    results = evaluate(
        checkpoint=str(random_backbone),
        backbone="resnet18",
        data=str(folder),
        input_size=28,
        knn_k=[3, 10],
        fractions=[],
        num_workers=0,
        plots=False,
        progress_bar=False,
        out=str(tmp_path / "eval"),
        verbose=False,
    )
    assert results["selection"]["data"] == "the val split"
    assert results["data"]["test_images"] == 20


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"knn_k": [5, 0]}, "knn_k must be an integer >= 1"),
        ({"knn_k": []}, "needs at least one value"),
        ({"linear_weight_decay": [1e-3, -1.0]}, "linear_weight_decay must be >= 0"),
        ({"linear_class_weight": "weighted"}, "linear_class_weight must be 'none' or"),
        ({"selection_metric": "f1"}, "selection_metric must be one of"),
    ],
)
def test_bad_options(random_backbone: Path, options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_evaluate_config(
            EvaluateConfig(checkpoint=str(random_backbone), **options)
        )
