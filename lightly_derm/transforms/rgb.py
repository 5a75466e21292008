"""Any image to 3-channel RGB: PIL modes, tensors and arrays.

Builds on :func:`lightly_derm.data.image_io.to_rgb8` (PIL modes, including 16-bit and
CMYK, to 8-bit RGB with the same rules as the datasets) and torchvision's
``to_image``. lightly's view transforms expect PIL RGB (their ImageNet ``Normalize``
fails on one channel); this puts grayscale, RGBA, palette, 16-bit and CMYK images,
tensors and arrays into that form, and rejects what would silently give wrong pixels
(empty images, non-finite values, float images that are not in [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2

#: Float images may overshoot [0, 1] by this much (e.g. after bicubic resampling);
#: anything further out is 0…255 data or an already-normalised image.
FLOAT_RANGE_TOLERANCE = 0.5


def to_rgb(image: Any) -> Image.Image | Tensor:
    """Returns ``image`` with three channels, as a PIL RGB image or a (3, H, W) tensor.

    PIL images of any mode become 8-bit RGB as the datasets read them
    (:func:`~lightly_derm.data.image_io.to_rgb8`: 16-bit values are scaled, not clipped;
    alpha is dropped; CMYK and palettes are converted); tensors (H, W), (1, H, W) or
    (3, H, W) of dtype uint8 or float (values in [0, 1]) have a single channel
    repeated; NumPy arrays (H, W) or (H, W, C) become tensors first.

    Float tensors must be finite and lie in [0, 1]; values beyond
    [−0.5, 1.5] are an error (0…255 data in a float tensor, or an image that was
    normalised already), smaller overshoots are left to the transforms, which clamp.

    Raises:
        TypeError: Not an image, or a tensor of another dtype.
        ValueError: A tensor or array of another shape, an empty image, or a float
            image with non-finite values or values far outside [0, 1].

    Example:
        >>> import torch
        >>> from lightly_derm.transforms import to_rgb
        >>> to_rgb(torch.rand(1, 8, 8)).shape
        torch.Size([3, 8, 8])
    """
    if isinstance(image, Image.Image):
        if image.width < 1 or image.height < 1:
            raise ValueError(f"the image is empty: size {image.width}x{image.height}")
        if image.mode == "RGB":
            return image
        # The datasets' conversion rules (16-bit scaled, CMYK, alpha); imported here so
        # that ``import lightly_derm.transforms`` does not import the data package.
        from lightly_derm.data.image_io import to_rgb8

        return to_rgb8(image)
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise ValueError(
                f"an image array must be (H, W) or (H, W, C), got shape {image.shape}"
            )
        image = v2.functional.to_image(image).as_subclass(Tensor)
    if not isinstance(image, Tensor):
        raise TypeError(
            "the image must be a PIL image, a tensor (C, H, W) or a NumPy array, got "
            f"{type(image).__name__}"
        )
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise TypeError(
            f"an image tensor must be uint8 or floating point, got {image.dtype}"
        )
    if image.ndim == 2:
        image = image.unsqueeze(0)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"an image tensor must be (H, W), (1, H, W) or (3, H, W), got shape "
            f"{tuple(image.shape)}"
        )
    if image.shape[1] < 1 or image.shape[2] < 1:
        raise ValueError(f"the image is empty: shape {tuple(image.shape)}")
    if image.is_floating_point():
        _check_float_range(image)
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def _check_float_range(image: Tensor) -> None:
    low, high = (float(v) for v in torch.aminmax(image.detach()))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(
            "the float image has non-finite values (NaN or inf); an image must be finite"
        )
    if low < -FLOAT_RANGE_TOLERANCE or high > 1 + FLOAT_RANGE_TOLERANCE:
        raise ValueError(
            f"a float image must hold values in [0, 1], got [{low:g}, {high:g}]: "
            "divide 0…255 values by 255 (or pass a uint8 tensor), and apply the view "
            "transform before any normalisation"
        )


class RGBInput:
    """Wraps a transform so that it accepts any image :func:`to_rgb` accepts.

    Args:
        transform: The transform to call on the RGB image, e.g. lightly's
            ``SimCLRTransform``.

    Example:
        >>> from lightly.transforms import SimCLRTransform
        >>> from PIL import Image
        >>> from lightly_derm.transforms import RGBInput
        >>> views = RGBInput(SimCLRTransform(input_size=32))(Image.new("L", (40, 40)))
        >>> views[0].shape
        torch.Size([3, 32, 32])
    """

    def __init__(self, transform: Callable[[Any], Any]) -> None:
        self.transform = transform

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"

    def __call__(self, image: Any) -> Any:
        """Applies the transform to ``to_rgb(image)``."""
        return self.transform(to_rgb(image))
