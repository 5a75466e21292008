"""Jigsaw puzzles of image tiles: one gather per batch on any device, plus a per-sample form.

Part of FG-SSL (Park and Ryu, "Fine-Grained Self-Supervised Learning with Jigsaw Puzzles
for Medical Image Classification", Computers in Biology and Medicine 174, 2024,
arXiv:2308.05770), which takes the jigsaw from PMG (Du et al., "Fine-Grained Visual
Classification via Progressive Multi-Granularity Training of Jigsaw Patches", ECCV 2020,
arXiv:2003.03836): cut the image into a ``grid`` × ``grid`` lattice of equal tiles,
permute the tiles with a permutation drawn per sample and put the image back together.

This differs from :class:`lightly.transforms.Jigsaw` (PIRL, Misra and van der Maaten,
CVPR 2020): lightly's transform returns a stack of ``n_grid²`` separately augmented,
randomly jittered *crops* that a network embeds one by one; the jigsaw here returns one
image of the input's size whose tiles are exactly the input's tiles in a new order, so
that a CNN sees the whole shuffled image and the permutation can be inverted.

Builds on :func:`torch.Tensor.index_select` (the portable gather), Triton (the CUDA
kernel in :mod:`lightly_derm.transforms.jigsaw_kernel`), :func:`torch.argsort` of random
keys (the permutations) and lightly's ``ToTensor`` (PIL input). What it adds: the
whole batch is permuted in one pass on the batch's device, with no Python loop over
samples or tiles, in NCHW and in channels-last memory layout.

What runs where (:func:`permute_tiles`, :func:`jigsaw_shuffle`, :func:`jigsaw_unshuffle`):

- CUDA tensors, with Triton importable (it ships with PyTorch's CUDA wheels on Linux)
  on a GPU of compute capability 7.5 or newer: one Triton kernel that writes every
  output element once, in order, reading it from its source tile, built to run
  within 2× of a device-to-device copy (measured: ``benchmarks/results/jigsaw_cuda.md``).
  Inputs that require grad go through an autograd function whose backward is the
  same kernel with the inverse permutation.
- Everything else (CPU, no Triton, older GPUs): one :func:`torch.index_select` of
  tile-row segments, the same result bit for bit.
- ``LIGHTLY_DERM_JIGSAW_BACKEND`` (read at every call) forces a path:
  ``index_select`` everywhere, ``triton`` (an error where the kernel cannot run), or
  ``auto`` (the default, as above).

Conventions: tiles are numbered row-major, tile ``p`` covering rows
``(p // grid) * H/grid …`` and columns ``(p % grid) * W/grid …``. A permutation ``perm``
(B, grid²) means that tile ``p`` of the output is tile ``perm[b, p]`` of the input. The
grid applies to both sides, so non-square images are cut into ``grid`` × ``grid`` tiles
of (H/grid) × (W/grid) pixels; ``grid`` must divide both H and W.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from PIL.Image import Image
from torch import Tensor

from lightly_derm.transforms.rgb import to_rgb8

__all__ = [
    "PERMUTATIONS",
    "HierarchicalJigsaw",
    "check_grid",
    "check_permutations",
    "cycle_from_order",
    "jigsaw_shuffle",
    "jigsaw_unshuffle",
    "permute_tiles",
    "random_tile_permutations",
]


def check_grid(grid: Any, height: int, width: int, name: str = "grid") -> int:
    """Checks that ``grid`` cuts an image of ``height`` × ``width`` into equal tiles.

    Returns:
        ``grid`` as an int.

    Raises:
        TypeError: ``grid`` is not an int.
        ValueError: ``grid`` < 1, ``grid`` is larger than a side, or does not divide it.
    """
    if isinstance(grid, bool) or not isinstance(grid, int):
        raise TypeError(f"{name} must be an int, got {type(grid).__name__} {grid!r}")
    if grid < 1:
        raise ValueError(f"{name} must be >= 1, got {grid}")
    for side_name, side in (("height", height), ("width", width)):
        if grid > side:
            raise ValueError(
                f"{name} {grid} is larger than the image {side_name} {side} "
                f"(image {height}x{width})"
            )
        if side % grid:
            raise ValueError(
                f"{name} {grid} does not divide the image {side_name} {side} "
                f"(image {height}x{width}, {side} % {grid} = {side % grid}); "
                f"resize to a multiple of {grid}"
            )
    return grid


def _check_images(images: Any, fn: str) -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(
            f"{fn}: images must be a tensor (B, C, H, W), got {type(images).__name__}"
        )
    if images.ndim != 4:
        raise ValueError(
            f"{fn}: images must be a 4-D batch (B, C, H, W), got shape {tuple(images.shape)}"
        )
    return images


#: How the tile permutations are drawn: ``"uniform"`` (every permutation of the grid²
#: tiles alike), ``"derangement"`` (uniform over the permutations that move every tile)
#: and ``"cycle"`` (uniform over the grid²-cycles: PMG's and FG-SSL's generator).
PERMUTATIONS: tuple[str, ...] = ("uniform", "derangement", "cycle")

#: Rejection rounds of ``"derangement"`` between two checks whether every row is done.
_DERANGEMENT_ROUNDS = 8


def check_permutations(permutations: Any, grids: Sequence[int] = ()) -> str:
    """Checks a permutation kind (one of :data:`PERMUTATIONS`) for ``grids``; returns it.

    Raises:
        ValueError: An unknown kind, or ``"derangement"`` with a grid of 1 (one tile has
            no derangement).
    """
    if permutations not in PERMUTATIONS:
        raise ValueError(
            f"permutations must be one of {', '.join(PERMUTATIONS)}, got {permutations!r}"
        )
    if permutations == "derangement" and 1 in grids:
        raise ValueError(
            f"permutations='derangement' needs every grid >= 2 (one tile cannot move), "
            f"got grids {tuple(grids)}"
        )
    return str(permutations)


def cycle_from_order(order: Tensor) -> Tensor:
    """The n-cycle that PMG's tile-swap loop makes from a visiting order of the n tiles.

    PMG (Du et al., ECCV 2020, ``jigsaw_generator``) shuffles the list of the n tiles and
    swaps tile 0 with each listed tile in turn. Listing the non-zero tiles in that
    order, a_1, …, a_{n−1}, the swaps leave tile a_{k−1} at position a_k (a_0 = 0) and
    a_{n−1} at position 0: one cycle through all n tiles, whatever the order. A uniform
    order makes a uniform n-cycle ((n − 1)! of them, each from n orders).

    Args:
        order: (B, n) integer tensor, each row a permutation of 0 … n − 1 (the
            shuffled list; tile 0 may be anywhere in it).

    Returns:
        (B, n) int64 permutations in :func:`permute_tiles`' convention: position p of
        the result holds tile ``perm[b, p]``.

    Example:
        >>> import torch
        >>> from lightly_derm.transforms.jigsaw import cycle_from_order
        >>> cycle_from_order(torch.tensor([[2, 0, 3, 1]])).tolist()
        [[1, 3, 0, 2]]
    """
    order = order.long()
    # the visiting order with tile 0 first: 0, a_1, ..., a_{n-1}
    zero_first = torch.gather(
        order, 1, (order != 0).to(torch.int8).argsort(dim=1, stable=True)
    )
    # position a_k receives a_{k-1}
    return torch.empty_like(zero_first).scatter_(
        1, zero_first, zero_first.roll(1, dims=1)
    )


def _uniform_orders(
    batch_size: int, num_tiles: int, generator: torch.Generator | None, device: Any
) -> Tensor:
    keys = torch.rand(
        batch_size, num_tiles, generator=generator, device=device, dtype=torch.float64
    )
    return keys.argsort(dim=1)


def random_tile_permutations(
    batch_size: int,
    grid: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    exclude_identity: bool = False,
    permutations: str = "uniform",
) -> Tensor:
    """Draws one random permutation of the ``grid²`` tiles per sample.

    ``permutations`` chooses the distribution (n = grid²):

    - ``"uniform"``: each row is the argsort of n uniform float64 keys, so every
      permutation is equally likely (ties have probability below 2⁻³³ even for grid
      32). With ``grid`` 2, 1 row in 24 is the identity (an unshuffled image).
    - ``"cycle"`` (PMG's and FG-SSL's generator): the argsort of n keys is taken as
      the visiting order of PMG's tile-swap loop (:func:`cycle_from_order`); the row is
      a uniformly random n-cycle — one cycle through every tile, so no tile stays in
      place. Same cost as ``"uniform"``.
    - ``"derangement"``: uniform over the permutations with no tile in place
      (rejection: uniform rows are redrawn until they have no fixed point, about e
      draws per row). Every row is redrawn in rounds of 8; between rounds one host
      synchronisation checks whether all rows are done (a batch of 256 at grid ≥ 2
      needs about 2 checks).

    Only ``"uniform"`` and ``"cycle"`` never synchronise with the host, and nothing is
    looped over in Python.

    With ``exclude_identity`` (``"uniform"`` only; the others never give the
    identity), rows that came out as the identity are drawn once more (vectorised),
    and rows that are the identity again (probability 1/(grid²)!² per row) are composed
    with a uniformly random transposition. The result is never the identity; every
    other permutation has probability (1 + 1/n!)/n!, except the transpositions, which
    have an extra 1/(n!²·n(n−1)/2) — 0.7 % more than the others for grid 2, and less
    than 10⁻¹⁰ % for grid ≥ 3.

    Args:
        batch_size: B, the number of permutations.
        grid: Tiles per side; the permutations are of ``grid²`` tiles.
        generator: Random generator; the keys are drawn on its device. ``None`` uses
            the default generator of ``device``.
        device: Where the result lives; by default the generator's device, or the CPU.
        exclude_identity: Never return the identity permutation (needs ``grid`` >= 2).
        permutations: ``"uniform"``, ``"derangement"`` or ``"cycle"`` (above).

    Returns:
        (B, grid²) int64 permutations.

    Raises:
        ValueError: ``grid`` < 1, a negative ``batch_size``, an unknown
            ``permutations``, or ``exclude_identity`` or ``"derangement"`` with ``grid``
            1 (whose only permutation is the identity).

    Example:
        >>> import torch
        >>> from lightly_derm.transforms import random_tile_permutations
        >>> perm = random_tile_permutations(2, 2, generator=torch.Generator().manual_seed(0))
        >>> perm.shape, sorted(perm[0].tolist())
        (torch.Size([2, 4]), [0, 1, 2, 3])
        >>> cycles = random_tile_permutations(
        ...     1000, 3, permutations="cycle", generator=torch.Generator().manual_seed(0)
        ... )
        >>> bool((cycles == torch.arange(9)).any())   # no tile ever stays in place
        False
    """
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"grid must be an int >= 1, got {grid!r}")
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    check_permutations(permutations, (grid,))
    if exclude_identity and grid < 2:
        raise ValueError(
            "exclude_identity needs grid >= 2: grid 1 has one tile, whose only "
            "permutation is the identity"
        )
    num_tiles = grid * grid
    draw_device = generator.device if generator is not None else device
    perm = _uniform_orders(batch_size, num_tiles, generator, draw_device)
    if permutations == "cycle":
        perm = cycle_from_order(perm)
    elif permutations == "derangement":
        perm = _redraw_until_deranged(perm, generator, draw_device)
    elif exclude_identity:
        identity = torch.arange(num_tiles, device=perm.device)
        redraw = _uniform_orders(batch_size, num_tiles, generator, draw_device)
        perm = torch.where((perm == identity).all(1, keepdim=True), redraw, perm)
        # A random transposition (i j), i != j, for rows that are still the identity.
        i = torch.randint(
            0, num_tiles, (batch_size, 1), generator=generator, device=draw_device
        )
        j = torch.randint(
            0, num_tiles - 1, (batch_size, 1), generator=generator, device=draw_device
        )
        j = j + (j >= i).long()
        swapped = torch.where(identity == i, j, torch.where(identity == j, i, identity))
        perm = torch.where((perm == identity).all(1, keepdim=True), swapped, perm)
    if device is not None:
        perm = perm.to(device)
    return perm


def _redraw_until_deranged(
    perm: Tensor, generator: torch.Generator | None, device: Any
) -> Tensor:
    """Rows with a fixed point are replaced by fresh uniform rows until none is left.

    Each row ends as the first fixed-point-free draw of its own sequence of uniform
    draws, so it is uniform over the derangements.
    """
    batch_size, num_tiles = perm.shape
    identity = torch.arange(num_tiles, device=perm.device)
    while True:
        for _ in range(_DERANGEMENT_ROUNDS):
            fixed = (perm == identity).any(1, keepdim=True)
            redraw = _uniform_orders(batch_size, num_tiles, generator, device)
            perm = torch.where(fixed, redraw, perm)
        if batch_size == 0 or not bool((perm == identity).any()):
            return perm


def _grid_of(permutation: Tensor) -> int:
    num_tiles = permutation.shape[-1]
    grid = math.isqrt(num_tiles)
    if grid * grid != num_tiles or num_tiles == 0:
        raise ValueError(
            f"a tile permutation has grid² entries per sample; {num_tiles} is not a square "
            f"(permutation shape {tuple(permutation.shape)})"
        )
    return grid


def _check_permutation(images: Tensor, permutation: Any, fn: str) -> int:
    if not isinstance(permutation, Tensor):
        raise TypeError(
            f"{fn}: permutation must be a tensor (B, grid²), got {type(permutation).__name__}"
        )
    if permutation.ndim != 2 or permutation.shape[0] != images.shape[0]:
        raise ValueError(
            f"{fn}: permutation must be (B, grid²) with B = {images.shape[0]} as in the "
            f"images {tuple(images.shape)}, got {tuple(permutation.shape)}"
        )
    if permutation.dtype.is_floating_point or permutation.dtype in (
        torch.bool,
        torch.complex64,
        torch.complex128,
    ):
        raise TypeError(
            f"{fn}: permutation must be an integer tensor, got {permutation.dtype}"
        )
    grid = _grid_of(permutation)
    check_grid(grid, images.shape[-2], images.shape[-1])
    expected = torch.arange(grid * grid, device=permutation.device)
    if permutation.shape[0] and not torch.equal(
        permutation.sort(dim=1).values, expected.expand_as(permutation)
    ):
        raise ValueError(
            f"{fn}: every row of permutation must be a permutation of 0 … {grid * grid - 1}"
        )
    return grid


BACKEND_ENV = "LIGHTLY_DERM_JIGSAW_BACKEND"
_BACKENDS = ("auto", "triton", "index_select")


@functools.lru_cache(maxsize=1)
def _kernel_module() -> Any:
    """:mod:`~lightly_derm.transforms.jigsaw_kernel`, or None without Triton."""
    try:
        from lightly_derm.transforms import jigsaw_kernel
    except ImportError:
        return None
    except Exception as error:  # a broken triton install: fall back, but say so
        warnings.warn(
            f"triton failed to import ({error!r}); the jigsaw uses index_select",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return jigsaw_kernel


@functools.lru_cache(maxsize=16)
def _kernel_runs_on(device: torch.device) -> bool:
    """Whether ``auto`` picks the kernel on this CUDA device (NVIDIA, sm_75+)."""
    if torch.version.cuda is None or _kernel_module() is None:
        return False
    return torch.cuda.get_device_capability(device) >= (7, 5)


def _use_kernel(images: Tensor) -> bool:
    backend = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if backend == "auto":
        return images.is_cuda and _kernel_runs_on(images.device)
    if backend == "index_select":
        return False
    if backend != "triton":
        raise ValueError(
            f"{BACKEND_ENV} must be one of {', '.join(_BACKENDS)}, "
            f"got {os.environ[BACKEND_ENV]!r}"
        )
    if _kernel_module() is None:
        raise RuntimeError(
            f"{BACKEND_ENV}=triton, but triton cannot be imported; install triton or "
            "unset the variable"
        )
    if not images.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise ValueError(
            f"{BACKEND_ENV}=triton needs CUDA tensors (or TRITON_INTERPRET=1), got "
            f"images on {images.device}"
        )
    return True


class _PermuteTilesFunction(torch.autograd.Function):
    """The kernel under autograd: the gradient is the inverse permutation of the output's."""

    @staticmethod
    def forward(ctx: Any, images: Tensor, grid: int, permutation: Tensor) -> Tensor:
        ctx.grid = grid
        ctx.save_for_backward(permutation)
        return _kernel_module().permute_tiles_triton(images, grid, permutation)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (permutation,) = ctx.saved_tensors
        inverse = _inverse_permutation(permutation.to(grad.device))
        # through _permute_tiles, so that double backward (create_graph) works too
        return _permute_tiles(grad, ctx.grid, inverse), None, None


def _inverse_permutation(permutation: Tensor) -> Tensor:
    perm = permutation.long()
    return torch.empty_like(perm).scatter_(
        1, perm, torch.arange(perm.shape[1], device=perm.device).expand_as(perm)
    )


def _permute_tiles(images: Tensor, grid: int, permutation: Tensor) -> Tensor:
    """Tile p of the output is tile permutation[b, p] of the input, on the best path."""
    if images.numel() == 0 or not _use_kernel(images):
        return _permute_tiles_index_select(images, grid, permutation)
    permutation = permutation.to(images.device)
    if images.requires_grad and torch.is_grad_enabled():
        return _PermuteTilesFunction.apply(images, grid, permutation)
    return _kernel_module().permute_tiles_triton(images, grid, permutation)


def _permute_tiles_index_select(
    images: Tensor, grid: int, permutation: Tensor
) -> Tensor:
    """The gather: tile p of the output is tile permutation[b, p] of the input.

    A tile row (``W/grid`` pixels of one channel in NCHW; ``W/grid`` pixels × C in
    channels-last) is contiguous in memory, so the batch is viewed as a matrix of
    tile-row segments and permuted by a single :func:`torch.index_select` of segments.
    The segment index is built by broadcasting small (B, grid, grid) tensors.
    """
    batch, channels, height, width = images.shape
    if images.numel() == 0:
        return images.clone()
    tile_h = height // grid
    device = images.device
    channels_last = (
        channels > 1
        and not images.is_contiguous()
        and images.is_contiguous(memory_format=torch.channels_last)
    )
    num_segments = batch * (1 if channels_last else channels) * height * grid
    dtype = torch.int32 if num_segments < 2**31 else torch.long
    perm = permutation.to(device=device, dtype=dtype).view(batch, grid, grid)
    src_i = torch.div(perm, grid, rounding_mode="floor")
    src_j = perm - src_i * grid
    # Segment of source tile row y: ((plane * grid + src_i) * tile_h + y) * grid + src_j,
    # where a plane is (b, c) in NCHW and b in channels-last.
    tile_part = src_i * (tile_h * grid) + src_j  # (B, g, g)
    rows = torch.arange(tile_h, device=device, dtype=dtype) * grid  # (th,)
    if channels_last:
        plane = torch.arange(batch, device=device, dtype=dtype) * (height * grid)
        index = (
            plane.view(batch, 1, 1, 1) + tile_part.view(batch, grid, 1, grid)
        ) + rows.view(1, 1, tile_h, 1)
        segments = images.permute(0, 2, 3, 1).reshape(num_segments, -1)
    else:
        images = images.contiguous()
        plane = torch.arange(batch * channels, device=device, dtype=dtype) * (
            height * grid
        )
        index = (
            plane.view(batch, channels, 1, 1, 1)
            + tile_part.view(batch, 1, grid, 1, grid)
        ) + rows.view(1, 1, 1, tile_h, 1)
        segments = images.view(num_segments, -1)
    out = segments.index_select(0, index.reshape(-1))
    if channels_last:
        return out.view(batch, height, width, channels).permute(0, 3, 1, 2)
    return out.view(batch, channels, height, width)


def permute_tiles(images: Tensor, permutation: Tensor, check: bool = True) -> Tensor:
    """Reorders the tiles of every image: output tile p is input tile ``permutation[b, p]``.

    The grid is ``sqrt(permutation.shape[1])``. One pass over the whole batch, on the
    images' device (the Triton kernel on CUDA, one ``index_select`` elsewhere: see the
    module's "What runs where"); the output has the input's dtype and memory format
    (NCHW or channels-last) and supports autograd.

    Args:
        images: (B, C, H, W) on any device, any dtype.
        permutation: (B, grid²) integer tile permutations (on any device).
        check: Verify that every row is a permutation (one host synchronisation). Turn
            off only for permutations you made with :func:`random_tile_permutations`.

    Raises:
        TypeError: Not tensors, or a non-integer permutation.
        ValueError: Shapes that do not fit, a grid that does not divide H and W, or
            (with ``check``) rows that are not permutations.
    """
    images = _check_images(images, "permute_tiles")
    if check:
        grid = _check_permutation(images, permutation, "permute_tiles")
    else:
        grid = _grid_of(permutation)
    return _permute_tiles(images, grid, permutation)


def jigsaw_shuffle(
    images: Tensor,
    grid: int,
    generator: torch.Generator | None = None,
    *,
    exclude_identity: bool = False,
    permutations: str = "uniform",
) -> tuple[Tensor, Tensor]:
    """Shuffles the ``grid`` × ``grid`` tiles of every image, with one permutation per sample.

    The permutations are drawn on the images' device (:func:`random_tile_permutations`)
    and applied in one pass: the Triton kernel for CUDA tensors, one ``index_select``
    elsewhere (see the module's "What runs where"; ``LIGHTLY_DERM_JIGSAW_BACKEND``
    forces either). Nothing synchronises with the host.

    Args:
        images: (B, C, H, W) on any device, any dtype; ``grid`` must divide H and W.
        grid: Tiles per side.
        generator: Random generator (on any device) for reproducible permutations;
            ``None`` uses the default generator of the images' device.
        exclude_identity: Never return an unshuffled image (see
            :func:`random_tile_permutations` for the resulting distribution).
        permutations: ``"uniform"``, ``"derangement"`` or ``"cycle"`` (PMG's and
            FG-SSL's: one grid²-cycle per image), see :func:`random_tile_permutations`.

    Returns:
        ``(shuffled, permutation)``: the shuffled images (B, C, H, W), with the input's
        dtype, device and memory format, and the (B, grid²) int64 permutations on the
        images' device; tile p of ``shuffled[b]`` is tile ``permutation[b, p]`` of
        ``images[b]``.

    Raises:
        TypeError: ``images`` is not a tensor or ``grid`` not an int.
        ValueError: ``images`` is not 4-D, or ``grid`` < 1, larger than a side or does
            not divide it (the message names the sizes and the grid); an unknown
            ``permutations``.

    Example:
        >>> import torch
        >>> from lightly_derm.transforms import jigsaw_shuffle, jigsaw_unshuffle
        >>> images = torch.rand(8, 3, 64, 64)
        >>> shuffled, perm = jigsaw_shuffle(images, grid=4)
        >>> shuffled.shape, perm.shape
        (torch.Size([8, 3, 64, 64]), torch.Size([8, 16]))
        >>> torch.equal(jigsaw_unshuffle(shuffled, perm), images)
        True
    """
    images = _check_images(images, "jigsaw_shuffle")
    grid = check_grid(grid, images.shape[-2], images.shape[-1])
    permutation = random_tile_permutations(
        images.shape[0],
        grid,
        generator=generator,
        device=images.device,
        exclude_identity=exclude_identity,
        permutations=permutations,
    )
    return _permute_tiles(images, grid, permutation), permutation


def jigsaw_unshuffle(shuffled: Tensor, permutation: Tensor) -> Tensor:
    """Puts the tiles shuffled by :func:`jigsaw_shuffle` back in place.

    Args:
        shuffled: (B, C, H, W) shuffled images.
        permutation: The (B, grid²) permutations :func:`jigsaw_shuffle` returned.

    Returns:
        The original images.

    Raises:
        TypeError, ValueError: As :func:`permute_tiles`.
    """
    shuffled = _check_images(shuffled, "jigsaw_unshuffle")
    grid = _check_permutation(shuffled, permutation, "jigsaw_unshuffle")
    inverse = _inverse_permutation(permutation.to(shuffled.device))
    return _permute_tiles(shuffled, grid, inverse)


_to_tensor: Any = None


#: PIL modes of one-channel images (gray, 16-bit, 32-bit int and float).
_GRAY_MODES = ("1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")


def _as_image_tensor(image: Any) -> Tensor:
    global _to_tensor
    if isinstance(image, Image):
        if image.mode not in ("RGB", "L"):
            # The datasets' conversion (16-bit scaled, alpha dropped, CMYK converted);
            # one-channel modes stay one channel (R = G = B, so "L" is exact).
            gray = image.mode in _GRAY_MODES
            image = to_rgb8(image)
            if gray:
                image = image.convert("L")
        if _to_tensor is None:
            from lightly.transforms.torchvision_v2_compatibility import (
                torchvision_transforms as T,
            )

            _to_tensor = T.ToTensor()
        return _to_tensor(image)
    if isinstance(image, Tensor):
        return image
    raise TypeError(
        f"expected a PIL image or a tensor (C, H, W), got {type(image).__name__}"
    )


def _check_grids(grids: Any) -> tuple[int, ...]:
    if isinstance(grids, int) and not isinstance(grids, bool):
        grids = (grids,)
    if not isinstance(grids, Sequence) or isinstance(grids, str) or not grids:
        raise ValueError(f"grids must be a non-empty sequence of ints, got {grids!r}")
    for grid in grids:
        if isinstance(grid, bool) or not isinstance(grid, int):
            raise TypeError(f"grids must be ints, got {type(grid).__name__} {grid!r}")
        if grid < 1:
            raise ValueError(f"every grid must be >= 1, got grids {tuple(grids)}")
    return tuple(grids)


class HierarchicalJigsaw:
    """Makes one jigsaw view per granularity of one image (FG-SSL's J_n, per sample).

    FG-SSL (Park and Ryu, arXiv:2308.05770) trains block k on J_{n_k}(a), the view a cut
    into an n_k × n_k grid with its tiles shuffled; the granularities of the authors'
    ISIC runs are (16, 8, 4), finest grid first (for the shallowest block). This is the
    per-sample form for a dataset's transform; in training, :func:`jigsaw_shuffle` on
    the batch on the GPU is far faster (see ``benchmarks/jigsaw.py``) and is what
    :class:`~lightly_derm.methods.FGSSL` does by default. Each grid gets its own
    permutation. Unlike :class:`lightly.transforms.Jigsaw` (PIRL crops), every view is
    a whole image of the input's size.

    Args:
        grids: The grids, one view each, in the order of the returned views.
        exclude_identity: Never return an unshuffled view.
        permutations: How the permutations are drawn: ``"uniform"``,
            ``"derangement"`` or ``"cycle"`` (PMG's and FG-SSL's), see
            :func:`random_tile_permutations`.
        return_permutations: Return ``(views, permutations)`` instead of ``views``;
            ``permutations[i]`` is the (grids[i]²,) int64 permutation of view i.
        generator: A ``torch.Generator`` that makes the views reproducible; ``None``
            uses torch's global generator (which the DataLoader seeds per worker).

    Input: a PIL image (8-bit gray or RGB as the datasets read files — 16-bit values
    scaled, alpha dropped, CMYK converted — then a float tensor in [0, 1] as
    ``ToTensor`` makes it: one channel for gray modes, three otherwise) or a tensor
    (C, H, W) of any dtype, or a batch (B, C, H, W) treated sample by sample.

    Raises:
        ValueError: At construction, for bad grids; at call, for a grid that does not
            divide the image's sides.

    Example:
        >>> import torch
        >>> from lightly_derm.transforms import HierarchicalJigsaw
        >>> jigsaw = HierarchicalJigsaw(grids=(16, 8, 4))
        >>> views = jigsaw(torch.rand(3, 64, 64))
        >>> [tuple(v.shape) for v in views]
        [(3, 64, 64), (3, 64, 64), (3, 64, 64)]
    """

    def __init__(
        self,
        grids: Sequence[int] = (16, 8, 4),
        exclude_identity: bool = False,
        return_permutations: bool = False,
        generator: torch.Generator | None = None,
        permutations: str = "uniform",
    ) -> None:
        self.grids = _check_grids(grids)
        if exclude_identity and 1 in self.grids:
            raise ValueError(
                f"exclude_identity needs every grid >= 2, got grids {self.grids}"
            )
        self.permutations = check_permutations(permutations, self.grids)
        self.exclude_identity = exclude_identity
        self.return_permutations = return_permutations
        self.generator = generator

    def __call__(
        self, image: Image | Tensor
    ) -> list[Tensor] | tuple[list[Tensor], list[Tensor]]:
        """Returns the jigsaw views (and permutations, if asked for) of ``image``."""
        tensor = _as_image_tensor(image)
        if tensor.ndim not in (3, 4):
            raise ValueError(
                "HierarchicalJigsaw expects an image (C, H, W) or a batch (B, C, H, W), "
                f"got shape {tuple(tensor.shape)}"
            )
        batch = tensor.unsqueeze(0) if tensor.ndim == 3 else tensor
        for grid in self.grids:
            check_grid(grid, batch.shape[-2], batch.shape[-1])
        views: list[Tensor] = []
        permutations: list[Tensor] = []
        for grid in self.grids:
            shuffled, perm = jigsaw_shuffle(
                batch,
                grid,
                self.generator,
                exclude_identity=self.exclude_identity,
                permutations=self.permutations,
            )
            views.append(shuffled[0] if tensor.ndim == 3 else shuffled)
            permutations.append(perm[0] if tensor.ndim == 3 else perm)
        if self.return_permutations:
            return views, permutations
        return views

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(grids={self.grids}, "
            f"exclude_identity={self.exclude_identity}, "
            f"permutations={self.permutations!r}, "
            f"return_permutations={self.return_permutations})"
        )
