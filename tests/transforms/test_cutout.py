from __future__ import annotations

import numpy as np
import pytest
import torch

from lightly_derm.transforms import Cutout


def reference_cutout(image: torch.Tensor, centres, length: int) -> torch.Tensor:
    """DeVries & Taylor's NumPy implementation, with given centres."""
    h, w = image.shape[-2:]
    mask = np.ones((h, w), np.float32)
    for y, x in centres:
        y1, y2 = np.clip(y - length // 2, 0, h), np.clip(y + length // 2, 0, h)
        x1, x2 = np.clip(x - length // 2, 0, w), np.clip(x + length // 2, 0, w)
        mask[y1:y2, x1:x2] = 0.0
    return image * torch.from_numpy(mask)


@pytest.mark.parametrize(
    "shape,holes,length",
    [((3, 32, 32), 3, 8), ((1, 17, 40), 5, 9), ((2, 3, 12, 7), 2, 30)],
)
def test_matches_reference(shape, holes, length) -> None:
    image = torch.rand(shape) + 0.5  # no zeros of its own
    for seed in range(5):
        torch.manual_seed(seed)
        got = Cutout(num_holes=holes, length=length)(image)
        torch.manual_seed(seed)  # the same centre draws, in the same order
        ys = torch.randint(shape[-2], (holes, 1)).flatten().tolist()
        xs = torch.randint(shape[-1], (holes, 1)).flatten().tolist()
        expected = reference_cutout(image, list(zip(ys, xs, strict=True)), length)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not torch.equal(got, image)


def test_value_and_disabled() -> None:
    image = torch.rand(3, 16, 16) + 1
    out = Cutout(num_holes=1, length=4, value=-2.0)(image)
    assert ((out == -2.0).all(dim=0).sum() > 0) and set(out[out < 0].tolist()) == {-2.0}
    assert Cutout(num_holes=0)(image) is image
    assert torch.equal(image, torch.rand(3, 16, 16) * 0 + image)  # input untouched


def test_errors() -> None:
    from PIL import Image

    with pytest.raises(TypeError, match="after ToTensor, got Image"):
        Cutout()(Image.new("RGB", (4, 4)))
    with pytest.raises(ValueError, match="num_holes and length must be >= 0"):
        Cutout(num_holes=-1)
