"""The standard image pipelines of the jobs: evaluation and fine-tuning.

Builds on torchvision transforms v2 and lightly's ``IMAGENET_NORMALIZE`` (the
normalisation every lightly-derm method trains with, so frozen features see images as in
pretraining).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torch import nn
from torch.utils.hooks import RemovableHandle
from torchvision.transforms import v2

from lightly_derm.data.synthetic_segmentation_datamodule import (
    SyntheticSegmentationTransform,  # re-exported: its home is lightly_derm.data
)
from lightly_derm.models.imagenet import input_normalization
from lightly_derm.transforms.rgb import to_rgb


def _normalize(normalize: Mapping[str, Sequence[float]] | None = None) -> v2.Normalize:
    normalize = normalize or IMAGENET_NORMALIZE
    return v2.Normalize(list(normalize["mean"]), list(normalize["std"]))


def renormalize_backbone_input(
    backbone: nn.Module, weights: object
) -> RemovableHandle | None:
    """Makes ``backbone`` see its ``weights``' input scaling on ImageNet-normalised images.

    The SSL methods' view transforms normalise with lightly's ``IMAGENET_NORMALIZE``.
    Weights that expect another scaling (:func:`~lightly_derm.models.input_normalization`,
    e.g. the TF-style ``[-1, 1]`` of ``"imagenet:efficientnet-lite0"``) get it by an
    exact per-channel affine map in a forward pre-hook of the backbone's first
    convolution (its stem, which every path through the backbone passes, also FG-SSL's
    stage reads). The state dict is unchanged. Returns the hook handle, or ``None``
    when the weights need the ImageNet normalisation.

    Example:
        >>> import torch
        >>> from lightly_derm.models import build_backbone
        >>> model = build_backbone("resnet18")
        >>> renormalize_backbone_input(model, None) is None
        True
    """
    target = input_normalization(weights)
    if list(target["mean"]) == list(IMAGENET_NORMALIZE["mean"]) and list(
        target["std"]
    ) == list(IMAGENET_NORMALIZE["std"]):
        return None
    stem = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
    if stem is None:
        raise ValueError(
            f"cannot rescale the input of {type(backbone).__name__}: no convolution"
        )

    def column(values: Sequence[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64).view(1, -1, 1, 1)

    mean_in, std_in = (
        column(IMAGENET_NORMALIZE["mean"]),
        column(IMAGENET_NORMALIZE["std"]),
    )
    mean_out, std_out = column(target["mean"]), column(target["std"])
    scale = std_in / std_out
    shift = (mean_in - mean_out) / std_out

    cache: dict[
        tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]
    ] = {}

    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        key = (x.device, x.dtype)
        if key not in cache:  # one copy per device and dtype, not one per step
            cache[key] = (scale.to(x), shift.to(x))
        a, b = cache[key]
        return (x * a + b, *args[1:])

    return stem.register_forward_pre_hook(hook)


def eval_transform(
    input_size: int, normalize: Mapping[str, Sequence[float]] | None = None
) -> v2.Compose:
    """Deterministic: RGB, resize the shorter side, centre crop, tensor, normalisation.

    ``normalize``: ``{"mean", "std"}`` for [0, 1] images (default: ImageNet's; the
    backbone weights' own from :func:`~lightly_derm.models.input_normalization`).

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


__all__ = [
    "SyntheticSegmentationTransform",
    "eval_transform",
    "finetune_transform",
    "renormalize_backbone_input",
]
