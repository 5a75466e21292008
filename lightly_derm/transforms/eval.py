"""The standard image pipelines of the jobs: evaluation and fine-tuning.

(Moved here from ``lightly_derm.jobs.transforms``, which forwards for one release.)

Builds on torchvision transforms v2 and lightly's ``IMAGENET_NORMALIZE`` (the
normalisation every lightly-derm method trains with, so frozen features see images as in
pretraining).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torchvision.transforms import v2

from lightly_derm.transforms.rgb import to_rgb


def _normalize(normalize: Mapping[str, Sequence[float]] | None = None) -> v2.Normalize:
    normalize = normalize or IMAGENET_NORMALIZE
    return v2.Normalize(list(normalize["mean"]), list(normalize["std"]))


def eval_transform(
    input_size: int, normalize: Mapping[str, Sequence[float]] | None = None
) -> v2.Compose:
    """Deterministic: RGB, resize the shorter side, centre crop, tensor, normalisation.

    ``normalize``: ``{"mean", "std"}`` for [0, 1] images (default: ImageNet's; the
    backbone weights' own from :func:`~lightly_derm.models.input_normalization`).

    Example:
        >>> from PIL import Image
        >>> from lightly_derm.transforms import eval_transform
        >>> eval_transform(64)(Image.new("RGB", (100, 80))).shape
        torch.Size([3, 64, 64])
    """
    return v2.Compose(
        [
            to_rgb,
            v2.ToImage(),
            v2.Resize(input_size, antialias=True),
            v2.CenterCrop(input_size),
            v2.ToDtype(torch.float32, scale=True),
            _normalize(normalize),
        ]
    )


def finetune_transform(
    input_size: int,
    min_scale: float = 0.5,
    normalize: Mapping[str, Sequence[float]] | None = None,
) -> v2.Compose:
    """Light augmentation for supervised fine-tuning of dermoscopy images.

    RGB, ``RandomResizedCrop(input_size, scale=(min_scale, 1))``, horizontal and vertical
    flips (lesions have no up or down), tensor, normalisation (``normalize``, default
    ImageNet's).
    """
    return v2.Compose(
        [
            to_rgb,
            v2.ToImage(),
            v2.RandomResizedCrop(input_size, scale=(min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            _normalize(normalize),
        ]
    )


__all__ = ["eval_transform", "finetune_transform"]
