"""The Triton jigsaw kernel against a loop reference and the index_select path.

Without a GPU the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``: the
kernel body executes with numpy on CPU tensors), so CI checks the kernel's index
arithmetic, masks, word reinterpretation and dispatch on every run. The ``gpu`` tests
compare the compiled kernel with the index_select path on CUDA.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from lightly_derm.transforms import jigsaw as jigsaw_module
from lightly_derm.transforms import (
    jigsaw_shuffle,
    jigsaw_unshuffle,
    permute_tiles,
    random_tile_permutations,
)

Tensor = torch.Tensor

triton = pytest.importorskip("triton", reason="the jigsaw kernel needs triton")
jigsaw_kernel = pytest.importorskip("lightly_derm.transforms.jigsaw_kernel")
BlockConfig = jigsaw_kernel.BlockConfig


def random_batch(
    shape: tuple[int, ...], dtype: torch.dtype, layout: str, device: str = "cpu"
) -> Tensor:
    """Random bits of ``dtype`` (NaNs, infinities and -0.0 included for floats)."""
    if dtype == torch.bool:
        images = torch.randint(0, 2, shape, dtype=torch.bool, device=device)
    else:
        itemsize = torch.empty((), dtype=dtype).element_size()
        size = (*shape[:-1], shape[-1] * itemsize)
        bits = torch.randint(0, 256, size, dtype=torch.uint8, device=device)
        images = bits.view(dtype)
    if layout == "channels_last":
        return images.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other sample of a larger batch: not dense
        return torch.stack([images, images.flip(0)], 1)[:, 0]
    return images


def loop_reference(images: Tensor, perm: Tensor) -> Tensor:
    """Tile p of the output is tile perm[b, p] of the input, tile by tile."""
    batch, _, height, width = images.shape
    grid = math.isqrt(perm.shape[1])
    th, tw = height // grid, width // grid
    out = torch.empty_like(images, memory_format=torch.contiguous_format)
    out.view(torch.uint8).fill_(0xA5)
    for b in range(batch):
        for p in range(grid * grid):
            (dr, dc), (sr, sc) = divmod(p, grid), divmod(int(perm[b, p]), grid)
            out[b, :, dr * th : (dr + 1) * th, dc * tw : (dc + 1) * tw] = images[
                b, :, sr * th : (sr + 1) * th, sc * tw : (sc + 1) * tw
            ]
    return out


def bits(tensor: Tensor) -> Tensor:
    return tensor.contiguous().view(torch.uint8)


def poisoned_like(images: Tensor) -> Tensor:
    """An output buffer in the kernel's memory format, every byte 0xA5."""
    channels_last = jigsaw_kernel._channels_last(images)
    out = torch.empty_like(
        images,
        memory_format=torch.channels_last if channels_last else torch.contiguous_format,
    )
    (out.permute(0, 2, 3, 1) if channels_last else out).view(torch.uint8).fill_(0xA5)
    return out


class Counting:
    """Wraps a kernel and counts its launches."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.launches = 0

    def __getitem__(self, grid: Any) -> Any:
        self.launches += 1
        return self.kernel[grid]


@pytest.fixture
def interpreted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counting]:
    """The kernel compiled for Triton's interpreter, installed as the jigsaw's kernel.

    ``TRITON_INTERPRET`` is read when ``triton.jit`` wraps a function (triton 3.x), so
    the kernel function is wrapped again with the variable set; the CPU tensors then
    reach the kernel because ``LIGHTLY_DERM_JIGSAW_BACKEND=triton`` forces it.
    """
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    kernel = triton.jit(jigsaw_kernel._gather_tiles)
    if type(kernel).__name__ != "InterpretedFunction":
        pytest.skip(f"triton {triton.__version__} ignores TRITON_INTERPRET at jit time")
    counting = Counting(kernel)
    monkeypatch.setattr(jigsaw_kernel, "_kernel", counting)
    monkeypatch.setenv(jigsaw_module.BACKEND_ENV, "triton")
    yield counting


CASES = [
    # (B, C, H, W, grid, dtype, layout)
    (2, 3, 12, 12, 3, torch.float32, "nchw"),  # 4-word tile rows → 16-byte accesses
    (2, 3, 8, 12, 4, torch.float32, "channels_last"),  # non-square, NHWC words
    (3, 1, 14, 28, 7, torch.uint8, "nchw"),  # 1 channel, 4-byte tile rows
    (2, 3, 16, 24, 4, torch.bfloat16, "channels_last"),
    (2, 2, 10, 10, 5, torch.float16, "strided"),  # not dense → made contiguous
    (2, 3, 6, 6, 6, torch.float64, "nchw"),  # one-pixel tiles
    (1, 3, 8, 8, 1, torch.float32, "nchw"),  # grid 1: the identity
    (2, 3, 9, 6, 3, torch.bool, "nchw"),  # odd tile rows: 1-byte words
    (2, 4, 8, 8, 2, torch.complex64, "channels_last"),
    (2, 3, 14, 14, 7, torch.int64, "nchw"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[:5]}-{c[5]}-{c[6]}")
@pytest.mark.slow
def test_kernel_matches_the_loop_reference_bit_for_bit(interpreted, case) -> None:
    b, c, h, w, grid, dtype, layout = case
    images = random_batch((b, c, h, w), dtype, layout)
    perm = random_tile_permutations(b, grid)
    out = jigsaw_kernel.permute_tiles_triton(
        images, grid, perm, out=poisoned_like(images)
    )
    assert interpreted.launches == 1
    assert out.dtype == dtype and out.shape == images.shape
    assert torch.equal(bits(out), bits(loop_reference(images, perm)))
    assert torch.equal(
        bits(out), bits(jigsaw_module._permute_tiles_index_select(images, grid, perm))
    )
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)
    else:
        assert out.is_contiguous()


@pytest.mark.parametrize(
    "config",
    [
        BlockConfig(block_h=2, block_w=16, num_warps=1, vec=1),  # many column blocks
        BlockConfig(block_h=4, block_w=8, num_warps=1, vec=2),  # rows and cols masked
        BlockConfig(block_h=32, block_w=128, num_warps=2, vec=2),  # one block, padded
    ],
)
def test_any_block_shape_covers_every_element_once(interpreted, config) -> None:
    images = random_batch((2, 1, 12, 40), torch.float32, "nchw")  # tiles 6 x 20
    perm = random_tile_permutations(2, 2)
    out = jigsaw_kernel.permute_tiles_triton(
        images, 2, perm, out=poisoned_like(images), config=config
    )
    assert torch.equal(bits(out), bits(loop_reference(images, perm)))


def test_config_vec_must_divide_the_tile_row() -> None:
    images = torch.rand(1, 1, 6, 6)
    with pytest.raises(ValueError, match="vec 4 does not divide"):
        jigsaw_kernel.permute_tiles_triton(
            images, 2, torch.tensor([[0, 1, 2, 3]]), config=BlockConfig(1, 8, 1, 4)
        )


@pytest.mark.parametrize(
    ("tile_h", "row_words", "tile_words", "word"),
    [(7, 224, 7, 4), (16, 112, 7, 8), (112, 224, 28, 8), (1, 672, 21, 1), (3, 3, 1, 2)],
)
def test_block_config_stays_within_its_bounds(
    tile_h, row_words, tile_words, word
) -> None:
    config = jigsaw_kernel.block_config(tile_h, row_words, tile_words, word)
    assert config.vec * word <= 16 and tile_words % config.vec == 0
    assert config.block_h * config.block_w * word <= 16384
    assert config.block_h <= max(1, 2 * tile_h) and config.block_w < 2 * row_words
    assert config.num_warps in (1, 2, 4, 8)
    padded_w = -(-row_words // config.block_w) * config.block_w
    assert padded_w <= 2 * row_words


def test_public_functions_run_the_kernel_and_round_trip(interpreted) -> None:
    images = torch.rand(3, 3, 16, 16)
    shuffled, perm = jigsaw_shuffle(
        images, 4, torch.Generator().manual_seed(0), exclude_identity=True
    )
    assert interpreted.launches == 1
    assert torch.equal(shuffled, loop_reference(images, perm))
    assert torch.equal(jigsaw_unshuffle(shuffled, perm), images)
    assert torch.equal(permute_tiles(images, perm.int()), shuffled)
    assert interpreted.launches == 3


def test_gradient_is_the_inverse_permutation(interpreted) -> None:
    images = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    perm = random_tile_permutations(2, 4)
    (permute_tiles(images, perm) * weights).sum().backward()
    assert interpreted.launches == 2  # forward and backward
    expected = torch.autograd.grad(
        (jigsaw_module._permute_tiles_index_select(images, 4, perm) * weights).sum(),
        images,
    )[0]
    assert torch.equal(images.grad, expected)
    assert torch.equal(images.grad, jigsaw_unshuffle(weights, perm))
    # double backward: the backward is itself the (differentiable) kernel
    weights.requires_grad_(True)
    (grad,) = torch.autograd.grad(
        (permute_tiles(images, perm) * weights).sum(), images, create_graph=True
    )
    other = torch.rand_like(grad)
    (grad * other).sum().backward()
    assert torch.equal(weights.grad, loop_reference(other, perm))


def test_corrupt_permutation_without_check_stays_in_bounds(interpreted) -> None:
    images = torch.rand(2, 1, 4, 4)
    perm = torch.tensor([[7, -3, 1, 100], [0, 1, 2, 3]])
    out = permute_tiles(images, perm, check=False)
    assert torch.equal(out[1], images[1])
    tiles = {
        tuple(t.flatten().tolist())
        for t in images[0, 0].unfold(0, 2, 2).unfold(1, 2, 2).reshape(4, 4)
    }
    produced = out[0, 0].unfold(0, 2, 2).unfold(1, 2, 2).reshape(4, 4)
    assert all(tuple(t.tolist()) in tiles for t in produced)


def test_backend_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    images = torch.rand(2, 3, 8, 8)
    perm = random_tile_permutations(2, 2)
    counting = Counting(jigsaw_kernel._kernel)
    monkeypatch.setattr(jigsaw_kernel, "_kernel", counting)
    for value in ("", "auto", "index_select", "INDEX_SELECT"):
        monkeypatch.setenv(jigsaw_module.BACKEND_ENV, value)
        assert torch.equal(permute_tiles(images, perm), loop_reference(images, perm))
    assert counting.launches == 0  # CPU tensors never reach the compiled kernel
    monkeypatch.setenv(jigsaw_module.BACKEND_ENV, "cuda")
    with pytest.raises(ValueError, match="LIGHTLY_DERM_JIGSAW_BACKEND must be one of"):
        jigsaw_shuffle(images, 2)
    monkeypatch.setenv(jigsaw_module.BACKEND_ENV, "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        jigsaw_shuffle(images, 2)


# ----------------------------------------------------------------------------- GPU


GPU_CASES = [
    (256, 3, 224, 224, 16, torch.float32, "nchw"),
    (64, 3, 224, 224, 32, torch.float32, "channels_last"),
    (64, 3, 448, 448, 7, torch.bfloat16, "nchw"),
    (32, 3, 96, 160, 8, torch.float16, "strided"),
    (16, 1, 28, 28, 4, torch.uint8, "nchw"),
    (16, 3, 64, 64, 64, torch.float32, "nchw"),
    (8, 3, 60, 60, 5, torch.bool, "channels_last"),
    (8, 3, 64, 64, 2, torch.float64, "nchw"),
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: f"{c[:5]}-{c[5]}-{c[6]}")
def test_cuda_kernel_matches_index_select(case) -> None:
    b, c, h, w, grid, dtype, layout = case
    images = random_batch((b, c, h, w), dtype, layout, device="cuda")
    perm = random_tile_permutations(b, grid, device="cuda")
    out = jigsaw_kernel.permute_tiles_triton(
        images, grid, perm, out=poisoned_like(images)
    )
    expected = jigsaw_module._permute_tiles_index_select(images, grid, perm)
    assert torch.equal(bits(out), bits(expected))
    small = slice(0, 2)
    assert torch.equal(
        bits(out[small]).cpu(),
        bits(loop_reference(images[small].cpu(), perm[small].cpu())),
    )
    # the default path on CUDA is the kernel, and unshuffling restores the batch
    counting = Counting(jigsaw_kernel._kernel)
    try:
        jigsaw_kernel._kernel = counting
        shuffled, perm = jigsaw_shuffle(images, grid)
        assert torch.equal(bits(jigsaw_unshuffle(shuffled, perm)), bits(images))
    finally:
        jigsaw_kernel._kernel = counting.kernel
    assert counting.launches == 2


@pytest.mark.gpu
def test_cuda_gradient_and_other_device() -> None:
    images = torch.rand(4, 3, 32, 32, device="cuda", requires_grad=True)
    weights = torch.rand_like(images)
    perm = random_tile_permutations(4, 8, device="cuda")
    (permute_tiles(images, perm) * weights).sum().backward()
    assert torch.equal(images.grad, jigsaw_unshuffle(weights, perm))
    if torch.cuda.device_count() > 1:
        other = images.detach().to("cuda:1")
        shuffled = permute_tiles(other, perm.to("cuda:1"))
        assert shuffled.device == other.device
        assert torch.equal(shuffled.cpu(), permute_tiles(images.detach(), perm).cpu())


@pytest.mark.gpu
def test_cuda_batch_beyond_int32_offsets() -> None:
    """2.4 G elements: the plane base is int64 while in-plane offsets stay int32."""
    free, _ = torch.cuda.mem_get_info()
    if free < 10 * 2**30:
        pytest.skip("needs 10 GiB of free GPU memory")
    images = torch.randint(
        0, 256, (16384, 3, 224, 224), dtype=torch.uint8, device="cuda"
    )
    perm = random_tile_permutations(16384, 2, device="cuda")
    out = jigsaw_kernel.permute_tiles_triton(images, 2, perm)
    # the last sample is past 2³¹ elements
    assert torch.equal(out[-1:], loop_reference(images[-1:], perm[-1:]))
    del out, images


@pytest.mark.parametrize("kind", ["cycle", "derangement"])
def test_kernel_applies_the_authors_cycles_as_pmg_loop(interpreted, kind) -> None:
    from tests.transforms.test_jigsaw import drawn_orders, pmg_jigsaw_reference

    images = torch.rand(4, 3, 12, 12)
    shuffled, perm = jigsaw_shuffle(
        images, 3, torch.Generator().manual_seed(2), permutations=kind
    )
    assert interpreted.launches == 1
    assert torch.equal(shuffled, loop_reference(images, perm))
    assert not (perm == torch.arange(9)).any()
    if kind == "cycle":
        for i, order in enumerate(drawn_orders(4, 3, 2)):
            assert torch.equal(shuffled[i], pmg_jigsaw_reference(images[i], order))
