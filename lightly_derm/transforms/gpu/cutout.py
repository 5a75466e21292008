"""Batched Cutout: square holes at per-image random positions.

The batched form of :class:`~lightly_derm.transforms.Cutout` (DeVries & Taylor,
"Improved Regularization of Convolutional Neural Networks with Cutout",
arXiv:1708.04552): the same holes — squares of side ``length`` whose centres are uniform
over the pixel grid, clipped at the border, possibly overlapping — drawn for all images
at once on their device and applied with one masked fill.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightly_derm.transforms.gpu._common import check_images, rand

__all__ = ["cutout", "cutout_mask", "sample_cutout"]


def sample_cutout(
    n: int,
    height: int,
    width: int,
    num_holes: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Hole centres (n, num_holes, 2) as int64 (row, column), uniform over the pixels."""
    u = rand((n, num_holes, 2), generator, torch.device(device))
    rows = torch.floor(u[..., 0] * height).clamp_(max=height - 1)
    cols = torch.floor(u[..., 1] * width).clamp_(max=width - 1)
    return torch.stack([rows, cols], dim=-1).to(torch.long)


def cutout_mask(centres: Tensor, length: int, height: int, width: int) -> Tensor:
    """(N, H, W) bool: pixels within [c − ⌊L/2⌋, c + ⌊L/2⌋) of any centre in both axes."""
    half = length // 2
    rows = torch.arange(height, device=centres.device)
    cols = torch.arange(width, device=centres.device)
    cy = centres[..., 0:1]  # (N, holes, 1)
    cx = centres[..., 1:2]
    in_rows = (rows >= cy - half) & (rows < cy + half)  # (N, holes, H)
    in_cols = (cols >= cx - half) & (cols < cx + half)  # (N, holes, W)
    mask = torch.zeros(
        centres.shape[0], height, width, dtype=torch.bool, device=centres.device
    )
    for hole in range(centres.shape[1]):
        mask |= in_rows[:, hole, :, None] & in_cols[:, hole, None, :]
    return mask


def cutout(images: Tensor, centres: Tensor, length: int, value: float = 0.0) -> Tensor:
    """Sets the holes around ``centres`` (N, holes, 2) of side ``length`` to ``value``.

    Returns a new tensor of the images' dtype; equals
    :class:`~lightly_derm.transforms.Cutout` per image with those centres.

    Example:
        >>> import torch
        >>> x = torch.ones(2, 3, 16, 16)
        >>> out = cutout(x, torch.tensor([[[8, 8]], [[0, 0]]]), length=4)
        >>> int((out[0, 0] == 0).sum()), int((out[1, 0] == 0).sum())
        (16, 4)
    """
    check_images(images)
    n, _, height, width = images.shape
    if centres.ndim != 3 or centres.shape[0] != n or centres.shape[2] != 2:
        raise ValueError(
            f"centres must be ({n}, holes, 2) (row, column), got {tuple(centres.shape)}"
        )
    if length <= 0 or centres.shape[1] == 0:
        return images.clone()
    mask = cutout_mask(centres.to(images.device), length, height, width)
    return images.masked_fill(mask[:, None], value)
