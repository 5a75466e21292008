"""The jigsaw gather as one Triton kernel: what :func:`~lightly_derm.transforms.permute_tiles` runs on CUDA.

Part of FG-SSL (Park and Ryu, arXiv:2308.05770), whose jigsaw J_n cuts every image of a
batch into an n × n grid of tiles and permutes them per sample (see
:mod:`lightly_derm.transforms.jigsaw` for the conventions). The portable path there is
one :func:`torch.index_select` of tile-row segments; on an H100 it ran at 1.7–31× the
copy floor depending on the grid (``benchmarks/results/jigsaw_cuda.md``), because the
segment gather reads and writes rows of a few dozen bytes through an index the size of
the image. This kernel writes every output element exactly once, in order, and reads
each from its source tile:

- one program writes a ``BLOCK_H`` × ``BLOCK_W`` block of one output *band* (the
  ``H/grid`` rows of one row of tiles) of one plane — a (sample, channel) image in NCHW,
  a sample in channels-last, where a pixel's C values are contiguous and a tile row is
  ``W/grid · C`` contiguous values;
- it loads the permutation entries of its columns once (``BLOCK_W`` small loads from a
  table that stays in L1), so the per-element work is two int32 multiply-adds; the
  writes are fully coalesced and the reads contiguous within each tile row;
- the tensor is reinterpreted as 1-, 2-, 4- or 8-byte words, the widest that divides a
  tile row's bytes, and the compiler is told (``tl.multiple_of``/``tl.max_contiguous``)
  that runs of words inside a tile row are aligned, so a tile row of 32 or more
  aligned bytes is moved with 16-byte accesses. The kernel is therefore
  dtype-agnostic: float32, bfloat16, float16, uint8, bool, float64 or complex
  tensors all move as words, bit for bit (NaNs and signed zeros included);
- offsets inside a plane are int32; the plane's base is one int64 product per
  program, so batches of more than 2³¹ elements are safe.

Grid, tile height and width are compile-time constants (the index arithmetic becomes
multiplications and shifts): Triton compiles one kernel per (image size, grid, word
size, layout), once, and caches it on disk (``~/.triton/cache``).

Builds on Triton (``triton.jit``; shipped with the CUDA builds of PyTorch on Linux) and
torch's caching allocator for the output. Without Triton, or for CPU tensors,
:mod:`~lightly_derm.transforms.jigsaw` uses its ``index_select`` path.

Example:
    >>> import torch
    >>> from lightly_derm.transforms import random_tile_permutations
    >>> from lightly_derm.transforms.jigsaw_kernel import permute_tiles_triton
    >>> images = torch.rand(8, 3, 224, 224, device="cuda")  # doctest: +SKIP
    >>> perm = random_tile_permutations(8, 16, device="cuda")  # doctest: +SKIP
    >>> shuffled = permute_tiles_triton(images, 16, perm)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["BlockConfig", "block_config", "permute_tiles_triton"]

_WORD_TYPES = {8: tl.int64, 4: tl.int32, 2: tl.int16, 1: tl.int8}


def _gather_tiles(
    src,
    dst,
    perm,
    planes_per_sample,
    G: tl.constexpr,
    TH: tl.constexpr,
    TW: tl.constexpr,
    W: tl.constexpr,
    ROW_BLOCKS: tl.constexpr,
    COL_BLOCKS: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
    VEC: tl.constexpr,
):
    """Output tile p of every plane is source tile perm[sample, p].

    ``src`` and ``dst`` are (planes, G·TH, W) words, W = G·TW; ``perm`` is (B, G²).
    Program order (fastest first): column block, row block, band, plane, so programs
    that run at the same time read from the same few source planes (L2 reuse of the
    32-byte sectors that tile rows share when they are not sector-aligned).
    """
    pid = tl.program_id(0)
    col_block = pid % COL_BLOCKS
    rest = pid // COL_BLOCKS
    row_block = rest % ROW_BLOCKS
    rest = rest // ROW_BLOCKS
    band = rest % G
    plane = rest // G
    sample = plane // planes_per_sample

    cols = col_block * BLOCK_W + tl.arange(0, BLOCK_W)
    col_ok = cols < W
    tile_col = cols // TW
    q = tl.load(
        perm + sample.to(tl.int64) * (G * G) + band * G + tile_col,
        mask=col_ok,
        other=0,
    ).to(tl.int32)
    # never leave the plane, even for a corrupt permutation passed with check=False
    q = tl.minimum(tl.maximum(q, 0), G * G - 1)
    src_band = q // G
    src_cols = src_band * (TH * W) + (q - src_band * G) * TW + (cols - tile_col * TW)
    if VEC > 1:
        # runs of VEC words inside a tile row are contiguous and VEC-aligned
        src_cols = tl.max_contiguous(tl.multiple_of(src_cols, VEC), VEC)

    rows = row_block * BLOCK_H + tl.arange(0, BLOCK_H)
    row_ok = rows < TH
    mask = row_ok[:, None] & col_ok[None, :]
    base = plane.to(tl.int64) * (G * TH * W)
    values = tl.load(src + base + (rows[:, None] * W + src_cols[None, :]), mask=mask)
    dst_offsets = (band * TH + rows)[:, None] * W + cols[None, :]
    tl.store(dst + base + dst_offsets, values, mask=mask)


_kernel = triton.jit(_gather_tiles)


class BlockConfig(NamedTuple):
    """Launch parameters: rows and words per program, warps, words per access."""

    block_h: int
    block_w: int
    num_warps: int
    vec: int


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _pick_block(size: int, cap: int, waste: float = 0.15) -> int:
    """The largest power of two <= ``cap`` covering ``size`` with little padding."""
    cap = max(1, min(cap, _pow2_at_least(size)))
    candidates = [1 << k for k in range(cap.bit_length()) if 1 << k <= cap]
    padded = {c: -(-size // c) * c for c in candidates}
    good = [c for c in candidates if padded[c] <= size * (1 + waste)]
    if good:
        return max(good)
    return min(candidates, key=lambda c: (padded[c], -c))


@functools.lru_cache(maxsize=256)
def block_config(
    tile_h: int, row_words: int, tile_words: int, word: int
) -> BlockConfig:
    """Block shape for a band of ``tile_h`` rows of ``row_words`` words.

    Aims at 16 KB per program (H100: many programs of a few 16-byte accesses per
    thread keep enough bytes in flight), the widest block that covers a row with at
    most 15 % padding, and 16-byte accesses where a tile row allows.
    """
    vec = 1
    while vec * 2 * word <= 16 and tile_words % (vec * 2) == 0:
        vec *= 2
    target = 16384 // word
    block_w = _pick_block(row_words, min(1024, target))
    block_h = _pick_block(tile_h, max(1, target // block_w))
    accesses = block_h * block_w // vec
    num_warps = 1
    while num_warps < 8 and accesses // (32 * num_warps) > 8:
        num_warps *= 2
    return BlockConfig(block_h, block_w, num_warps, vec)


def _channels_last(images: Tensor) -> bool:
    return (
        images.shape[1] > 1
        and not images.is_contiguous()
        and images.is_contiguous(memory_format=torch.channels_last)
    )


def permute_tiles_triton(
    images: Tensor,
    grid: int,
    permutation: Tensor,
    *,
    out: Tensor | None = None,
    config: BlockConfig | None = None,
    kernel: Any = None,
) -> Tensor:
    """Tile p of ``out[b]`` is tile ``permutation[b, p]`` of ``images[b]``, by one kernel.

    No checks beyond what the launch needs: :func:`~lightly_derm.transforms.permute_tiles`
    validates the arguments and calls this for CUDA tensors. Rows of ``permutation`` that
    are not permutations give unspecified tiles (never an out-of-bounds access).

    Args:
        images: (B, C, H, W), any dtype; NCHW-contiguous or channels-last (other
            strides are made NCHW-contiguous first). ``grid`` divides H and W.
        grid: Tiles per side.
        permutation: (B, grid²) integer tensor on the images' device.
        out: Where to write (same shape, dtype, device and memory format as the
            result); by default a new tensor in the images' memory format.
        config: Block shape and warps (default: :func:`block_config`); for tuning.
        kernel: The Triton kernel to launch (default: the compiled one); the tests
            pass one made under ``TRITON_INTERPRET=1`` to run it on CPU tensors.

    Returns:
        The permuted batch, in the input's memory format.
    """
    batch, channels, height, width = images.shape
    channels_last = _channels_last(images)
    if not channels_last:
        images = images.contiguous()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if out is None:
        out = torch.empty_like(images, memory_format=memory_format)
    elif (
        out.shape != images.shape
        or out.dtype != images.dtype
        or out.device != images.device
        or not out.is_contiguous(memory_format=memory_format)
    ):
        raise ValueError(
            f"permute_tiles_triton: out must be a dense {tuple(images.shape)} "
            f"{images.dtype} tensor on {images.device} in the input's memory format"
        )
    if images.numel() == 0:
        return out
    tile_h, tile_w = height // grid, width // grid
    pixel_bytes = images.element_size() * (channels if channels_last else 1)
    tile_bytes = tile_w * pixel_bytes
    word = next(
        w
        for w in (8, 4, 2, 1)
        if tile_bytes % w == 0
        and images.data_ptr() % w == 0
        and out.data_ptr() % w == 0
    )
    tile_words = tile_bytes // word
    row_words = tile_words * grid
    if height * row_words >= 2**31:
        raise ValueError(
            f"permute_tiles_triton: one plane of {height} x {row_words} words exceeds "
            "int32 offsets; use the index_select path"
        )
    if config is None:
        config = block_config(tile_h, row_words, tile_words, word)
    elif tile_words % config.vec:
        raise ValueError(
            f"config.vec {config.vec} does not divide the tile width of {tile_words} words"
        )
    perm = permutation.to(device=images.device).contiguous()
    row_blocks = -(-tile_h // config.block_h)
    col_blocks = -(-row_words // config.block_w)
    planes = batch if channels_last else batch * channels
    programs = planes * grid * row_blocks * col_blocks
    launch = _kernel if kernel is None else kernel
    # the storage of the dense NCHW or NHWC batch, read as words: (planes, H, row words)
    word_type = _WORD_TYPES[word]
    args = (
        triton.reinterpret(images, word_type),
        triton.reinterpret(out, word_type),
        perm,
    )
    index = images.device.index
    switch = (
        images.is_cuda and index is not None and index != torch.cuda.current_device()
    )
    with torch.cuda.device(index) if switch else contextlib.nullcontext():
        launch[(programs,)](
            *args,
            1 if channels_last else channels,
            G=grid,
            TH=tile_h,
            TW=tile_words,
            W=row_words,
            ROW_BLOCKS=row_blocks,
            COL_BLOCKS=col_blocks,
            BLOCK_H=config.block_h,
            BLOCK_W=config.block_w,
            VEC=config.vec,
            num_warps=config.num_warps,
        )
    return out
