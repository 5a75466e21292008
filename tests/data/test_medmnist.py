from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightly_derm.data import DERMAMNIST_CLASSES, MedMNISTDataset


def _official_npz(
    path: Path, sizes=(6, 3, 4), channels: int | None = 3, label_dims: int = 1
):
    """An .npz in the official MedMNIST layout: {split}_images uint8, {split}_labels (N, 1)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        shape = (n, 28, 28) if channels is None else (n, 28, 28, channels)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(
            0, 7 if label_dims == 1 else 2, (n, label_dims)
        ).astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return arrays


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_official_layout_rgb(tmp_path: Path, split: str) -> None:
    arrays = _official_npz(tmp_path / "dermamnist.npz")
    dataset = MedMNISTDataset(tmp_path / "dermamnist.npz", split=split)
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    assert len(dataset) == len(images)
    assert dataset.classes == list(DERMAMNIST_CLASSES)
    for i in range(len(dataset)):
        image, target, filename = dataset[i]
        assert image.mode == "RGB" and image.size == (28, 28)
        assert np.array_equal(np.asarray(image), images[i])
        assert target == int(labels[i, 0]) and isinstance(target, int)
        assert filename == f"dermamnist_{split}_{i:05d}"
    assert dataset.targets.tolist() == labels[:, 0].tolist()
    assert dataset.get_filenames()[-1] == filename


def test_grayscale_and_transform(tmp_path: Path) -> None:
    arrays = _official_npz(tmp_path / "pneumoniamnist.npz", channels=None)
    dataset = MedMNISTDataset(tmp_path / "pneumoniamnist.npz", transform=np.asarray)
    array, _, _ = dataset[2]
    assert array.shape == (28, 28, 3)
    assert np.array_equal(array, np.repeat(arrays["train_images"][2][..., None], 3, -1))
    assert dataset.classes == [
        str(c) for c in range(int(arrays["train_labels"].max()) + 1)
    ]


def test_multi_label(tmp_path: Path) -> None:
    arrays = _official_npz(tmp_path / "chestmnist.npz", channels=None, label_dims=14)
    dataset = MedMNISTDataset(tmp_path / "chestmnist.npz", split="val")
    _, target, _ = dataset[1]
    assert isinstance(target, torch.Tensor) and target.shape == (14,)
    assert target.tolist() == arrays["val_labels"][1].tolist()


def test_errors(tmp_path: Path) -> None:
    _official_npz(tmp_path / "d.npz")
    with pytest.raises(
        ValueError, match=r"split 'validation'.*\['train', 'val', 'test'\]"
    ):
        MedMNISTDataset(tmp_path / "d.npz", split="validation")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        MedMNISTDataset(tmp_path / "missing.npz")
    np.savez(
        tmp_path / "floats.npz",
        train_images=np.zeros((2, 8, 8, 3)),
        train_labels=np.zeros((2, 1)),
    )
    with pytest.raises(ValueError, match="uint8"):
        MedMNISTDataset(tmp_path / "floats.npz")
    np.savez(
        tmp_path / "short.npz",
        train_images=np.zeros((3, 8, 8), np.uint8),
        train_labels=np.zeros((2, 1)),
    )
    with pytest.raises(ValueError, match=r"N = 3"):
        MedMNISTDataset(tmp_path / "short.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="text.npz"):
        MedMNISTDataset(tmp_path / "text.npz")


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_npz_is_one_data_error(tmp_path: Path, damage: str) -> None:
    # before: a corrupt member ended in a BadZipFile/zlib traceback
    from lightly_derm.errors import DataError

    path = tmp_path / "dermamnist.npz"
    _official_npz(path, sizes=(200, 3, 4))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 4] ^= 0xFF  # inside train_images' compressed data
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        MedMNISTDataset(path)
    message = str(info.value)
    assert (
        message.startswith(f"cannot read {path} as an .npz file")
        and "\n" not in message
    )


def test_huge_labels_are_refused(tmp_path: Path) -> None:
    from lightly_derm.errors import DataError

    np.savez(
        tmp_path / "big.npz",
        train_images=np.zeros((2, 8, 8), np.uint8),
        train_labels=np.array([[0], [3_000_000_000]]),
    )
    with pytest.raises(DataError, match="train_labels reach 3000000000, above 99999"):
        MedMNISTDataset(tmp_path / "big.npz")
