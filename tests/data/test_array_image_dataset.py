"""ArrayImageDataset: the items of the in-memory array datasets (MedMNIST)."""

from __future__ import annotations

import numpy as np
import pytest

from lightly_derm.data.array_image_dataset import ArrayImageDataset


class Arrays(ArrayImageDataset):
    def __init__(self, images: np.ndarray, transform=None) -> None:
        self.images = images
        self.targets = np.arange(len(images)) % 2
        self.classes = ["a", "b"]
        self.transform = transform
        self._prefix = "x_"


@pytest.mark.parametrize("shape", [(3, 5, 4), (3, 5, 4, 3)])
def test_items_are_rgb_images_of_the_array(shape) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    data = Arrays(images)
    assert len(data) == 3 and data.num_classes == 2
    assert data.get_filenames() == ["x_00000", "x_00001", "x_00002"]
    for i in range(-3, 3):
        image, target, name = data[i]
        j = i % 3
        expected = (
            images[j] if images.ndim == 4 else np.repeat(images[j, ..., None], 3, 2)
        )
        assert image.mode == "RGB" and np.array_equal(np.asarray(image), expected)
        assert target == j % 2 and name == f"x_{j:05d}"
    assert Arrays(images, transform=lambda im: im.size)[0][0] == (4, 5)
    with pytest.raises(IndexError, match="index 3 is out of range for 3 images"):
        data[3]
