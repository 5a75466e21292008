from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightly_derm.data import (
    ImageFolderDataset,
    UnreadableImageError,
    find_image_files,
    scan_image_files,
)
from tests.data.images import save_rgb, truncate


def _layout(root: Path, names: list[str]) -> dict[str, np.ndarray]:
    return {name: save_rgb(root / name, seed=i) for i, name in enumerate(names)}


def test_recursive_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    arrays = _layout(tmp_path, ["b.jpg", "a.png", "sub/deeper/c.PNG", "sub/d.bmp"])
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden").mkdir()
    save_rgb(tmp_path / ".hidden" / "e.png")
    dataset = ImageFolderDataset(tmp_path)
    assert dataset.filenames == sorted(
        ["a.png", "b.jpg", "sub/d.bmp", "sub/deeper/c.PNG"]
    )
    assert dataset.classes == [] and dataset.targets.tolist() == [-1] * 4
    for i, name in enumerate(dataset.filenames):
        image, target, filename = dataset[i]
        assert filename == name and target == -1 and image.mode == "RGB"
        if not name.endswith(".jpg"):  # lossless formats read back exactly
            assert np.array_equal(np.asarray(image), arrays[name])


def test_class_folders_detected_and_forced(tmp_path: Path) -> None:
    _layout(tmp_path, ["nevus/a.jpg", "nevus/b.jpg", "melanoma/c.jpg", "bkl/d.png"])
    dataset = ImageFolderDataset(tmp_path)
    assert dataset.classes == ["bkl", "melanoma", "nevus"]
    expected = {"bkl/d.png": 0, "melanoma/c.jpg": 1, "nevus/a.jpg": 2, "nevus/b.jpg": 2}
    assert (
        dict(zip(dataset.filenames, dataset.targets.tolist(), strict=True)) == expected
    )
    assert (
        ImageFolderDataset(tmp_path, class_folders=False).targets.tolist() == [-1] * 4
    )


def test_one_subfolder_or_mixed_depth_is_not_class_layout(tmp_path: Path) -> None:
    _layout(tmp_path / "one", ["images/a.jpg", "images/b.jpg"])
    assert ImageFolderDataset(tmp_path / "one").classes == []
    _layout(tmp_path / "mixed", ["x/a.jpg", "y/b.jpg", "top.jpg"])
    assert ImageFolderDataset(tmp_path / "mixed").classes == []
    with pytest.raises(ValueError, match="outside class folders.*top.jpg"):
        ImageFolderDataset(tmp_path / "mixed", class_folders=True)


def test_isic_masks_and_superpixels_are_excluded(tmp_path: Path) -> None:
    _layout(
        tmp_path,
        [
            "images/ISIC_0000000.jpg",
            "images/ISIC_0000000_superpixels.png",
            "masks/ISIC_0000000_segmentation.png",
            "masks/ISIC_0000001_Segmentation.png",
        ],
    )
    assert ImageFolderDataset(tmp_path).filenames == ["images/ISIC_0000000.jpg"]
    assert len(find_image_files(tmp_path, exclude=())) == 4


def test_labels_csv_and_unlisted_images(tmp_path: Path) -> None:
    _layout(tmp_path, ["ISIC_1.jpg", "ISIC_2.jpg", "sub/ISIC_3.jpg", "extra.jpg"])
    csv = tmp_path / "gt.csv"
    csv.write_text(
        "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
        "ISIC_1,0,1,0,0,0,0,0\nISIC_2.jpg,1,0,0,0,0,0,0\nISIC_3,0,0,0,0,0,0,1\n"
    )
    with pytest.warns(
        UserWarning, match=r"1 of 4 images .* not in .*gt.csv: extra.jpg"
    ):
        dataset = ImageFolderDataset(tmp_path, labels=csv)
    assert dataset.classes[:2] == ["MEL", "NV"]
    got = dict(zip(dataset.filenames, dataset.targets.tolist(), strict=True))
    assert got == {
        "ISIC_1.jpg": 1,
        "ISIC_2.jpg": 0,
        "sub/ISIC_3.jpg": 6,
        "extra.jpg": -1,
    }
    with pytest.raises(ValueError, match="extra.jpg"):
        ImageFolderDataset(tmp_path, labels=csv, strict=True)


def test_broken_images_one_warning_and_strict(tmp_path: Path) -> None:
    _layout(tmp_path, [f"img_{i}.jpg" for i in range(8)])
    for i in (1, 4, 6):
        truncate(tmp_path / f"img_{i}.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = ImageFolderDataset(tmp_path)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "skipped 5 unreadable image(s) of 10" in messages[0]
    for name in ("empty.png", "img_1.jpg", "img_4.jpg", "img_6.jpg", "text.jpg"):
        assert name in messages[0]
    assert len(dataset) == 5 and len(dataset.skipped) == 5
    assert all(dataset[i][0].size == (32, 24) for i in range(len(dataset)))
    with pytest.raises(UnreadableImageError, match="empty.png"):
        ImageFolderDataset(tmp_path, strict=True)


def test_warning_names_only_the_first_few(tmp_path: Path) -> None:
    save_rgb(tmp_path / "good.png")
    for i in range(12):
        (tmp_path / f"bad_{i:02d}.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.warns(UserWarning, match=r"skipped 12 .*bad_04.jpg.* and 7 more"):
        ImageFolderDataset(tmp_path)


def test_load_time_failure_substitutes_with_warning(tmp_path: Path) -> None:
    _layout(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    truncate(tmp_path / "b.jpg")
    dataset = ImageFolderDataset(tmp_path, check="none")
    assert len(dataset) == 3
    with pytest.warns(UserWarning, match="b.jpg.*next readable image"):
        _, _, filename = dataset[1]
    assert filename == "c.jpg"
    strict = ImageFolderDataset(tmp_path, check="none", strict=True)
    with pytest.raises(UnreadableImageError, match="b.jpg"):
        strict[1]


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(
        ValueError, match=r"no images found in .*empty.*\.jpg, \.jpeg, \.png"
    ):
        ImageFolderDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolderDataset(tmp_path / "nowhere")
    (tmp_path / "only_broken").mkdir()
    (tmp_path / "only_broken" / "x.jpg").write_text("x")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 1"):
        ImageFolderDataset(tmp_path / "only_broken")


def test_transform_decode_size_and_bad_arguments(tmp_path: Path) -> None:
    Image.new("RGB", (1000, 800), "sienna").save(tmp_path / "big.jpg")
    dataset = ImageFolderDataset(tmp_path, decode_size=100, transform=np.asarray)
    array, target, _ = dataset[0]
    assert array.shape == (100, 125, 3) and target == -1  # JPEG decoded at 1/8
    with pytest.raises(ValueError, match="check"):
        ImageFolderDataset(tmp_path, check="quick")
    with pytest.raises(ValueError, match="decode_size"):
        ImageFolderDataset(tmp_path, decode_size=-1)
    with pytest.raises(TypeError, match="transform"):
        ImageFolderDataset(tmp_path, transform="resize")
    with pytest.raises(IndexError):
        dataset[5]


def test_pickles_and_works_in_dataloader_workers(tmp_path: Path) -> None:
    _layout(tmp_path, ["x/a.png", "x/b.png", "y/c.png", "y/d.png"])
    dataset = ImageFolderDataset(
        tmp_path, transform=lambda im: torch.from_numpy(np.asarray(im).copy())
    )
    clone = pickle.loads(pickle.dumps(ImageFolderDataset(tmp_path)))
    assert clone.filenames == dataset.filenames
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)
    batches = list(loader)
    assert [t for b in batches for t in b[1].tolist()] == [0, 0, 1, 1]
    assert [f for b in batches for f in b[2]] == dataset.filenames
    assert torch.equal(batches[0][0][0], dataset[0][0])


def test_link_loops_are_not_walked_and_each_file_counts_once(tmp_path: Path) -> None:
    # two `x -> .` links made os.walk(followlinks=True) walk 2**depth paths, and one
    # turned 3 images into 123 entries (the same image in train and test)
    _layout(tmp_path, ["a.jpg", "b.jpg", "sub/c.jpg"])
    (tmp_path / "x").symlink_to(".")
    (tmp_path / "y").symlink_to(".")
    (tmp_path / "sub" / "up").symlink_to("..")
    scan = scan_image_files(tmp_path)
    assert scan.files == ["a.jpg", "b.jpg", "sub/c.jpg"]
    assert scan.skipped_links == ["sub/up", "x", "y"]
    with pytest.warns(UserWarning, match=r"skipped 3 symbolic link\(s\)"):
        dataset = ImageFolderDataset(tmp_path)
    assert len(dataset) == 3
    assert dataset.skipped_links == ["sub/up", "x", "y"]


def test_links_to_other_places_are_followed_once(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _layout(outside, ["o1.png", "deep/o2.png"])
    root = tmp_path / "root"
    _layout(root, ["real/r.jpg"])
    (root / "a_alias").symlink_to("real")  # sorts before the real folder
    (root / "ext").symlink_to(outside)
    (root / "ext2").symlink_to(outside / "deep")  # inside a folder already linked
    (root / "r_link.jpg").symlink_to(root / "real" / "r.jpg")
    (root / "o_link.png").symlink_to(outside / "o1.png")
    (outside / "back").symlink_to(root)  # a loop through two links
    scan = scan_image_files(root)
    # the real name wins over the name through a link, whatever the sort order
    assert scan.files == ["ext/deep/o2.png", "ext/o1.png", "real/r.jpg"]
    assert scan.skipped_links == [
        "a_alias",
        "ext/back",
        "ext2",
        "o_link.png",
        "r_link.jpg",
    ]
    assert find_image_files(root) == scan.files
