"""The CPU side of GPU augmentation: each image once resized onto a fixed-size canvas.

Builds on Pillow's ``Image.resize`` (bilinear with antialiasing, as lightly's and
torchvision's PIL transforms resize) and torchvision's ``transforms.v2.functional.resize``
for tensors, and on :func:`~lightly_derm.transforms.to_rgb`. What it adds: a
deterministic, cheap per-image step whose output batches (every canvas has the same
shape), so that the random views are made later, for the whole batch, on the GPU
(:class:`~lightly_derm.transforms.gpu.GPUViewTransform`).

The image keeps its aspect ratio: its shorter side is resized to ``size``, the longer
side is centre-cropped to at most ``round(size · max_aspect)``, and it is placed in the
top-left corner of a square ``side × side`` uint8 canvas (``side = round(size ·
max_aspect)``) whose rest is zero. The image's own height and width travel with it, and
the random crops are drawn inside them, so the padding is never sampled.

Why the whole image and not a centre crop: RandomResizedCrop draws boxes over the whole
image. Why ``size`` ≈ 1.14 × the view size (256 for 224, the default): crops of the
full image are then down-scaled by at most ``size · max_aspect / view`` ≈ 1.5, where the
bilinear sampling of the GPU path stays close to torchvision's antialiased resize (see
:mod:`lightly_derm.transforms.gpu.geometry`), while small crops keep some detail.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from lightly_derm.transforms.rgb import to_rgb
from lightly_derm.utils.validation import check_int

__all__ = ["CanvasImage", "CanvasTransform", "default_canvas_size"]


def default_canvas_size(view_size: int) -> int:
    """``round(view_size · 256 / 224)``: ImageNet's resize-256-for-224 ratio."""
    return round(view_size * 256 / 224)


class CanvasImage(NamedTuple):
    """An image on a canvas, what :class:`CanvasTransform` returns.

    Attributes:
        image: (3, side, side) uint8, the image in the top-left corner.
        height: Rows of the canvas that hold the image.
        width: Columns of the canvas that hold the image.
        view_size: Side of the views the method makes from it (set by the transform,
            carried to the device so that the GPU views need no other configuration).
    """

    image: Tensor
    height: int
    width: int
    view_size: int


class CanvasTransform:
    """Image → :class:`CanvasImage`: resized once, padded to a fixed square, uint8.

    What ``SSLMethod.default_transform`` returns with ``augment="gpu"``. It is
    deterministic, so :class:`~lightly_derm.data.DecodedImageCache` can apply it once
    per image and keep the result.

    Args:
        view_size: Side of the views made on the device.
        size: The shorter side after resizing; default ``round(view_size · 256 / 224)``.
        max_aspect: Longest allowed side ratio; longer sides are centre-cropped (4/3
            keeps ISIC's 4:3 images whole).

    Raises:
        ValueError: A size is not a positive int, ``size`` < ``view_size`` or
            ``max_aspect`` < 1.

    Example:
        >>> from PIL import Image
        >>> from lightly_derm.transforms.gpu import CanvasTransform
        >>> canvas = CanvasTransform(view_size=64)(Image.new("RGB", (150, 100)))
        >>> tuple(canvas.image.shape), canvas.height, canvas.width
        ((3, 97, 97), 73, 97)
    """

    def __init__(
        self, view_size: int = 224, size: int | None = None, max_aspect: float = 4 / 3
    ) -> None:
        check_int("view_size", view_size)
        if size is None:
            size = default_canvas_size(view_size)
        check_int("size", size)
        if size < view_size:
            raise ValueError(
                f"size ({size}) must be at least view_size ({view_size}); smaller "
                "canvases lose detail that the views then up-sample"
            )
        if not max_aspect >= 1.0:
            raise ValueError(f"max_aspect must be >= 1, got {max_aspect}")
        self.view_size = view_size
        self.size = size
        self.max_aspect = float(max_aspect)
        self.side = round(size * self.max_aspect)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(view_size={self.view_size}, size={self.size}, "
            f"max_aspect={self.max_aspect:.4g})"
        )

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after resizing the shorter side to ``size`` (before cropping)."""
        if height <= width:
            return self.size, max(self.size, round(width * self.size / height))
        return max(self.size, round(height * self.size / width)), self.size

    def __call__(self, image: Any) -> CanvasImage:
        """Returns the :class:`CanvasImage` of a PIL image, tensor or array (any mode)."""
        rgb = to_rgb(image)
        if isinstance(rgb, Image.Image):
            width, height = rgb.size
            new_h, new_w = self.resized_shape(height, width)
            if (new_h, new_w) != (height, width):
                rgb = rgb.resize((new_w, new_h), Image.Resampling.BILINEAR)
            pixels = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)
        else:
            if rgb.is_floating_point():
                rgb = (rgb.clamp(0, 1) * 255).round().to(torch.uint8)
            height, width = rgb.shape[-2:]
            new_h, new_w = self.resized_shape(height, width)
            pixels = TF.resize(rgb, [new_h, new_w], antialias=True)
        keep_h, keep_w = min(new_h, self.side), min(new_w, self.side)
        top, left = (new_h - keep_h) // 2, (new_w - keep_w) // 2
        canvas = torch.zeros((3, self.side, self.side), dtype=torch.uint8)
        canvas[:, :keep_h, :keep_w] = pixels[
            :, top : top + keep_h, left : left + keep_w
        ]
        return CanvasImage(canvas, keep_h, keep_w, self.view_size)
