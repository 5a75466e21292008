from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightly_derm.data import find_isic_pairs, split_pairs, subsample_pairs


def _write_pair(
    image_dir: Path,
    mask_dir: Path,
    isic_id: str,
    size=(12, 8),
    mask_size=None,
    suffix="_segmentation.png",
    image_ext=".jpg",
) -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 120, 90)).save(image_dir / f"{isic_id}{image_ext}")
    mask = np.zeros((mask_size or size)[::-1], dtype=np.uint8)
    mask[2:5, 3:7] = 255
    Image.fromarray(mask, "L").save(mask_dir / f"{isic_id}{suffix}")


def test_images_and_masks_folders(tmp_path) -> None:
    for i in (2, 0, 1):
        _write_pair(tmp_path / "images", tmp_path / "masks", f"ISIC_000000{i}")
    (tmp_path / "images" / "ISIC_0000000_superpixels.png").write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("image_id\n")
    pairs = find_isic_pairs(tmp_path)
    assert [p["id"] for p in pairs] == ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"]
    assert pairs[0] == {
        "image": str(tmp_path / "images" / "ISIC_0000000.jpg"),
        "label": str(tmp_path / "masks" / "ISIC_0000000_segmentation.png"),
        "id": "ISIC_0000000",
    }
    assert [p["id"] for p in find_isic_pairs(tmp_path, ids=["ISIC_0000002"])] == [
        "ISIC_0000002"
    ]


def test_flat_folder_capital_suffix_and_png_images(tmp_path) -> None:
    _write_pair(tmp_path, tmp_path, "ISIC_0012345", suffix="_Segmentation.png")
    _write_pair(tmp_path, tmp_path, "ISIC_0012346", image_ext=".png")
    pairs = find_isic_pairs(tmp_path)
    assert [Path(p["label"]).name for p in pairs] == [
        "ISIC_0012345_Segmentation.png",
        "ISIC_0012346_segmentation.png",
    ]
    assert Path(pairs[1]["image"]).name == "ISIC_0012346.png"


def test_official_folder_names_and_explicit_dirs(tmp_path) -> None:
    images = tmp_path / "ISIC-2017_Training_Data"
    masks = tmp_path / "ISIC-2017_Training_Part1_GroundTruth"
    _write_pair(images, masks, "ISIC_0000007")
    assert find_isic_pairs(tmp_path)[0]["label"].endswith(
        "ISIC_0000007_segmentation.png"
    )
    assert len(find_isic_pairs(image_dir=images, mask_dir=masks)) == 1


def test_missing_mask_names_the_image(tmp_path) -> None:
    _write_pair(tmp_path / "images", tmp_path / "masks", "ISIC_0000000")
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "ISIC_0000009.jpg")
    with pytest.raises(
        FileNotFoundError, match=r"1 ISIC images have no mask .*ISIC_0000009\.jpg"
    ):
        find_isic_pairs(tmp_path)


def test_size_mismatch_names_both_files(tmp_path) -> None:
    _write_pair(
        tmp_path / "images", tmp_path / "masks", "ISIC_0000003", mask_size=(12, 9)
    )
    with pytest.raises(
        ValueError,
        match=r"ISIC_0000003\.jpg is 12×8 but .*ISIC_0000003_segmentation\.png is 12×9",
    ):
        find_isic_pairs(tmp_path)
    assert len(find_isic_pairs(tmp_path, check_sizes=False)) == 1


def test_bad_folders_and_ids(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_isic_pairs(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no ISIC images"):
        find_isic_pairs(tmp_path)
    _write_pair(tmp_path, tmp_path, "ISIC_0000000")
    with pytest.raises(FileNotFoundError, match="ISIC_0000042"):
        find_isic_pairs(tmp_path, ids=["ISIC_0000042"])
    with pytest.raises(ValueError, match="root or image_dir"):
        find_isic_pairs()


def test_shared_subset(isic_dir) -> None:
    pairs = find_isic_pairs(isic_dir)
    assert len(pairs) == 290
    assert all(Path(p["label"]).name == f"{p['id']}_segmentation.png" for p in pairs)


PAIRS = [{"image": f"{i}.jpg", "label": f"{i}.png", "id": str(i)} for i in range(50)]


def test_split_pairs() -> None:
    train, val = split_pairs(PAIRS, 0.2, seed=1)
    assert len(train) == 40 and len(val) == 10
    assert {p["id"] for p in train}.isdisjoint(p["id"] for p in val)
    assert split_pairs(PAIRS, 0.2, seed=1) == (train, val)
    assert split_pairs(PAIRS, 0.2, seed=2)[1] != val
    assert split_pairs(PAIRS[:2], 0.01)[1] != []  # at least one validation pair
    assert split_pairs(PAIRS, 0.0)[1] == []
    with pytest.raises(ValueError, match="val_fraction"):
        split_pairs(PAIRS, 1.0)


def test_subsample_pairs_is_nested_and_seeded() -> None:
    small, medium = (
        subsample_pairs(PAIRS, 0.1, seed=3),
        subsample_pairs(PAIRS, 0.5, seed=3),
    )
    assert len(small) == 5 and len(medium) == 25
    assert {p["id"] for p in small} <= {p["id"] for p in medium}
    assert small == subsample_pairs(PAIRS, 0.1, seed=3)
    assert small != subsample_pairs(PAIRS, 0.1, seed=4)
    assert len(subsample_pairs(PAIRS, 0.001)) == 1
    assert subsample_pairs(PAIRS, 1.0) == PAIRS
    with pytest.raises(ValueError, match=r"label fraction must be in \(0, 1\], got 0"):
        subsample_pairs(PAIRS, 0)
    with pytest.raises(TypeError, match="list of"):
        subsample_pairs(["a.jpg"], 0.5)
