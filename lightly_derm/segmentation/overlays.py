"""Image / ground truth / prediction panels for looking at lesion segmentations.

- :func:`render_overlays`: a plain uint8 grid (image, ground truth, prediction per
  row), built on :func:`torchvision.utils.draw_segmentation_masks` and
  :func:`torchvision.utils.make_grid`, for TensorBoard's ``add_image`` or a PNG file
  (:func:`save_overlays`);
- :func:`plot_encoder_comparison`: a labelled figure comparing several encoders (e.g.
  SSL-pretrained against random init) side by side on the same images, each prediction
  with its Dice, built on matplotlib's object-oriented API (no pyplot state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torch import Tensor
from torchvision.utils import draw_segmentation_masks, make_grid

#: Colours of the ground truth and the prediction.
GROUND_TRUTH_COLOR = (0, 200, 0)
PREDICTION_COLOR = (230, 0, 0)


def _denormalize(
    images: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
) -> Tensor:
    """Float images in [0, 1], (B, 3, H, W), on the CPU."""
    pictures = images.detach().float().cpu()
    if mean is not None and std is not None:
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        if pictures.shape[1] == 1:
            m, s = m[:, :1], s[:, :1]
        pictures = pictures * s + m
    if pictures.shape[1] == 1:
        pictures = pictures.expand(-1, 3, -1, -1)
    return pictures.clamp(0, 1)


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


def plot_encoder_comparison(
    images: Tensor,
    targets: Tensor,
    predictions: Mapping[str, Tensor],
    path: str | Path | None = None,
    title: str | None = None,
    image_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = IMAGENET_NORMALIZE["mean"],
    std: Sequence[float] | None = IMAGENET_NORMALIZE["std"],
    alpha: float = 0.45,
    panel_inches: float = 2.4,
) -> Any:
    """One figure comparing encoders on the same images: a row per image, a column each.

    Columns: the image, the ground truth over it (green), then one per encoder: its
    prediction over the image (red) with the ground truth's outline (green), titled with
    that image's Dice. The first row's titles name the columns and give each encoder's
    mean Dice over the images shown; a legend explains the colours. At the default
    ``panel_inches`` and 100 dpi a panel is 240 px wide, whatever the image size.

    Args:
        images: Normalised images (B, C, H, W), C = 1 or 3.
        targets: Ground-truth masks (B, 1, H, W), {0, 1}.
        predictions: Encoder name (column title, e.g. ``"SSL (gravis)"``,
            ``"random init"``) → predicted probabilities or masks (B, 1, H, W); > 0.5
            is lesion. Columns follow the mapping's order.
        path: Where to save a PNG (100 dpi; parent folders are created); ``None``: not
            saved.
        title: The figure title; default names the encoders.
        image_names: One row label per image (e.g. ISIC ids); default none.
        mean: The per-channel mean the images were normalised with (``None``: images
            are in [0, 1] already).
        std: The per-channel standard deviation.
        alpha: Opacity of the filled masks.
        panel_inches: Side of one panel in inches.

    Returns:
        The :class:`matplotlib.figure.Figure`; ``figure.dice`` holds the Dice shown, a
        dict of encoder name → (B,) float32 tensor
        (:func:`~lightly_derm.segmentation.binary_dice_jaccard`, 1 when prediction and
        ground truth are both empty).

    Raises:
        ValueError: No encoder, or a shape that does not match the images.

    Example:
        >>> import torch
        >>> from lightly_derm.segmentation import plot_encoder_comparison
        >>> target = torch.zeros(2, 1, 32, 32)
        >>> target[:, :, 8:24, 8:24] = 1
        >>> figure = plot_encoder_comparison(
        ...     torch.randn(2, 3, 32, 32), target,
        ...     {"SSL": target, "random init": torch.zeros(2, 1, 32, 32)})
        >>> [round(float(d), 2) for d in figure.dice["random init"]]
        [0.0, 0.0]
        >>> [a.get_title().splitlines() for a in figure.axes[2:4]]
        [['SSL', 'Dice 1.00 (mean 1.00)'], ['random init', 'Dice 0.00 (mean 0.00)']]
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from lightly_derm.segmentation.metrics import binary_dice_jaccard

    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be (B, 1 or 3, H, W), got shape {tuple(images.shape)}"
        )
    if not predictions:
        raise ValueError("predictions must name at least one encoder")
    expected = (images.shape[0], 1, *images.shape[2:])
    masks = {
        "targets": targets,
        **{f"predictions[{k!r}]": v for k, v in predictions.items()},
    }
    for name, mask in masks.items():
        if tuple(mask.shape) != expected:
            raise ValueError(
                f"{name} must be {expected} to match the images, got {tuple(mask.shape)}"
            )
    if image_names is not None and len(image_names) != images.shape[0]:
        raise ValueError(
            f"image_names has {len(image_names)} names for {images.shape[0]} images"
        )
    pictures = _denormalize(images, mean, std).permute(0, 2, 3, 1).numpy()
    truth = targets.detach().float().cpu() > 0.5
    predicted = {k: v.detach().float().cpu() > 0.5 for k, v in predictions.items()}
    dice = {k: binary_dice_jaccard(v, truth)[0] for k, v in predicted.items()}
    rows, columns = images.shape[0], 2 + len(predictions)
    figure = Figure(
        figsize=(panel_inches * columns, panel_inches * rows + 0.9),
        layout="constrained",
    )
    axes = figure.subplots(rows, columns, squeeze=False)
    green: Any = [c / 255 for c in GROUND_TRUTH_COLOR]
    red: Any = [c / 255 for c in PREDICTION_COLOR]

    def fill(axis: Any, mask: Tensor, colour: list[float]) -> None:
        layer = torch.zeros(*mask.shape, 4)
        layer[..., :3] = torch.tensor(colour)
        layer[..., 3] = mask.float() * alpha
        axis.imshow(layer.numpy(), interpolation="nearest")

    def outline(axis: Any, mask: Tensor) -> None:
        if bool(mask.any()) and not bool(mask.all()):
            axis.contour(
                mask.float().numpy(), levels=[0.5], colors=[green], linewidths=1.2
            )

    for r in range(rows):
        for c in range(columns):
            axis = axes[r, c]
            axis.imshow(pictures[r], interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
        fill(axes[r, 1], truth[r, 0], green)
        if image_names is not None:
            axes[r, 0].set_ylabel(str(image_names[r]), fontsize=8)
        for c, name in enumerate(predictions, start=2):
            fill(axes[r, c], predicted[name][r, 0], red)
            outline(axes[r, c], truth[r, 0])
            score = f"Dice {float(dice[name][r]):.2f}"
            if r == 0:
                score = f"{name}\n{score} (mean {float(dice[name].mean()):.2f})"
            axes[r, c].set_title(score, fontsize=9)
    axes[0, 0].set_title("image", fontsize=9)
    axes[0, 1].set_title("ground truth", fontsize=9)
    figure.suptitle(
        title or "Lesion segmentation: " + " vs. ".join(predictions), fontsize=11
    )
    figure.legend(  # type: ignore[call-overload]
        handles=[
            Patch(color=green, alpha=0.6, label="ground truth"),
            Line2D([], [], color=green, label="ground truth outline"),
            Patch(color=red, alpha=0.6, label="prediction (> 0.5)"),
        ],
        loc="outside lower center",
        ncols=3,
        fontsize=8,
        frameon=False,
    )
    figure.dice = dice  # type: ignore[attr-defined]
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
    return figure
