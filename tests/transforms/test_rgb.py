from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lightly_derm.transforms import RGBInput, to_rgb


def test_to_rgb_against_pil_and_channel_repeat() -> None:
    gray = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4), "L")
    rgb = to_rgb(gray)
    assert rgb.mode == "RGB" and np.array_equal(
        np.asarray(rgb), np.repeat(np.asarray(gray)[..., None], 3, axis=2)
    )
    same = Image.new("RGB", (3, 3))
    assert to_rgb(same) is same
    t = torch.rand(1, 5, 6)
    assert torch.equal(to_rgb(t), t.repeat(3, 1, 1))
    assert torch.equal(to_rgb(t[0]), t.repeat(3, 1, 1))
    array = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    assert torch.equal(to_rgb(array), torch.from_numpy(array).permute(2, 0, 1))


def test_rgb_input_wraps_lightly_transforms() -> None:
    from lightly.transforms import SimCLRTransform

    transform = RGBInput(SimCLRTransform(input_size=16))
    for image in (Image.new("L", (20, 20)), Image.new("RGBA", (20, 20))):
        views = transform(image)
        assert len(views) == 2 and views[0].shape == (3, 16, 16)
    with pytest.raises(ValueError, match=r"got shape \(2, 4, 4\)"):
        transform(torch.rand(2, 4, 4))
    with pytest.raises(
        ValueError, match=r"\(H, W\) or \(H, W, C\), got shape \(1, 2, 3, 4\)"
    ):
        to_rgb(np.zeros((1, 2, 3, 4)))
