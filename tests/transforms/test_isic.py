from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from lightly.transforms.utils import IMAGENET_NORMALIZE
from PIL import Image

from lightly_derm.data import UnreadableImageError, find_isic_pairs, load_image
from lightly_derm.transforms import BinaryLesionMaskd, isic_segmentation_transforms
from tests.data.images import truncate


def _pair(
    tmp_path: Path, mask: np.ndarray, image: np.ndarray | None = None, mode="L"
) -> dict:
    h, w = mask.shape[:2]
    if image is None:
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "ISIC_0000001.png")
    Image.fromarray(mask).convert(mode).save(tmp_path / "ISIC_0000001_segmentation.png")
    return {
        "image": str(tmp_path / "ISIC_0000001.png"),
        "label": str(tmp_path / "ISIC_0000001_segmentation.png"),
        "id": "ISIC_0000001",
    }


def _lesion(h: int = 24, w: int = 40) -> np.ndarray:
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[3:10, 5:30] = 255  # wide and off-centre: a transpose or flip shows
    return mask


def test_orientation_matches_torchvision(tmp_path) -> None:
    """(C, H, W) exactly as torchvision's to_tensor, not MONAI's default (C, W, H)."""
    mask = _lesion()
    pair = _pair(tmp_path, mask)
    out = isic_segmentation_transforms((24, 40), train=False, normalize=None)(pair)
    with Image.open(pair["image"]) as image:
        expected = TF.to_tensor(image)
    assert out["image"].shape == expected.shape == (3, 24, 40)
    torch.testing.assert_close(out["image"], expected, atol=1e-6, rtol=0)
    assert torch.equal(out["label"][0], torch.from_numpy(mask > 0).float())
    assert out["id"] == "ISIC_0000001"


def test_real_isic_pair_orientation_and_normalisation(isic_dir) -> None:
    pair = find_isic_pairs(isic_dir, ids=["ISIC_0000000"])[0]
    with Image.open(pair["image"]) as image:
        width, height = image.size
        expected = TF.normalize(TF.to_tensor(image), **IMAGENET_NORMALIZE)
    with Image.open(pair["label"]) as mask:
        expected_mask = torch.from_numpy(np.asarray(mask) > 127).float()
    assert width != height
    out = isic_segmentation_transforms((height, width), train=False)(pair)
    torch.testing.assert_close(out["image"], expected, atol=1e-5, rtol=0)
    assert torch.equal(out["label"][0], expected_mask)


def test_resized_types_and_binary_masks(isic_dir) -> None:
    pairs = find_isic_pairs(isic_dir)[:2]
    for train in (False, True):
        transform = isic_segmentation_transforms(64, train=train)
        for pair in pairs:
            out = transform(pair)
            assert (
                type(out["image"]) is torch.Tensor
                and type(out["label"]) is torch.Tensor
            )
            assert (
                out["image"].shape == (3, 64, 64)
                and out["image"].dtype == torch.float32
            )
            assert out["label"].shape == (1, 64, 64)
            assert set(out["label"].unique().tolist()) <= {0.0, 1.0}


def test_augmentation_moves_image_and_mask_together(tmp_path) -> None:
    """The image is the mask (white lesion on black): after random flips, rotations and
    affine warps, the bright pixels must still be the lesion pixels."""
    mask = np.zeros((48, 48), dtype=np.uint8)
    mask[6:20, 10:40] = 255
    mask[20:34, 10:18] = 255  # an L shape: no symmetry hides a mismatch
    pair = _pair(tmp_path, mask, image=np.repeat(mask[..., None], 3, axis=2))
    transform = isic_segmentation_transforms(
        48, train=True, normalize=None, intensity=0
    )
    transform.set_random_state(seed=0)
    changed = 0
    for _ in range(12):
        out = transform(pair)
        bright = out["image"][0] > 0.5
        lesion = out["label"][0] > 0.5
        assert (bright != lesion).float().mean() < 0.02
        changed += not torch.equal(lesion, torch.from_numpy(mask > 0))
    assert changed >= 6  # the augmentations did something


def test_seeded_augmentation_repeats(isic_dir) -> None:
    pair = find_isic_pairs(isic_dir)[0]
    outs = []
    for _ in range(2):
        transform = isic_segmentation_transforms(32, train=True)
        transform.set_random_state(seed=5)
        outs.append([transform(pair)["image"] for _ in range(3)])
    for a, b in zip(*outs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "values,mode", [((0, 1), "L"), ((0, 255), "1"), ((0, 255), "RGB")]
)
def test_binary_mask_encodings(tmp_path, values, mode) -> None:
    mask = np.where(_lesion() > 0, values[1], values[0]).astype(np.uint8)
    pair = _pair(tmp_path, mask, mode=mode)
    with Image.open(pair["label"]) as saved:
        assert saved.mode == mode
    out = isic_segmentation_transforms((24, 40), train=False)(pair)
    assert torch.equal(out["label"][0], torch.from_numpy(_lesion() > 0).float())


def test_non_binary_mask_is_an_error_or_thresholded(tmp_path) -> None:
    soft = _lesion().astype(np.uint8)
    soft[3:10, 5] = 128  # an anti-aliased edge
    pair = _pair(tmp_path, soft)
    with pytest.raises(
        ValueError,
        match=r"ISIC_0000001_segmentation\.png is not binary: it has 3 values \(0, 128, 255\)",
    ):
        isic_segmentation_transforms(16, train=False)(pair)
    out = isic_segmentation_transforms((24, 40), train=False, mask_threshold=0.6)(pair)
    expected = torch.from_numpy(_lesion() > 0).float()
    expected[3:10, 5] = 0  # 128/255 < 0.6
    assert torch.equal(out["label"][0], expected)
    with pytest.raises(ValueError, match="mask threshold"):
        BinaryLesionMaskd(threshold=1.5)


def test_size_mismatch_names_both_files(tmp_path) -> None:
    pair = _pair(tmp_path, _lesion(24, 40))
    Image.fromarray(_lesion(24, 41)).save(pair["label"])
    with pytest.raises(
        ValueError,
        match=r"ISIC_0000001_segmentation\.png is \(24, 41\) .* image .*ISIC_0000001\.png is \(24, 40\)",
    ):
        isic_segmentation_transforms(16, train=False)(pair)


def test_bad_image_size() -> None:
    with pytest.raises(ValueError, match="image_size"):
        isic_segmentation_transforms((1, 2, 3))


def test_fast_jpeg_decoding_is_close_and_checks_file_sizes(isic_dir, tmp_path) -> None:
    pair = find_isic_pairs(isic_dir, ids=["ISIC_0000000"])[0]  # a 1022x767 JPEG
    fast = isic_segmentation_transforms(64, train=False)(pair)
    exact = isic_segmentation_transforms(64, train=False, fast_jpeg=False)(pair)
    assert torch.equal(fast["label"], exact["label"])
    difference = (fast["image"] - exact["image"]).abs().mean().item()
    assert 0 < difference < 0.05  # normalised units: the same picture, decoded smaller
    # the mask is compared with the image's size in the file, not the decoded one
    with Image.open(pair["label"]) as mask:
        mask.crop((0, 0, 1021, 767)).save(tmp_path / "ISIC_0000000_segmentation.png")
    bad = {**pair, "label": str(tmp_path / "ISIC_0000000_segmentation.png")}
    with pytest.raises(
        ValueError, match=r"is \(767, 1021\) \(H, W\) but image .* is \(767, 1022\)"
    ):
        isic_segmentation_transforms(64, train=False)(bad)


def test_16bit_images_read_as_the_package_reads_them(tmp_path) -> None:
    # before: the MONAI path converted with Pillow's convert("RGB"): all white
    mask = _lesion()
    pair = _pair(tmp_path, mask)
    rng = np.random.default_rng(1)
    gray16 = rng.integers(0, 65536, mask.shape, dtype=np.uint16)
    Image.fromarray(gray16).save(pair["image"])
    out = isic_segmentation_transforms((24, 40), train=False, normalize=None)(pair)
    expected = TF.to_tensor(load_image(pair["image"]))
    torch.testing.assert_close(out["image"], expected, atol=1e-6, rtol=0)
    assert out["image"].mean() < 0.6 and out["image"].std() > 0.2  # not all white


@pytest.mark.parametrize("which", ["image", "label"])
@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_broken_files_are_one_error_naming_the_file(tmp_path, which, damage) -> None:
    # before: "Truncated File Read" or MONAI's "cannot find a suitable reader" with
    # tracebacks in the message, naming no file
    pair = _pair(tmp_path, _lesion(240, 400))
    path = Path(pair[which])
    if damage == "empty":
        path.write_bytes(b"")
    else:
        truncate(path, 0.3)
    with pytest.raises(UnreadableImageError) as info:
        isic_segmentation_transforms((24, 40), train=False)(pair)
    message = str(info.value)
    assert message.startswith(f"cannot read image {path}: ") and "\n" not in message


def test_pixel_limit_in_the_monai_path(tmp_path, monkeypatch) -> None:
    pair = _pair(tmp_path, _lesion())
    monkeypatch.setenv("LIGHTLY_DERM_MAX_IMAGE_PIXELS", "500")
    with pytest.raises(UnreadableImageError, match=r"40x24 = 960 pixels is more than"):
        isic_segmentation_transforms((24, 40), train=False)(pair)


def test_the_old_import_path_warns_and_forwards() -> None:
    import lightly_derm.data as data
    import lightly_derm.data.isic_transforms as old
    from lightly_derm.transforms import isic

    for name in ("BinaryLesionMaskd", "isic_segmentation_transforms"):
        with pytest.warns(FutureWarning, match="moved to lightly_derm.transforms.isic"):
            assert getattr(old, name) is getattr(isic, name)
        assert getattr(data, name) is getattr(isic, name)  # still exported, silently
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        old.nothing  # noqa: B018


def _run(code: str) -> str:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_importing_transforms_imports_neither_data_nor_monai() -> None:
    code = (
        "import sys, lightly_derm.transforms; "
        "print(sorted(set(sys.modules) & {'lightly_derm.data', 'monai'}))"
    )
    assert _run(code) == "[]"


@pytest.mark.parametrize(
    "order", [("transforms.isic", "data"), ("data", "transforms.isic")]
)
def test_the_isic_pipeline_and_data_import_in_either_order(order) -> None:
    first, second = order
    code = (
        f"import lightly_derm.{first}, lightly_derm.{second}; "
        "from lightly_derm.data import isic_segmentation_transforms as a; "
        "from lightly_derm.transforms import isic_segmentation_transforms as b; "
        "print(a is b)"
    )
    assert _run(code) == "True"
