"""Any image to 3-channel RGB: PIL modes, tensors and arrays.

The one home of colour conversion: :func:`to_rgb8` (PIL images of any mode to 8-bit
RGB; the datasets read every file through it) and :func:`to_rgb` (PIL images, tensors
and arrays; builds on :func:`to_rgb8` and torchvision's ``to_image``). lightly's view
transforms expect PIL RGB (their ImageNet ``Normalize`` fails on one channel); this
puts grayscale, RGBA, palette, 16-bit and CMYK images, tensors and arrays into that
form, and rejects what would silently give wrong pixels (empty images, non-finite
values, float images that are not in [0, 1]).

:func:`to_rgb8` builds on Pillow's ``convert``, whose ``convert("RGB")`` clips 16-bit
grayscale (``I;16``) at 255, which turns most 16-bit images white; here 16-bit values
are scaled to 8 bit. The rules, by PIL mode:

============================  =========================================================
``RGB``                       kept as it is
``L``, ``1``, ``P``           ``convert("RGB")`` (gray replicated, palette expanded)
``RGBA``, ``LA``, ``PA``,     alpha dropped, colour channels kept as stored (what
``RGBa``, ``RGBX``            lightly's and torchvision's RGB loaders do)
``CMYK``, ``YCbCr``, ``HSV``  Pillow's ``convert("RGB")`` (CMYK without ICC profile)
``I;16``, ``I;16B/L/N``       ``round(v / 257)`` (0…65535 → 0…255), gray → RGB
``I`` (32-bit int)            taken as 16-bit data: clipped to 0…65535, then as above
``F`` (32-bit float)          taken as 0…1: clipped, ``round(255 v)``, gray → RGB
============================  =========================================================

16-bit-per-channel colour PNGs are decoded by Pillow as ``RGB``/``RGBA`` from their
high bytes already, so they follow the ``RGB``/``RGBA`` rows. EXIF orientation is not
applied (as in lightly and torchvision), so images stay aligned with their masks.
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

_BLOCK_PIXELS = 1 << 20  # pixels per block of the 16-bit conversion
# round(v / 257) for every 16-bit value: 0 -> 0, 257 -> 1, 65535 -> 255.
_LUT16 = ((np.arange(65536, dtype=np.uint32) * 2 + 257) // 514).astype(np.uint8)

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La", "RGBX")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")

#: Float images may overshoot [0, 1] by this much (e.g. after bicubic resampling);
#: anything further out is 0…255 data or an already-normalised image.
FLOAT_RANGE_TOLERANCE = 0.5


def to_rgb8(image: Image.Image) -> Image.Image:
    """Converts a PIL image of any mode to 8-bit RGB (see the module docstring).

    Args:
        image: A loaded PIL image.

    Returns:
        The image in mode ``RGB`` (the same object when it already is).

    Raises:
        ValueError: Pillow cannot convert the mode to RGB.

    Example:
        >>> import numpy as np
        >>> from PIL import Image
        >>> gray16 = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
        >>> gray16.mode, to_rgb8(gray16).getpixel((0, 0))
        ('I;16', (255, 255, 255))
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        array = np.asarray(image)
        rgb = np.empty((*array.shape[:2], 3), dtype=np.uint8)
        # Row blocks of about a million pixels: bounded temporaries at any image size
        # (whole-image int64 intermediates took 3.9 GB for a 12000x12000 PNG).
        rows = max(1, _BLOCK_PIXELS // max(1, array.shape[1]))
        for start in range(0, array.shape[0], rows):
            block = array[start : start + rows]
            if mode == "F":
                gray8 = np.rint(np.clip(block, 0.0, 1.0) * 255.0).astype(np.uint8)
            else:
                gray8 = _LUT16[np.clip(block, 0, 65535).astype(np.uint16)]
            rgb[start : start + rows] = gray8[..., None]
        return Image.fromarray(rgb)
    if mode in _ALPHA_MODES and mode not in ("RGBA", "RGBX"):
        # LA/PA/La: drop alpha via the alpha-carrying RGB form, then drop alpha.
        image = image.convert("RGBA")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ValueError(
            f"cannot convert an image of mode {mode!r} to RGB: {exc}"
        ) from exc


def to_rgb(image: Any) -> Image.Image | Tensor:
    """Returns ``image`` with three channels, as a PIL RGB image or a (3, H, W) tensor.

    PIL images of any mode become 8-bit RGB as the datasets read them
    (:func:`to_rgb8`: 16-bit values are scaled, not clipped;
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
