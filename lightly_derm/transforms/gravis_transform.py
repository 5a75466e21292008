"""GraVIS views: K independently augmented views of every image.

Builds on lightly's :class:`~lightly.transforms.multi_view_transform.MultiViewTransform`,
its rotation helper and ``IMAGENET_NORMALIZE``, and torchvision transforms v2 (which
take PIL images and tensors alike). What it adds: the GraVIS authors' augmentation list
(``data.py`` of github.com/Luchixiang/GraVIS) including Cutout, and input conversion
from grayscale, RGBA, tensors and arrays to RGB.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightly.transforms.multi_view_transform import MultiViewTransform
from lightly.transforms.rotation import random_rotation_transform
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torch import Tensor
from torchvision.transforms import v2

from lightly_derm.transforms.cutout import Cutout
from lightly_derm.transforms.rgb import to_rgb
from lightly_derm.utils.validation import check_int


class GraVISViewTransform:
    """One GraVIS view: the authors' augmentations, in their order.

    RandomResizedCrop → RandomRotation → ColorJitter → RandomGrayscale → GaussianBlur →
    RandomHorizontalFlip (→ RandomVerticalFlip, off by default) → tensor → Normalize →
    Cutout. The defaults are the authors' (Zhou et al., "GraVIS: Grouping Augmented
    Views from Independent Sources for Dermatology Analysis", IEEE TMI 2023,
    arXiv:2301.04410); argument names follow lightly's ``SimCLRViewTransform``.

    Input: a PIL image of any mode, a tensor (C, H, W) with C ∈ {1, 3} (uint8, or float
    in [0, 1]) or a NumPy array; see :func:`~lightly_derm.transforms.to_rgb`. Output: a float32 tensor
    (3, input_size, input_size).

    Args:
        input_size: Side of the output views in pixels.
        min_scale: Smallest crop area of RandomResizedCrop (relative to the image).
        rr_prob: Probability of the random rotation.
        rr_degrees: Rotation range: ``d`` means [−d, d], ``(lo, hi)`` that range,
            ``None`` a rotation by 90° (lightly's convention).
        cj_prob: Probability of colour jitter (the authors always apply it).
        cj_strength: Multiplies ``cj_bright``, ``cj_contrast``, ``cj_sat`` and
            ``cj_hue``.
        cj_bright: Brightness jitter.
        cj_contrast: Contrast jitter.
        cj_sat: Saturation jitter.
        cj_hue: Hue jitter.
        random_gray_scale: Probability of conversion to grayscale (kept 3-channel).
        gaussian_blur: Probability of Gaussian blur.
        sigmas: Range of the blur's standard deviation in pixels.
        blur_kernel_size: Odd kernel size of the blur; ``None`` takes 2·⌈3·σ_max⌉ + 1
            (13 for σ_max = 2), which covers ±3σ as PIL's blur in the authors' code
            does.
        hf_prob: Probability of a horizontal flip.
        vf_prob: Probability of a vertical flip (not in the authors' list).
        normalize: ``{"mean": ..., "std": ...}`` for Normalize, or ``None`` for none.
        cutout_holes: Cutout squares per view (0 disables Cutout).
        cutout_length: Side of a Cutout square in pixels; ``None`` scales the authors'
            32 px at 224 px to ``input_size`` (round(32 · input_size / 224)).
        cutout_value: Value of the Cutout pixels (0 after normalisation, as the authors).

    Example:
        >>> from PIL import Image
        >>> from lightly_derm.transforms import GraVISViewTransform
        >>> view = GraVISViewTransform(input_size=64)(Image.new("L", (100, 80)))
        >>> view.shape
        torch.Size([3, 64, 64])
    """

    def __init__(
        self,
        input_size: int = 224,
        min_scale: float = 0.2,
        rr_prob: float = 1.0,
        rr_degrees: float | tuple[float, float] | None = 10.0,
        cj_prob: float = 1.0,
        cj_strength: float = 1.0,
        cj_bright: float = 0.4,
        cj_contrast: float = 0.4,
        cj_sat: float = 0.4,
        cj_hue: float = 0.1,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 0.5,
        sigmas: tuple[float, float] = (0.1, 2.0),
        blur_kernel_size: int | None = None,
        hf_prob: float = 0.5,
        vf_prob: float = 0.0,
        normalize: dict[str, list[float]] | None = IMAGENET_NORMALIZE,
        cutout_holes: int = 3,
        cutout_length: int | None = None,
        cutout_value: float = 0.0,
    ) -> None:
        check_int("input_size", input_size)
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
        if not 0 < sigmas[0] <= sigmas[1]:
            raise ValueError(f"sigmas must be 0 < min <= max, got {sigmas}")
        if blur_kernel_size is None:
            blur_kernel_size = 2 * math.ceil(3 * sigmas[1]) + 1
        if blur_kernel_size < 1 or blur_kernel_size % 2 == 0:
            raise ValueError(
                f"blur_kernel_size must be a positive odd int, got {blur_kernel_size}"
            )
        if cutout_length is None:
            cutout_length = round(32 * input_size / 224)
        color_jitter = v2.ColorJitter(
            brightness=cj_strength * cj_bright,
            contrast=cj_strength * cj_contrast,
            saturation=cj_strength * cj_sat,
            hue=cj_strength * cj_hue,
        )
        transforms: list[Any] = [
            v2.RandomResizedCrop(
                size=input_size, scale=(min_scale, 1.0), antialias=True
            ),
            random_rotation_transform(rr_prob=rr_prob, rr_degrees=rr_degrees),
            v2.RandomApply([color_jitter], p=cj_prob),
            v2.RandomGrayscale(p=random_gray_scale),
            v2.RandomApply(
                [v2.GaussianBlur(kernel_size=blur_kernel_size, sigma=sigmas)],
                p=gaussian_blur,
            ),
            v2.RandomHorizontalFlip(p=hf_prob),
            v2.RandomVerticalFlip(p=vf_prob),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
        ]
        if normalize:
            transforms.append(
                v2.Normalize(mean=normalize["mean"], std=normalize["std"])
            )
        transforms.append(
            Cutout(num_holes=cutout_holes, length=cutout_length, value=cutout_value)
        )
        self.transform = v2.Compose(transforms)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform})"

    def __call__(self, image: Any) -> Tensor:
        """Returns one augmented view (3, input_size, input_size) of ``image``."""
        view: Tensor = self.transform(to_rgb(image))
        return view.as_subclass(Tensor)


class GraVISTransform(MultiViewTransform):
    """K independently augmented GraVIS views of an image.

    A lightly :class:`~lightly.transforms.multi_view_transform.MultiViewTransform` of
    ``num_views`` :class:`GraVISViewTransform` views (every keyword argument but
    ``num_views`` is passed on; see there). Each view draws its own random parameters.
    Zhou et al., "GraVIS: Grouping Augmented Views from Independent Sources for
    Dermatology Analysis", IEEE TMI 2023, arXiv:2301.04410: the paper's README trains
    with 20 views, its code with 2; the default 4 is lightly-derm's compromise (20 views
    cost 10× a SimCLR step).

    Input: a PIL image of any mode, a tensor (C, H, W) with C ∈ {1, 3} or a NumPy
    array. Output: a list of ``num_views`` float32 tensors (3, input_size, input_size),
    what :class:`~lightly_derm.data.GroupedViewCollate` and lightly's
    ``MultiViewCollate`` take.

    Args:
        num_views: K, the number of views per image.
        input_size: Side of the views in pixels.
        **kwargs: Augmentation parameters of :class:`GraVISViewTransform`.

    Raises:
        ValueError: ``num_views`` < 1, or an invalid augmentation parameter.

    Example:
        >>> from PIL import Image
        >>> from lightly_derm.transforms import GraVISTransform
        >>> views = GraVISTransform(num_views=4, input_size=64)(Image.new("RGB", (90, 90)))
        >>> len(views), views[0].shape
        (4, torch.Size([3, 64, 64]))
    """

    def __init__(
        self,
        num_views: int = 4,
        input_size: int = 224,
        min_scale: float = 0.2,
        rr_prob: float = 1.0,
        rr_degrees: float | tuple[float, float] | None = 10.0,
        cj_prob: float = 1.0,
        cj_strength: float = 1.0,
        cj_bright: float = 0.4,
        cj_contrast: float = 0.4,
        cj_sat: float = 0.4,
        cj_hue: float = 0.1,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 0.5,
        sigmas: tuple[float, float] = (0.1, 2.0),
        blur_kernel_size: int | None = None,
        hf_prob: float = 0.5,
        vf_prob: float = 0.0,
        normalize: dict[str, list[float]] | None = IMAGENET_NORMALIZE,
        cutout_holes: int = 3,
        cutout_length: int | None = None,
        cutout_value: float = 0.0,
    ) -> None:
        check_int("num_views", num_views)
        view_transform = GraVISViewTransform(
            input_size=input_size,
            min_scale=min_scale,
            rr_prob=rr_prob,
            rr_degrees=rr_degrees,
            cj_prob=cj_prob,
            cj_strength=cj_strength,
            cj_bright=cj_bright,
            cj_contrast=cj_contrast,
            cj_sat=cj_sat,
            cj_hue=cj_hue,
            random_gray_scale=random_gray_scale,
            gaussian_blur=gaussian_blur,
            sigmas=sigmas,
            blur_kernel_size=blur_kernel_size,
            hf_prob=hf_prob,
            vf_prob=vf_prob,
            normalize=normalize,
            cutout_holes=cutout_holes,
            cutout_length=cutout_length,
            cutout_value=cutout_value,
        )
        super().__init__(transforms=[view_transform] * num_views)
        self.num_views = num_views

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_views={self.num_views}, {self.transforms[0]})"
        )

    def __call__(self, image: Any) -> list[Tensor]:  # type: ignore[override]
        """Returns ``num_views`` augmented views of ``image``."""
        rgb = to_rgb(image)  # once, not per view
        return [transform(rgb) for transform in self.transforms]
