from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from lightly_derm.transforms import (
    HierarchicalJigsaw,
    jigsaw_shuffle,
    jigsaw_unshuffle,
    permute_tiles,
    random_tile_permutations,
)


def reference_permute(images: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Tile p of the output is tile perm[b, p] of the input, by explicit loops."""
    batch, _, height, width = images.shape
    grid = math.isqrt(perm.shape[1])
    th, tw = height // grid, width // grid
    out = (
        torch.full_like(images, float("nan"))
        if images.is_floating_point()
        else images.clone() * 0
    )
    for b in range(batch):
        for p in range(grid * grid):
            q = int(perm[b, p])
            dst_r, dst_c = divmod(p, grid)
            src_r, src_c = divmod(q, grid)
            out[b, :, dst_r * th : (dst_r + 1) * th, dst_c * tw : (dst_c + 1) * tw] = (
                images[
                    b, :, src_r * th : (src_r + 1) * th, src_c * tw : (src_c + 1) * tw
                ]
            )
    return out


SHAPES = [
    # (B, C, H, W, grid): square, non-square, 1 and 3 channels, grid 1 and grid = side
    (3, 3, 12, 12, 3),
    (2, 1, 8, 12, 4),
    (4, 3, 16, 8, 2),
    (2, 3, 6, 6, 6),
    (2, 2, 5, 10, 1),
    (5, 3, 28, 28, 7),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_shuffle_moves_exactly_the_tiles_of_the_permutation(shape) -> None:
    b, c, h, w, grid = shape
    images = torch.randn(b, c, h, w, dtype=torch.float64)
    shuffled, perm = jigsaw_shuffle(images, grid, torch.Generator().manual_seed(1))
    assert perm.shape == (b, grid * grid) and perm.dtype == torch.long
    for row in perm:
        assert sorted(row.tolist()) == list(range(grid * grid))
    assert shuffled.dtype == images.dtype and shuffled.shape == images.shape
    assert torch.equal(shuffled, reference_permute(images, perm))
    assert torch.equal(jigsaw_unshuffle(shuffled, perm), images)
    assert torch.equal(permute_tiles(images, perm), shuffled)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bfloat16, torch.float32])
def test_channels_last_and_dtypes_are_kept(dtype) -> None:
    images = (torch.rand(3, 3, 16, 24) * 200).to(dtype)
    perm = random_tile_permutations(3, 4, generator=torch.Generator().manual_seed(0))
    expected = reference_permute(images, perm)
    nhwc = images.contiguous(memory_format=torch.channels_last)
    out = permute_tiles(nhwc, perm)
    assert out.dtype == dtype and torch.equal(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last)
    # a non-contiguous view (a slice of a view batch) works as well
    strided = torch.stack([images, images], 1)[:, 0]
    assert torch.equal(permute_tiles(strided, perm), expected)


def test_samples_get_different_permutations_and_seeding_is_deterministic() -> None:
    images = torch.rand(16, 3, 32, 32)
    _, perm = jigsaw_shuffle(images, 4, torch.Generator().manual_seed(7))
    assert len({tuple(r.tolist()) for r in perm}) == 16
    again = jigsaw_shuffle(images, 4, torch.Generator().manual_seed(7))
    other = jigsaw_shuffle(images, 4, torch.Generator().manual_seed(8))
    assert torch.equal(again[1], perm) and not torch.equal(other[1], perm)
    torch.manual_seed(3)
    first = jigsaw_shuffle(images, 4)[1]
    torch.manual_seed(3)
    assert torch.equal(jigsaw_shuffle(images, 4)[1], first)


def test_permutations_are_uniform() -> None:
    perm = random_tile_permutations(
        24_000, 2, generator=torch.Generator().manual_seed(0)
    )
    counts = Counter(tuple(r) for r in perm.tolist())
    assert len(counts) == 24  # 4! permutations
    # each ~1000 with sd ~31; 6 sd is a failure rate far below 1e-6
    assert all(abs(n - 1000) < 190 for n in counts.values())


def test_exclude_identity() -> None:
    perm = random_tile_permutations(
        23_000, 2, generator=torch.Generator().manual_seed(0), exclude_identity=True
    )
    counts = Counter(tuple(r) for r in perm.tolist())
    assert (0, 1, 2, 3) not in counts and len(counts) == 23
    assert all(abs(n - 1000) < 190 for n in counts.values())
    images = torch.rand(64, 1, 4, 4)
    shuffled, _ = jigsaw_shuffle(images, 2, exclude_identity=True)
    assert not (shuffled == images).flatten(1).all(1).any()
    with pytest.raises(ValueError, match="grid >= 2"):
        jigsaw_shuffle(images, 1, exclude_identity=True)


def test_empty_batch() -> None:
    shuffled, perm = jigsaw_shuffle(torch.rand(0, 3, 8, 8), 2)
    assert shuffled.shape == (0, 3, 8, 8) and perm.shape == (0, 4)


def test_generator_on_another_device_than_the_images() -> None:
    images = torch.rand(2, 3, 8, 8)
    shuffled, perm = jigsaw_shuffle(
        images, 2, torch.Generator(device="cpu").manual_seed(0)
    )
    assert perm.device == images.device
    assert torch.equal(shuffled, reference_permute(images, perm))


@pytest.mark.parametrize(
    ("images", "grid", "error", "match"),
    [
        (
            torch.rand(3, 16, 16),
            4,
            ValueError,
            r"4-D batch \(B, C, H, W\), got shape \(3, 16, 16\)",
        ),
        (
            torch.rand(2, 3, 16, 18),
            4,
            ValueError,
            r"grid 4 does not divide the image width 18 \(image 16x18",
        ),
        (
            torch.rand(2, 3, 15, 16),
            4,
            ValueError,
            r"grid 4 does not divide the image height 15",
        ),
        (torch.rand(2, 3, 16, 16), 0, ValueError, "grid must be >= 1, got 0"),
        (
            torch.rand(2, 3, 16, 16),
            32,
            ValueError,
            "grid 32 is larger than the image height 16",
        ),
        (torch.rand(2, 3, 16, 16), 2.0, TypeError, "grid must be an int"),
        (np.zeros((2, 3, 16, 16)), 2, TypeError, "must be a tensor"),
    ],
)
def test_bad_input(images, grid, error, match) -> None:
    with pytest.raises(error, match=match):
        jigsaw_shuffle(images, grid)


def test_bad_permutations() -> None:
    images = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="permutation of 0 … 3"):
        jigsaw_unshuffle(images, torch.tensor([[0, 1, 2, 3], [0, 0, 2, 3]]))
    with pytest.raises(ValueError, match="not a square"):
        jigsaw_unshuffle(images, torch.tensor([[0, 1, 2], [0, 1, 2]]))
    with pytest.raises(ValueError, match=r"B = 2"):
        permute_tiles(images, torch.tensor([[0, 1, 2, 3]]))
    with pytest.raises(TypeError, match="integer"):
        permute_tiles(images, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="grid 3 does not divide"):
        permute_tiles(images, torch.arange(9).repeat(2, 1))


def test_hierarchical_jigsaw_on_pil_and_tensors() -> None:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8), "RGB")
    jigsaw = HierarchicalJigsaw(grids=(8, 4, 2), return_permutations=True)
    for image, channels in ((rgb, 3), (rgb.convert("L"), 1)):
        views, perms = jigsaw(image)
        assert [tuple(v.shape) for v in views] == [(channels, 32, 48)] * 3
        assert [tuple(p.shape) for p in perms] == [(64,), (16,), (4,)]
        tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)
        tensor = tensor.permute(2, 0, 1) if tensor.ndim == 3 else tensor[None]
        for view, perm in zip(views, perms, strict=True):
            expected = reference_permute(tensor[None], perm[None])
            torch.testing.assert_close(view[None], expected, rtol=0, atol=1e-6)
    tensor = torch.rand(3, 16, 16)
    views = HierarchicalJigsaw(grids=(4,))(tensor)
    assert isinstance(views, list) and len(views) == 1
    batch_views = HierarchicalJigsaw(grids=(4, 2))(torch.rand(5, 3, 16, 16))
    assert [tuple(v.shape) for v in batch_views] == [(5, 3, 16, 16)] * 2


def test_hierarchical_jigsaw_seeding_and_errors() -> None:
    image = torch.rand(3, 16, 16)
    a = HierarchicalJigsaw((4, 2), generator=torch.Generator().manual_seed(0))(image)
    b = HierarchicalJigsaw((4, 2), generator=torch.Generator().manual_seed(0))(image)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="grid 3 does not divide the image height 16"):
        HierarchicalJigsaw((4, 3))(image)
    with pytest.raises(ValueError, match="non-empty sequence"):
        HierarchicalJigsaw(())
    with pytest.raises(ValueError, match=">= 1"):
        HierarchicalJigsaw((4, 0))
    with pytest.raises(TypeError, match="PIL image or a tensor"):
        HierarchicalJigsaw((2,))(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match=r"got shape \(16, 16\)"):
        HierarchicalJigsaw((2,))(torch.rand(16, 16))


@pytest.mark.gpu
def test_gpu_matches_cpu() -> None:
    images = torch.rand(8, 3, 64, 48)
    perm = random_tile_permutations(8, 8, generator=torch.Generator().manual_seed(0))
    cuda = permute_tiles(images.cuda(), perm.cuda())
    assert torch.equal(cuda.cpu(), reference_permute(images, perm))
    shuffled, perm = jigsaw_shuffle(images.cuda().half(), 16)
    assert perm.is_cuda and torch.equal(
        jigsaw_unshuffle(shuffled, perm).cpu(), images.half()
    )
