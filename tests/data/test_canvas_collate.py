from __future__ import annotations

import pytest
import torch
from PIL import Image

from lightly_derm.data import CanvasBatch, CanvasCollate
from lightly_derm.transforms.gpu import CanvasTransform


def test_collate() -> None:
    transform = CanvasTransform(view_size=32)
    samples = [
        (transform(Image.new("RGB", (60, 40), "red")), 3, "a.png"),
        (transform(Image.new("RGB", (40, 60), "blue")), 4, "b.png"),
    ]
    batch = CanvasCollate()(samples)
    assert isinstance(batch, CanvasBatch) and batch.batch_size == 2
    assert batch.images.shape == (2, 3, 49, 49) and batch.images.dtype == torch.uint8
    assert batch.sizes.tolist() == [[37, 49], [49, 37]]
    assert batch.targets.tolist() == [3, 4] and batch.filenames == ["a.png", "b.png"]
    assert batch.view_size == 32
    assert torch.equal(batch.images[0], samples[0][0].image)
    unlabelled = CanvasCollate()([(s[0], None) for s in samples])
    assert unlabelled.targets.tolist() == [-1, -1] and unlabelled.filenames == [
        None,
        None,
    ]


def test_errors() -> None:
    small, large = CanvasTransform(view_size=32), CanvasTransform(view_size=64)
    image = Image.new("RGB", (50, 50))
    with pytest.raises(ValueError, match="non-empty"):
        CanvasCollate()([])
    with pytest.raises(TypeError, match="CanvasImage"):
        CanvasCollate()([(torch.zeros(3, 8, 8), 0)])
    with pytest.raises(ValueError, match="one shape and view size"):
        CanvasCollate()([(small(image), 0), (large(image), 0)])
    with pytest.raises(TypeError, match="sample 0"):
        CanvasCollate()([small(image)])
