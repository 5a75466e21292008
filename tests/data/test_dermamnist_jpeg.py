from __future__ import annotations

import csv
import io
import pickle
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightly_derm.data import DermaMNISTJPEGDataset, UnreadableImageError
from lightly_derm.errors import DataError

ORDER = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


@pytest.mark.parametrize("split,size", [("train", 7007), ("val", 1003), ("test", 2005)])
@pytest.mark.slow
def test_official_split_sizes(dermamnist_dir: Path, split: str, size: int) -> None:
    dataset = DermaMNISTJPEGDataset(dermamnist_dir, split=split)
    assert len(dataset) == size
    assert dataset.classes == ORDER


def test_train_class_counts_and_id_to_file_mapping(dermamnist_dir: Path) -> None:
    dataset = DermaMNISTJPEGDataset(
        dermamnist_dir / "dermamnist_jpg.zip", split="train"
    )
    counts = Counter(dataset.classes[t] for t in dataset.targets.tolist())
    assert counts == {
        "akiec": 228,
        "bcc": 359,
        "bkl": 769,
        "df": 80,
        "mel": 779,
        "nv": 4693,
        "vasc": 99,
    }
    with open(dermamnist_dir / "labels.csv", newline="") as file:
        dx = {row["image_id"]: row["dx"] for row in csv.DictReader(file)}
    # index i is DermaMNIST_train_{i:05d}, the MedMNIST array order
    for i in (0, 1, 4242, 7006):
        image, target, filename = dataset[i]
        assert filename == f"images/DermaMNIST_train_{i:05d}.jpg"
        assert dataset.classes[target] == dx[f"DermaMNIST_train_{i:05d}"]
        assert image.mode == "RGB" and image.size == (28, 28)
    with zipfile.ZipFile(dermamnist_dir / "dermamnist_jpg.zip") as archive:
        expected = Image.open(io.BytesIO(archive.read(filename))).convert("RGB")
    assert np.array_equal(np.asarray(image), np.asarray(expected))


def test_worker_processes_open_their_own_zip(dermamnist_dir: Path) -> None:
    dataset = DermaMNISTJPEGDataset(
        dermamnist_dir,
        split="val",
        transform=lambda im: torch.from_numpy(np.asarray(im).copy()),
    )
    dataset[0]  # opens the zip in this process
    state = pickle.loads(
        pickle.dumps(DermaMNISTJPEGDataset(dermamnist_dir, split="val"))
    )
    assert state._archive is None
    subset = torch.utils.data.Subset(dataset, range(64))
    loader = torch.utils.data.DataLoader(subset, batch_size=16, num_workers=2)
    images = torch.cat([batch[0] for batch in loader])
    assert images.shape == (64, 28, 28, 3)
    assert torch.equal(images[17], dataset[17][0])


def _tiny_export(root: Path, rows: list[tuple[str, str]], members: list[str]) -> Path:
    root.mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (28, 28), "sienna").save(buffer, format="JPEG")
    with zipfile.ZipFile(root / "dermamnist_jpg.zip", "w") as archive:
        for member in members:
            archive.writestr(f"images/{member}.jpg", buffer.getvalue())
    (root / "labels.csv").write_text(
        "image_id,dx,lesion_id\n" + "".join(f"{i},{dx},x\n" for i, dx in rows)
    )
    return root


def test_tiny_export_and_errors(tmp_path: Path) -> None:
    ids = ["DermaMNIST_train_00001", "DermaMNIST_train_00000", "DermaMNIST_val_00000"]
    root = _tiny_export(
        tmp_path / "ok", [(ids[0], "mel"), (ids[1], "nv"), (ids[2], "df")], ids
    )
    train = DermaMNISTJPEGDataset(root)
    assert train.image_ids == ids[1::-1]  # sorted by number
    assert train.targets.tolist() == [5, 4]
    assert len(DermaMNISTJPEGDataset(root, split="all")) == 3
    with pytest.raises(ValueError, match="split must be"):
        DermaMNISTJPEGDataset(root, split="training")
    bad = _tiny_export(tmp_path / "bad", [(ids[0], "melanoma")], ids[:1])
    with pytest.raises(ValueError, match=r"line 2 .*unknown dx 'melanoma'"):
        DermaMNISTJPEGDataset(bad)
    missing = _tiny_export(
        tmp_path / "missing", [(ids[0], "nv"), (ids[1], "nv")], ids[:1]
    )
    with pytest.raises(
        ValueError, match=r"1 images listed .*DermaMNIST_train_00000.jpg"
    ):
        DermaMNISTJPEGDataset(missing)
    with pytest.raises(FileNotFoundError, match="dermamnist_jpg.zip"):
        DermaMNISTJPEGDataset(tmp_path)
    # a duplicated id put one image in twice, with both labels
    twice = _tiny_export(
        tmp_path / "twice", [(ids[0], "nv"), (ids[1], "mel"), (ids[0], "df")], ids
    )
    with pytest.raises(
        DataError,
        match=r"labels.csv line 4: image id 'DermaMNIST_train_00001' appears again "
        r"\(first on line 2\)",
    ):
        DermaMNISTJPEGDataset(twice)


def test_corrupt_member_is_replaced_with_a_warning_as_in_folders(
    tmp_path: Path,
) -> None:
    # before: a corrupt member of the zip stopped the run, while a corrupt file in a
    # folder was skipped with a warning
    ids = ["DermaMNIST_train_00000", "DermaMNIST_train_00001", "DermaMNIST_train_00002"]
    root = _tiny_export(tmp_path / "z", [(i, "nv") for i in ids], ids)
    good = zipfile.ZipFile(root / "dermamnist_jpg.zip").read(f"images/{ids[0]}.jpg")
    with zipfile.ZipFile(root / "dermamnist_jpg.zip", "w") as archive:
        archive.writestr(f"images/{ids[0]}.jpg", good)
        archive.writestr(f"images/{ids[1]}.jpg", good[: len(good) // 3])  # truncated
        archive.writestr(f"images/{ids[2]}.jpg", b"not a jpeg at all")
    dataset = DermaMNISTJPEGDataset(root)
    with pytest.warns(UserWarning, match=rf"{ids[1]}.jpg.*using the next readable"):
        image, _, member = dataset[1]
    assert member == f"images/{ids[0]}.jpg" and image.size == (28, 28)
    with pytest.raises(
        UnreadableImageError, match=rf"dermamnist_jpg.zip:images/{ids[2]}"
    ):
        DermaMNISTJPEGDataset(root, strict=True)[2]


def test_crc_error_in_the_zip_names_the_member(tmp_path: Path) -> None:
    ids = ["DermaMNIST_train_00000", "DermaMNIST_train_00001"]
    root = _tiny_export(tmp_path / "z", [(i, "nv") for i in ids], ids)
    path = root / "dermamnist_jpg.zip"
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"images/{ids[1]}.jpg")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + 100] ^= 0xFF  # flip a byte of the stored data: a CRC error
    path.write_bytes(bytes(data))
    with pytest.raises(UnreadableImageError, match=rf"{ids[1]}.jpg: BadZipFile"):
        DermaMNISTJPEGDataset(root, strict=True).load(1)
