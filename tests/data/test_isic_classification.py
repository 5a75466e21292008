from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest

from lightly_derm.data import ISICClassificationDataset
from lightly_derm.errors import DataError
from tests.data.images import save_rgb, truncate


def test_shared_subset_matches_labels(isic_dir: Path) -> None:
    dataset = ISICClassificationDataset(isic_dir / "images", isic_dir / "labels.csv")
    with open(isic_dir / "labels.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(dataset) == len(rows) == 290
    assert dataset.format == "isic2017"
    assert dataset.classes == ["melanoma", "seborrheic_keratosis", "nevus"]
    for filename, target, row in zip(
        dataset.filenames, dataset.targets.tolist(), rows, strict=True
    ):
        assert filename == row["image_id"] + ".jpg"
        assert target == (0 if float(row["melanoma"]) == 1 else 2)
    image, target, filename = dataset[3]
    assert image.mode == "RGB" and image.size == (
        int(rows[3]["width"]),
        int(rows[3]["height"]),
    )


def test_official_csv_with_image_subset_warns_once(isic_dir: Path) -> None:
    csv_path = isic_dir / "ISIC-2017_Training_Part3_GroundTruth.csv"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = ISICClassificationDataset(isic_dir, csv_path, task="melanoma")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "1710 of 2000 image ids" in message and "ISIC_0000080" in message
    assert "and 1705 more" in message
    assert len(dataset) == 290 and dataset.targets.sum() == 74
    assert dataset.filenames[0] == "images/ISIC_0000000.jpg"  # masks/ never matched
    with pytest.raises(ValueError, match="1710 of 2000 image ids"):
        ISICClassificationDataset(isic_dir, csv_path, strict=True)


def test_ids_without_images_and_ambiguous_ids(tmp_path: Path) -> None:
    save_rgb(tmp_path / "a" / "ISIC_1.jpg")
    save_rgb(tmp_path / "b" / "ISIC_2.png")
    csv_path = tmp_path / "gt.csv"
    csv_path.write_text("image_id,label\nISIC_1,benign\nISIC_2,malignant\n")
    dataset = ISICClassificationDataset(tmp_path, csv_path)
    assert dataset.filenames == ["a/ISIC_1.jpg", "b/ISIC_2.png"]
    assert dataset.targets.tolist() == [0, 1]
    save_rgb(tmp_path / "b" / "ISIC_1.png")
    with pytest.raises(ValueError, match=r"'ISIC_1'.*several files.*a/ISIC_1.jpg"):
        ISICClassificationDataset(tmp_path, csv_path)
    other = tmp_path / "other.csv"
    other.write_text("image_id,label\nISIC_7,benign\nISIC_8,malignant\n")
    with pytest.raises(ValueError, match=r"none of the 2 image ids .*ISIC_7, ISIC_8"):
        ISICClassificationDataset(tmp_path / "a", other)


def test_unreadable_image_in_csv_is_skipped(tmp_path: Path) -> None:
    for i in range(3):
        save_rgb(tmp_path / f"ISIC_{i}.jpg", seed=i)
    truncate(tmp_path / "ISIC_1.jpg")
    csv_path = tmp_path / "gt.csv"
    csv_path.write_text(
        "image_id,melanoma,seborrheic_keratosis\nISIC_0,1,0\nISIC_1,0,1\nISIC_2,0,0\n"
    )
    with pytest.warns(UserWarning, match="skipped 1 unreadable image.*ISIC_1.jpg"):
        dataset = ISICClassificationDataset(tmp_path, csv_path)
    assert dataset.filenames == ["ISIC_0.jpg", "ISIC_2.jpg"]
    assert dataset.targets.tolist() == [0, 2]


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="gt.csv"):
        ISICClassificationDataset(tmp_path, tmp_path / "gt.csv")
    (tmp_path / "gt.csv").write_text("image_id,label\nISIC_1,benign\n")
    with pytest.raises(FileNotFoundError, match="nope"):
        ISICClassificationDataset(tmp_path / "nope", tmp_path / "gt.csv")


def test_two_ids_naming_one_image_are_refused(tmp_path: Path) -> None:
    # ids X and sub/X with conflicting labels put sub/X.jpg in twice, with both labels
    save_rgb(tmp_path / "sub" / "ISIC_1.jpg")
    save_rgb(tmp_path / "ISIC_2.jpg")
    csv_path = tmp_path / "gt.csv"
    csv_path.write_text("image_id,label\nsub/ISIC_1,nv\nISIC_2,mel\nISIC_1,mel\n")
    with pytest.raises(DataError) as info:
        ISICClassificationDataset(tmp_path, csv_path)
    assert str(info.value) == (
        f"labels CSV {csv_path} line 4: image id 'ISIC_1' names the same image "
        f"sub/ISIC_1.jpg as id 'sub/ISIC_1' (labels CSV {csv_path} line 2); each "
        "image needs one row"
    )
