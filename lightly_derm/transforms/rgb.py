"""Any image to 3-channel RGB: PIL modes, tensors and arrays.

Builds on PIL's ``Image.convert`` and torchvision's ``to_image``. lightly's view
transforms expect PIL RGB (their ImageNet ``Normalize`` fails on one channel); this
puts grayscale, RGBA, palette images, tensors and arrays into that form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2


def to_rgb(image: Any) -> Image.Image | Tensor:
    """Returns ``image`` with three channels, as a PIL RGB image or a (3, H, W) tensor.

    PIL images of any mode are converted with ``Image.convert("RGB")``; tensors
    (H, W), (1, H, W) or (3, H, W) of dtype uint8 or float (values in [0, 1]) have a
    single channel repeated; NumPy arrays (H, W) or (H, W, C) become tensors first.

    Raises:
        TypeError: Not an image, or a tensor of another dtype.
        ValueError: A tensor or array of another shape.
    """
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
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
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


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
