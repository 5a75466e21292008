from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lightly_derm.data import (
    DermaMNISTJPEGDataset,
    ImageFolderDataset,
    ISICClassificationDataset,
    MedMNISTDataset,
    SyntheticLesions,
    make_dataset,
)
from tests.data.images import save_rgb


def test_none_is_synthetic() -> None:
    dataset = make_dataset(
        num_images=10, image_size=32, num_classes=2, seed=5, split="val"
    )
    assert isinstance(dataset, SyntheticLesions)
    assert (len(dataset), dataset.image_size, dataset.num_classes, dataset.seed) == (
        10,
        32,
        2,
        5,
    )
    assert dataset.split == "val"
    with pytest.raises(ValueError, match="labels were given without data"):
        make_dataset(labels=__file__)


def test_npz_file_and_folder_with_one_npz(tmp_path: Path) -> None:
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = np.zeros((2, 28, 28, 3), np.uint8)
        arrays[f"{split}_labels"] = np.zeros((2, 1), np.uint8)
    (tmp_path / "npz").mkdir()
    np.savez(tmp_path / "npz" / "dermamnist.npz", **arrays)
    dataset = make_dataset(tmp_path / "npz" / "dermamnist.npz", split="test")
    assert isinstance(dataset, MedMNISTDataset) and dataset.split == "test"
    assert isinstance(make_dataset(tmp_path / "npz"), MedMNISTDataset)
    with pytest.raises(ValueError, match="carries its own labels"):
        make_dataset(tmp_path / "npz" / "dermamnist.npz", labels=__file__)


def test_dermamnist_folder_and_zip(dermamnist_dir: Path) -> None:
    assert isinstance(make_dataset(dermamnist_dir, split="val"), DermaMNISTJPEGDataset)
    dataset = make_dataset(dermamnist_dir / "dermamnist_jpg.zip", split="test")
    assert isinstance(dataset, DermaMNISTJPEGDataset) and len(dataset) == 2005


def test_isic_image_mask_layout(isic_dir: Path) -> None:
    dataset = make_dataset(isic_dir)
    assert isinstance(dataset, ImageFolderDataset)
    assert len(dataset) == 290 and dataset.root == (isic_dir / "images").resolve()
    assert not any("segmentation" in f for f in dataset.filenames)
    labelled = make_dataset(isic_dir, labels=isic_dir / "labels.csv", task="melanoma")
    assert isinstance(labelled, ISICClassificationDataset)
    assert (
        labelled.classes == ["not_melanoma", "melanoma"]
        and labelled.targets.sum() == 74
    )


def test_folders(tmp_path: Path) -> None:
    for name in (
        "train/nevus/a.jpg",
        "train/mel/b.jpg",
        "val/nevus/c.jpg",
        "val/mel/d.jpg",
    ):
        save_rgb(tmp_path / "split" / name)
    val = make_dataset(tmp_path / "split", split="val")
    assert isinstance(val, ImageFolderDataset)
    assert val.filenames == ["mel/d.jpg", "nevus/c.jpg"] and val.classes == [
        "mel",
        "nevus",
    ]
    with pytest.raises(
        ValueError, match=r"split folders \['train', 'val'\] but no 'test'"
    ):
        make_dataset(tmp_path / "split", split="test")
    save_rgb(tmp_path / "plain" / "x.png")
    save_rgb(tmp_path / "plain" / "deep" / "y.png")
    plain = make_dataset(tmp_path / "plain")
    assert plain.filenames == ["deep/y.png", "x.png"] and plain.targets.tolist() == [
        -1,
        -1,
    ]
    (tmp_path / "plain" / "labels.csv").write_text(
        "filename,label\nx.png,nv\ndeep/y.png,mel\n"
    )
    labelled = make_dataset(
        tmp_path / "plain", labels=tmp_path / "plain" / "labels.csv"
    )
    assert isinstance(labelled, ISICClassificationDataset)
    assert labelled.targets.tolist() == [1, 0]


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data not found: .*nowhere"):
        make_dataset(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="labels CSV not found: .*nolabels.csv"):
        make_dataset(tmp_path, labels=tmp_path / "nolabels.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ValueError, match=r"no images found in .*empty.*lightly-derm reads"
    ):
        make_dataset(tmp_path / "empty")
    (tmp_path / "gt.csv").write_text("image_id,label\n")
    with pytest.raises(
        ValueError, match="pass the image folder as data and the CSV as labels"
    ):
        make_dataset(tmp_path / "gt.csv")
    save_rgb(tmp_path / "one.png")
    with pytest.raises(ValueError, match="one image"):
        make_dataset(tmp_path / "one.png")
    shutil.make_archive(str(tmp_path / "other"), "zip", tmp_path / "empty")
    with pytest.raises(ValueError, match="not the DermaMNIST JPEG export"):
        make_dataset(tmp_path / "other.zip")
    (tmp_path / "weights.pt").write_bytes(b"\0")
    with pytest.raises(ValueError, match="cannot read .*weights.pt as data"):
        make_dataset(tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="split must be"):
        make_dataset(split="training")
    with pytest.raises(ValueError, match="task needs labels"):
        make_dataset(tmp_path, task="melanoma")


def test_dataset_splits(tmp_path: Path, dermamnist_dir: Path) -> None:
    from lightly_derm.data import dataset_splits

    everything = ("train", "val", "test")
    assert dataset_splits(None) == everything
    np.savez(tmp_path / "derma.npz", train_images=np.zeros((1, 2, 2)))
    assert dataset_splits(tmp_path / "derma.npz") == everything
    assert dataset_splits(tmp_path) == everything  # a folder holding only one .npz
    assert dataset_splits(dermamnist_dir) == everything
    assert dataset_splits(dermamnist_dir / "dermamnist_jpg.zip") == everything
    save_rgb(tmp_path / "split" / "train" / "a.png")
    save_rgb(tmp_path / "split" / "test" / "b.png")
    assert dataset_splits(tmp_path / "split") == ("train", "test")
    save_rgb(tmp_path / "plain" / "a" / "x.png")
    assert dataset_splits(tmp_path / "plain") == ()
    assert dataset_splits(tmp_path / "plain" / "a" / "x.png") == ()
    assert dataset_splits(tmp_path / "missing") == ()
