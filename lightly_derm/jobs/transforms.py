"""The standard image pipelines of the jobs: evaluation, fine-tuning, synthetic segmentation.

Builds on torchvision transforms v2 and lightly's ``IMAGENET_NORMALIZE`` (the
normalisation every lightly-derm method trains with, so frozen features see images as in
pretraining).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torchvision import tv_tensors
from torchvision.transforms import v2

from lightly_derm.transforms.rgb import to_rgb


def _normalize() -> v2.Normalize:
    return v2.Normalize(IMAGENET_NORMALIZE["mean"], IMAGENET_NORMALIZE["std"])


def eval_transform(input_size: int) -> v2.Compose:
    """Deterministic: RGB, resize the shorter side, centre crop, tensor, ImageNet normalisation.

    Example:
        >>> from PIL import Image
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
            _normalize(),
        ]
    )


def finetune_transform(input_size: int, min_scale: float = 0.5) -> v2.Compose:
    """Light augmentation for supervised fine-tuning of dermoscopy images.

    RGB, ``RandomResizedCrop(input_size, scale=(min_scale, 1))``, horizontal and vertical
    flips (lesions have no up or down), tensor, ImageNet normalisation.
    """
    return v2.Compose(
        [
            to_rgb,
            v2.ToImage(),
            v2.RandomResizedCrop(input_size, scale=(min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            _normalize(),
        ]
    )


class SyntheticSegmentationTransform:
    """Maps a :class:`~lightly_derm.data.SyntheticLesions` mask item to a segmentation sample.

    ``{"image": tv_tensors.Image uint8, "mask": tv_tensors.Mask, "filename", ...}`` →
    ``{"image": (3, H, W) float32 normalised, "label": (1, H, W) float32 in {0, 1},
    "id": filename}``, the format of
    :func:`~lightly_derm.data.isic_segmentation_transforms` that
    :class:`~lightly_derm.segmentation.LesionSegmentation` trains on. With ``train``,
    image and mask are flipped and rotated by multiples of 90° together (torchvision v2
    moves tv_tensors jointly).

    Args:
        train: Augment.
    """

    def __init__(self, train: bool = True) -> None:
        self.train = train
        steps: list[Any] = []
        if train:
            steps += [
                v2.RandomHorizontalFlip(),
                v2.RandomVerticalFlip(),
                v2.RandomApply([v2.RandomRotation((90, 90))], p=0.5),
            ]
        steps.append(
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)
        )
        self.transform = v2.Compose(steps)
        self.normalize = _normalize()

    def __call__(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """Transforms one item."""
        out = self.transform({"image": item["image"], "mask": item["mask"]})
        image = self.normalize(out["image"]).as_subclass(torch.Tensor)
        label = out["mask"].as_subclass(torch.Tensor).to(torch.float32)
        return {"image": image, "label": label, "id": item.get("filename", "")}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(train={self.train})"
