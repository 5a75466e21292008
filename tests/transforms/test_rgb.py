from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lightly_derm.transforms import RGBInput, to_rgb, to_rgb8


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


def test_pil_modes_convert_as_the_datasets_read_files() -> None:
    """16-bit values are scaled (not clipped at 255), alpha is dropped, CMYK converted."""
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    rgb = to_rgb(Image.fromarray(values))
    assert np.array_equal(np.asarray(rgb)[..., 0], [[0, 1, 128, 255]])
    for mode in ("I", "F", "RGBA", "LA", "CMYK", "P", "1"):
        image = Image.new("RGB", (4, 3), (200, 90, 30)).convert(mode)
        assert np.array_equal(np.asarray(to_rgb(image)), np.asarray(to_rgb8(image)))


def test_values_that_would_give_wrong_pixels_are_refused() -> None:
    with pytest.raises(ValueError, match=r"values in \[0, 1\], got \[0, 255\]"):
        to_rgb(torch.linspace(0, 255, 48).reshape(3, 4, 4))
    with pytest.raises(ValueError, match="values in"):
        to_rgb(torch.full((3, 4, 4), -2.1))  # an ImageNet-normalised image
    nan = torch.rand(3, 4, 4)
    nan[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        to_rgb(nan)
    with pytest.raises(ValueError, match=r"empty: shape \(3, 0, 4\)"):
        to_rgb(torch.rand(3, 0, 4))
    with pytest.raises(ValueError, match="empty: size 0x0"):
        to_rgb(Image.new("RGB", (0, 0)))
    # Overshoots of resampling are left to the transforms (which clamp).
    assert to_rgb(torch.full((3, 2, 2), 1.2)).shape == (3, 2, 2)
    assert to_rgb(torch.full((1, 2, 2), 255, dtype=torch.uint8)).shape == (3, 2, 2)


def test_transforms_do_not_import_the_data_package() -> None:
    """One direction only: data imports the colour conversion from transforms."""
    import subprocess
    import sys

    code = (
        "import sys, lightly_derm.transforms, lightly_derm.transforms.gpu; "
        "print('lightly_derm.data' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
    from lightly_derm.data.image_io import to_rgb8 as from_data

    assert from_data is to_rgb8  # still importable where it was
