from __future__ import annotations

import numpy as np
import pytest
import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE
from PIL import Image

from lightly_derm.transforms import (
    FGSSLTransform,
    FGSSLView1Transform,
    FGSSLView2Transform,
)


def tiles(image: torch.Tensor, grid: int) -> list[torch.Tensor]:
    c, h, w = image.shape
    th, tw = h // grid, w // grid
    return [
        image[:, r * th : (r + 1) * th, q * tw : (q + 1) * tw]
        for r in range(grid)
        for q in range(grid)
    ]


@pytest.fixture
def rgb() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), "RGB")


def test_views_for_pil_grayscale_and_tensor_inputs(rgb) -> None:
    transform = FGSSLTransform(input_size=32, grids=(8, 4, 2))
    for image in (rgb, rgb.convert("L"), torch.rand(3, 50, 70), torch.rand(1, 40, 40)):
        views = transform(image)
        assert len(views) == 2
        assert all(v.shape == (3, 32, 32) and v.dtype == torch.float32 for v in views)


def test_cpu_jigsaws_are_tile_permutations_of_view_a(rgb) -> None:
    torch.manual_seed(0)
    views = FGSSLTransform(input_size=32, grids=(8, 4, 2), cpu_jigsaw=True)(rgb)
    assert len(views) == 5
    a = views[0]
    for view, grid in zip(views[2:], (8, 4, 2), strict=True):
        source = tiles(a, grid)
        used = []
        for tile in tiles(view, grid):
            matches = [i for i, s in enumerate(source) if torch.equal(s, tile)]
            assert matches, "a jigsaw tile that is no tile of view a"
            used.append(matches[0])
        assert sorted(used) == list(range(grid * grid))  # each tile of a exactly once


def test_view_pipelines(rgb) -> None:
    """With every random step switched off, a view is Resize((s, s)) + ToTensor + Normalize."""
    plain = FGSSLView1Transform(
        input_size=32, hf_prob=0, random_gray_scale=0, gaussian_blur=0, normalize=None
    )
    expected = torch.from_numpy(
        np.asarray(rgb.resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255
    ).permute(2, 0, 1)
    torch.testing.assert_close(plain(rgb), expected, atol=2 / 255, rtol=0)
    normalised = FGSSLView2Transform(
        input_size=32, random_gray_scale=0, gaussian_blur=0, solarization_prob=0
    )(rgb)
    mean = torch.tensor(IMAGENET_NORMALIZE["mean"]).view(3, 1, 1)
    std = torch.tensor(IMAGENET_NORMALIZE["std"]).view(3, 1, 1)
    torch.testing.assert_close(
        normalised, (expected - mean) / std, atol=2 / 255 / 0.22, rtol=0
    )
    # solarisation always on inverts the bright pixels (threshold 128)
    solar = FGSSLView2Transform(
        input_size=32,
        random_gray_scale=0,
        gaussian_blur=0,
        solarization_prob=1,
        normalize=None,
    )(rgb)
    bright = expected >= 128 / 255
    torch.testing.assert_close(
        solar[bright], 1 - expected[bright], atol=2 / 255, rtol=0
    )


def test_input_size_must_fit_the_grids() -> None:
    with pytest.raises(
        ValueError, match=r"input_size 100 is not divisible by grid\(s\) \[16, 8\]"
    ):
        FGSSLTransform(input_size=100, grids=(16, 8, 4))
    with pytest.raises(TypeError, match="input_size must be an int"):
        FGSSLTransform(input_size=64.0)
    with pytest.raises(ValueError, match="got shape"):
        FGSSLTransform(input_size=32, grids=(2,))(torch.rand(4, 8, 8))
