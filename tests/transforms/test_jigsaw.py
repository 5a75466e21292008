from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from lightly_derm.transforms import (
    PERMUTATIONS,
    HierarchicalJigsaw,
    cycle_from_order,
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


# --------------------------------------------------------------- permutation kinds
def pmg_jigsaw_reference(image: torch.Tensor, order: list[int]) -> torch.Tensor:
    """PMG's ``jigsaw_generator`` for one image, written as in its repository.

    The shuffled list ``l`` of tile coordinates is given as the row-major tile indices
    ``order``; tile 0 is swapped with each listed tile in turn. (PMG shapes the tiles
    as squares of a 448-px image; here tiles are (H/n) × (W/n).)
    """
    grid = math.isqrt(len(order))
    th, tw = image.shape[-2] // grid, image.shape[-1] // grid
    jigsaws = image.clone()
    for tile in order:
        x, y = divmod(tile, grid)
        temp = jigsaws[..., 0:th, 0:tw].clone()
        jigsaws[..., 0:th, 0:tw] = jigsaws[
            ..., x * th : (x + 1) * th, y * tw : (y + 1) * tw
        ].clone()
        jigsaws[..., x * th : (x + 1) * th, y * tw : (y + 1) * tw] = temp
    return jigsaws


def drawn_orders(batch: int, grid: int, seed: int) -> list[list[int]]:
    """The orders random_tile_permutations draws first: argsort of float64 keys."""
    keys = torch.rand(
        batch,
        grid * grid,
        generator=torch.Generator().manual_seed(seed),
        dtype=torch.float64,
    )
    return keys.argsort(dim=1).tolist()


def cycle_lengths(perm: list[int]) -> list[int]:
    seen, lengths = set(), []
    for start in range(len(perm)):
        length, p = 0, start
        while p not in seen:
            seen.add(p)
            p = perm[p]
            length += 1
        if length:
            lengths.append(length)
    return sorted(lengths)


@pytest.mark.parametrize("shape", SHAPES)
def test_cycle_is_pmg_tile_swap_loop(shape) -> None:
    b, c, h, w, grid = shape
    images = torch.randn(b, c, h, w, dtype=torch.float64)
    shuffled, perm = jigsaw_shuffle(
        images, grid, torch.Generator().manual_seed(5), permutations="cycle"
    )
    for i, order in enumerate(drawn_orders(b, grid, 5)):
        assert torch.equal(shuffled[i], pmg_jigsaw_reference(images[i], order))
        assert cycle_lengths(perm[i].tolist()) == [grid * grid]
    assert torch.equal(shuffled, reference_permute(images, perm))
    assert torch.equal(jigsaw_unshuffle(shuffled, perm), images)


def test_cycle_from_order_is_the_loop_on_random_orders() -> None:
    generator = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 5, 9, 16, 64):
        orders = torch.rand(20, n, generator=generator).argsort(1)
        for order, perm in zip(orders, cycle_from_order(orders), strict=True):
            # PMG's swaps on the list of tile labels: position p ends holding tile s[p]
            swapped = list(range(n))
            for t in order.tolist():
                swapped[0], swapped[t] = swapped[t], swapped[0]
            assert perm.tolist() == swapped
            assert cycle_lengths(perm.tolist()) == [n]


def test_cycles_are_uniform_and_move_every_tile() -> None:
    perm = random_tile_permutations(
        12_000, 2, generator=torch.Generator().manual_seed(0), permutations="cycle"
    )
    counts = Counter(tuple(r) for r in perm.tolist())
    assert len(counts) == 6  # the (4 - 1)! 4-cycles
    assert all(cycle_lengths(list(p)) == [4] for p in counts)
    # each ~2000 with sd ~41; 6 sd
    assert all(abs(n - 2000) < 250 for n in counts.values())
    big = random_tile_permutations(
        64, 16, generator=torch.Generator().manual_seed(1), permutations="cycle"
    )
    assert not (big == torch.arange(256)).any()
    assert all(cycle_lengths(r) == [256] for r in big.tolist())


def test_derangements_are_uniform_and_move_every_tile() -> None:
    perm = random_tile_permutations(
        18_000,
        2,
        generator=torch.Generator().manual_seed(0),
        permutations="derangement",
    )
    counts = Counter(tuple(r) for r in perm.tolist())
    assert len(counts) == 9  # derangements of 4 elements
    assert all(all(p[i] != i for i in range(4)) for p in counts)
    assert all(abs(n - 2000) < 250 for n in counts.values())
    # both cycle types occur: 4-cycles (6) and pairs of swaps (3)
    assert {tuple(cycle_lengths(list(p))) for p in counts} == {(4,), (2, 2)}
    images = torch.rand(300, 1, 9, 9)
    shuffled, perm = jigsaw_shuffle(images, 3, permutations="derangement")
    assert not (perm == torch.arange(9)).any()
    assert torch.equal(shuffled, reference_permute(images, perm))


def test_permutation_kinds_are_seeded_and_checked() -> None:
    for kind in PERMUTATIONS:
        a = random_tile_permutations(
            8, 4, generator=torch.Generator().manual_seed(3), permutations=kind
        )
        b = random_tile_permutations(
            8, 4, generator=torch.Generator().manual_seed(3), permutations=kind
        )
        assert torch.equal(a, b)
    # grid 1: the 1-cycle is the identity; a derangement does not exist
    assert random_tile_permutations(3, 1, permutations="cycle").tolist() == [[0]] * 3
    with pytest.raises(ValueError, match="'derangement' needs every grid >= 2"):
        random_tile_permutations(3, 1, permutations="derangement")
    with pytest.raises(
        ValueError, match="permutations must be one of uniform, derangement, cycle"
    ):
        jigsaw_shuffle(torch.rand(1, 1, 4, 4), 2, permutations="random")
    with pytest.raises(ValueError, match="permutations must be one of"):
        HierarchicalJigsaw(grids=(2,), permutations="cycles")


def test_hierarchical_jigsaw_cycles_are_pmg_loop_per_grid() -> None:
    image = torch.rand(3, 16, 16)
    views, perms = HierarchicalJigsaw(
        grids=(8, 4),
        permutations="cycle",
        return_permutations=True,
        generator=torch.Generator().manual_seed(11),
    )(image)
    generator = torch.Generator().manual_seed(11)
    for grid, view, perm in zip((8, 4), views, perms, strict=True):
        keys = torch.rand(1, grid * grid, generator=generator, dtype=torch.float64)
        order = keys.argsort(1)[0].tolist()
        assert torch.equal(view, pmg_jigsaw_reference(image, order))
        assert cycle_lengths(perm.tolist()) == [grid * grid]


@pytest.mark.gpu
@pytest.mark.parametrize("kind", PERMUTATIONS)
def test_gpu_permutation_kinds_as_the_loop_reference(kind) -> None:
    images = torch.rand(6, 3, 32, 48)
    generator = torch.Generator(device="cuda").manual_seed(0)
    shuffled, perm = jigsaw_shuffle(images.cuda(), 8, generator, permutations=kind)
    assert perm.is_cuda
    assert torch.equal(shuffled.cpu(), reference_permute(images, perm.cpu()))
    if kind != "uniform":
        assert not (perm.cpu() == torch.arange(64)).any()
    if kind == "cycle":
        keys = torch.rand(
            6,
            64,
            generator=torch.Generator(device="cuda").manual_seed(0),
            device="cuda",
            dtype=torch.float64,
        )
        for i, order in enumerate(keys.argsort(1).cpu().tolist()):
            assert torch.equal(
                shuffled[i].cpu(), pmg_jigsaw_reference(images[i], order)
            )
