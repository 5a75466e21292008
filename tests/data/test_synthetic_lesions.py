from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from lightly_derm.data import SYNTHETIC_CLASSES, SyntheticLesions


def _pixels(dataset: SyntheticLesions) -> np.ndarray:
    return np.stack([np.asarray(dataset[i][0]) for i in range(len(dataset))])


def test_items_follow_the_dataset_contract() -> None:
    dataset = SyntheticLesions(num_images=7, image_size=48, num_classes=3, seed=1)
    assert len(dataset) == 7 and dataset.classes == list(SYNTHETIC_CLASSES[:3])
    for i in range(7):
        image, target, filename = dataset[i]
        assert image.mode == "RGB" and image.size == (48, 48)
        assert target == i % 3 == dataset.targets[i]
        assert filename == f"synthetic_{i:06d}.png" == dataset.get_filenames()[i]
    assert "synthetic" in repr(dataset)
    assert "synthetic" in (SyntheticLesions.__doc__ or "").lower()
    tensor, _, _ = SyntheticLesions(3, 32, transform=v2.PILToTensor())[0]
    assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.uint8


def test_deterministic_per_seed_split_and_index() -> None:
    a = SyntheticLesions(num_images=6, image_size=32, seed=3)
    b = pickle.loads(
        pickle.dumps(SyntheticLesions(num_images=6, image_size=32, seed=3))
    )
    pixels = _pixels(a)
    assert np.array_equal(pixels, _pixels(b))
    # the same index gives the same image whatever the order of access
    assert np.array_equal(np.asarray(a[4][0]), pixels[4])
    assert np.array_equal(np.asarray(a[-2][0]), pixels[4])
    for other in (
        SyntheticLesions(num_images=6, image_size=32, seed=4),
        SyntheticLesions(num_images=6, image_size=32, seed=3, split="val"),
    ):
        differ = [
            not np.array_equal(p, q)
            for p, q in zip(pixels, _pixels(other), strict=True)
        ]
        assert all(differ)
    assert len({p.tobytes() for p in pixels}) == 6


@pytest.mark.parametrize("size", [16, 40, 96])
def test_mask_is_binary_and_marks_the_lesion(size: int) -> None:
    dataset = SyntheticLesions(num_images=12, image_size=size, num_classes=5)
    fractions = []
    for i in range(len(dataset)):
        image, mask, label = dataset.sample(i)
        assert mask.shape == (size, size) and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 1}
        assert label == i % 5
        pixels = np.asarray(image, dtype=float)
        inside = pixels[mask == 1].mean(0)
        # outside, but inside the dermoscope's field of view (not the dark corners)
        yy, xx = np.mgrid[:size, :size]
        centre = (size - 1) / 2
        field = (yy - centre) ** 2 + (xx - centre) ** 2 < (0.9 * centre) ** 2
        outside = pixels[(mask == 0) & field].mean(0)
        assert np.abs(inside - outside).sum() > 20  # the lesion differs from the skin
        fractions.append(mask.mean())
    assert 0.08 < np.median(fractions) < 0.5


@pytest.mark.slow
def test_classes_learnable_but_not_trivially() -> None:
    """A nearest-class-mean classifier on 8×8 thumbnails: above chance at the default
    separation but far from perfect, at chance with class_separation=0, better at 2."""

    def accuracy(separation: float) -> float:
        def features(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
            data = SyntheticLesions(
                n, 32, num_classes=3, split=split, class_separation=separation
            )
            x = np.stack(
                [np.asarray(data[i][0].resize((8, 8))).ravel() / 255 for i in range(n)]
            )
            return x, data.targets

        x_train, y_train = features("train", 240)
        x_test, y_test = features("test", 150)
        means = np.stack([x_train[y_train == c].mean(0) for c in range(3)])
        distances = ((x_test[:, None, :] - means[None]) ** 2).sum(-1)
        return float((distances.argmin(1) == y_test).mean())

    default = accuracy(1.0)  # chance is 1/3
    assert 0.45 < default < 0.95
    assert accuracy(0.0) < 0.42
    assert accuracy(2.0) > default


def test_return_mask_moves_mask_with_image() -> None:
    flip = v2.RandomHorizontalFlip(p=1.0)
    dataset = SyntheticLesions(
        num_images=4, image_size=32, return_mask=True, transform=flip
    )
    item = dataset[2]
    image, mask, label = dataset.sample(2)
    assert set(item) == {"image", "mask", "target", "filename"}
    assert item["target"] == label and item["filename"] == "synthetic_000002.png"
    expected_image = torch.from_numpy(np.array(image)).permute(2, 0, 1).flip(-1)
    assert torch.equal(item["image"], expected_image)
    assert item["mask"].shape == (1, 32, 32)
    assert torch.equal(item["mask"][0], torch.from_numpy(mask).flip(-1))


def test_monai_dictionary_transforms() -> None:
    monai = pytest.importorskip("monai.transforms")
    transform = monai.Compose(
        [
            monai.RandFlipd(keys=["image", "mask"], prob=1.0, spatial_axis=0),
            monai.ScaleIntensityd(keys="image"),
        ]
    )
    item = SyntheticLesions(4, 32, return_mask=True, transform=transform)[1]
    _, mask, _ = SyntheticLesions(4, 32).sample(1)
    assert item["image"].dtype == torch.float32 and float(item["image"].max()) == 1.0
    assert torch.equal(torch.as_tensor(item["mask"][0]), torch.from_numpy(mask).flip(0))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_images": 0}, "num_images"),
        ({"image_size": 8}, "image_size"),
        ({"num_classes": 6}, "at most 5"),
        ({"num_classes": 0}, "num_classes"),
        ({"split": "validation"}, "split"),
        ({"seed": -1}, "seed"),
        ({"class_separation": -1.0}, "class_separation"),
    ],
)
def test_bad_arguments(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SyntheticLesions(**kwargs)


def test_index_errors() -> None:
    dataset = SyntheticLesions(num_images=3, image_size=16)
    with pytest.raises(IndexError, match="3 synthetic"):
        dataset[3]
    with pytest.raises(TypeError, match="transform"):
        SyntheticLesions(transform=3)
