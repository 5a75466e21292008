"""Lesion segmentation scores: Dice, Jaccard and the ISIC 2017 thresholded Jaccard.

Builds on MONAI's cumulative metric protocol
(:class:`monai.metrics.CumulativeIterationMetric`: per-batch ``__call__``, buffers
gathered across DDP ranks in ``aggregate()``, ``reset()``), so the metric also works in
MONAI engines and handlers. The per-image scores are computed here for the whole batch
at once: MONAI's ``DiceMetric`` loops over the images of a batch in Python with a host
sync per image, which a GPU validation loop should not pay. They agree with
``DiceMetric``/``MeanIoU`` (``include_background=True``, ``ignore_empty=False``) on
binary masks.

ISIC 2017 Task 1 ranks by the *thresholded Jaccard index*: a per-image Jaccard below
0.65 counts as 0, then the mean over images (Codella et al., "Skin lesion analysis toward
melanoma detection: a challenge at ISBI 2017", arXiv 1710.05006).
"""

from __future__ import annotations

from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric
from torch import Tensor

#: The ISIC 2017 per-image Jaccard threshold.
ISIC2017_JACCARD_THRESHOLD = 0.65


def thresholded_jaccard(
    jaccard: Tensor, threshold: float = ISIC2017_JACCARD_THRESHOLD
) -> Tensor:
    """Per-image ISIC 2017 scores: the Jaccard index where it reaches ``threshold``, else 0.

    Args:
        jaccard: Per-image Jaccard indices, any shape. NaN stays NaN.
        threshold: Scores below it count as 0 (ISIC 2017: 0.65).

    Example:
        >>> import torch
        >>> from lightly_derm.segmentation import thresholded_jaccard
        >>> thresholded_jaccard(torch.tensor([0.9, 0.6, 0.65]))
        tensor([0.9000, 0.0000, 0.6500])
    """
    return torch.where(jaccard < threshold, torch.zeros_like(jaccard), jaccard)


def binary_dice_jaccard(
    prediction: Tensor, target: Tensor, empty_score: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Per-image Dice and Jaccard of binary masks, vectorised over the batch.

    Args:
        prediction: Binary masks (B, 1, H, W[, D]) (bool or {0, 1}).
        target: Ground-truth masks of the same shape.
        empty_score: The score of an image whose prediction and ground truth are both
            empty (MONAI's ``ignore_empty=False`` gives 1; ``nan`` leaves it out of
            ``nanmean``).

    Returns:
        Dice and Jaccard, each (B,) float32.

    Raises:
        ValueError: The shapes differ or are not (B, 1, ...).
    """
    if (
        prediction.shape != target.shape
        or prediction.ndim < 3
        or prediction.shape[1] != 1
    ):
        raise ValueError(
            "prediction and target must both be binary masks (B, 1, H, W[, D]) of one "
            f"shape, got {tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    p = prediction.flatten(1).bool()
    g = target.flatten(1) > 0.5
    intersection = (p & g).sum(1, dtype=torch.float32)
    sizes = p.sum(1, dtype=torch.float32) + g.sum(1, dtype=torch.float32)
    union = sizes - intersection
    empty = sizes == 0
    fill = torch.full_like(sizes, empty_score)
    dice = torch.where(empty, fill, 2 * intersection / sizes.clamp_min(1))
    jaccard = torch.where(empty, fill, intersection / union.clamp_min(1))
    return dice, jaccard


class LesionSegmentationMetric(CumulativeIterationMetric):
    """Accumulates per-image Dice, Jaccard and thresholded Jaccard of binary lesion masks.

    Call it on each batch of logits (or probabilities) and ground truth; ``aggregate()``
    gathers the per-image scores across DDP ranks and returns their means.

    Args:
        threshold: The ISIC 2017 per-image Jaccard threshold.
        logits: Whether predictions are logits (binarised at 0) rather than
            probabilities (binarised at 0.5). Boolean predictions are used as they are.
        empty_score: The score of an image whose prediction and ground truth are both
            empty (see :func:`binary_dice_jaccard`).

    Example:
        >>> import torch
        >>> from lightly_derm.segmentation import LesionSegmentationMetric
        >>> metric = LesionSegmentationMetric()
        >>> target = torch.zeros(2, 1, 8, 8); target[:, :, 2:6, 2:6] = 1
        >>> _ = metric(torch.where(target > 0, 5.0, -5.0), target)
        >>> {k: round(v.item(), 3) for k, v in metric.aggregate().items()}
        {'dice': 1.0, 'jaccard': 1.0, 'jaccard_thresholded': 1.0}
    """

    def __init__(
        self,
        threshold: float = ISIC2017_JACCARD_THRESHOLD,
        logits: bool = True,
        empty_score: float = 1.0,
    ) -> None:
        super().__init__()
        self.threshold = threshold
        self.logits = logits
        self.empty_score = empty_score

    def _compute_tensor(
        self, y_pred: Tensor, y: Tensor | None = None, **kwargs: Any
    ) -> Tensor:
        if y is None:
            raise ValueError("LesionSegmentationMetric needs the ground truth y")
        if y_pred.dtype == torch.bool:
            binary = y_pred
        else:
            binary = y_pred > (0.0 if self.logits else 0.5)
        dice, jaccard = binary_dice_jaccard(binary, y, self.empty_score)
        return torch.stack([dice, jaccard], dim=1)

    def per_image(self) -> dict[str, Tensor]:
        """The per-image scores gathered so far (N,), in the order they came."""
        buffer = self.get_buffer()
        if not isinstance(buffer, Tensor) or buffer.numel() == 0:
            empty = torch.zeros(0)
            return {"dice": empty, "jaccard": empty, "jaccard_thresholded": empty}
        jaccard = buffer[:, 1]
        return {
            "dice": buffer[:, 0],
            "jaccard": jaccard,
            "jaccard_thresholded": thresholded_jaccard(jaccard, self.threshold),
        }

    def aggregate(self) -> dict[str, Tensor]:  # type: ignore[override]
        """Mean ``dice``, ``jaccard`` and ``jaccard_thresholded`` over the images seen.

        NaN scores (``empty_score=nan``) are left out of the means.

        Raises:
            ValueError: No image has been seen since the last ``reset()``.
        """
        scores = self.per_image()
        if scores["dice"].numel() == 0:
            raise ValueError(
                "LesionSegmentationMetric.aggregate() before any batch was added"
            )
        return {name: values.nanmean() for name, values in scores.items()}
