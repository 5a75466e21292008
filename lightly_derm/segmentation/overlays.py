"""Image / ground truth / prediction panels for looking at lesion segmentations.

Builds on :func:`torchvision.utils.draw_segmentation_masks` and
:func:`torchvision.utils.make_grid`; the result goes to TensorBoard's ``add_image`` or
to a PNG file (:func:`save_overlays`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torch import Tensor
from torchvision.utils import draw_segmentation_masks, make_grid

#: Colours of the ground truth and the prediction.
GROUND_TRUTH_COLOR = (0, 200, 0)
PREDICTION_COLOR = (230, 0, 0)


def render_overlays(
    images: Tensor,
    targets: Tensor,
    predictions: Tensor,
    mean: Sequence[float] | None = IMAGENET_NORMALIZE["mean"],
    std: Sequence[float] | None = IMAGENET_NORMALIZE["std"],
    alpha: float = 0.45,
    padding: int = 2,
) -> Tensor:
    """One row per image: the image, the ground truth over it, the prediction over it.

    Args:
        images: Normalised images (B, C, H, W), C = 1 or 3.
        targets: Ground-truth masks (B, 1, H, W), {0, 1}.
        predictions: Predicted masks or probabilities (B, 1, H, W); > 0.5 is lesion.
        mean: The per-channel mean the images were normalised with (``None``: images
            are in [0, 1] already).
        std: The per-channel standard deviation.
        alpha: Opacity of the masks.
        padding: Pixels between panels.

    Returns:
        A uint8 image (3, H', W') of B rows and 3 columns.

    Example:
        >>> import torch
        >>> from lightly_derm.segmentation.overlays import render_overlays
        >>> grid = render_overlays(torch.randn(2, 3, 32, 32), torch.ones(2, 1, 32, 32),
        ...                        torch.zeros(2, 1, 32, 32))
        >>> grid.shape, grid.dtype
        (torch.Size([3, 70, 104]), torch.uint8)
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be (B, 1 or 3, H, W), got shape {tuple(images.shape)}"
        )
    expected = (images.shape[0], 1, *images.shape[2:])
    for name, mask in (("targets", targets), ("predictions", predictions)):
        if tuple(mask.shape) != expected:
            raise ValueError(
                f"{name} must be {expected} to match the images, got {tuple(mask.shape)}"
            )
    pictures = images.detach().float().cpu()
    if mean is not None and std is not None:
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        if pictures.shape[1] == 1:
            m, s = m[:, :1], s[:, :1]
        pictures = pictures * s + m
    pictures = (pictures.clamp(0, 1) * 255).round().to(torch.uint8)
    if pictures.shape[1] == 1:
        pictures = pictures.expand(-1, 3, -1, -1)
    panels = []
    for picture, target, prediction in zip(
        pictures,
        targets.detach().cpu(),
        predictions.detach().float().cpu(),
        strict=True,
    ):
        panels.append(picture)
        panels.append(
            draw_segmentation_masks(
                picture, target[0] > 0.5, alpha=alpha, colors=GROUND_TRUTH_COLOR
            )
        )
        panels.append(
            draw_segmentation_masks(
                picture, prediction[0] > 0.5, alpha=alpha, colors=PREDICTION_COLOR
            )
        )
    return make_grid(panels, nrow=3, padding=padding, pad_value=255)


def save_overlays(grid: Tensor, path: str | Path) -> Path:
    """Writes a uint8 (3, H, W) image from :func:`render_overlays` as a PNG file.

    Returns:
        The path written (parent folders are created).
    """
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).contiguous().numpy()).save(path)
    return path
