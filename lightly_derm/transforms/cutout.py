"""Cutout: square holes set to a constant in a tensor image.

torchvision's ``RandomErasing`` erases one rectangle of random area and aspect ratio
inside the image; Cutout (DeVries & Taylor, "Improved Regularization of Convolutional
Neural Networks with Cutout", arXiv:1708.04552) erases fixed-size squares whose centres
are uniform over the image, so holes may be clipped by the border and may overlap. GraVIS
applies it after normalisation.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Cutout:
    """Sets ``num_holes`` squares of side ``length`` to ``value`` (after DeVries & Taylor).

    Each hole's centre (y, x) is drawn uniformly over the image; the square
    [y − length/2, y + length/2) × [x − length/2, x + length/2) is clipped to the image,
    exactly as the reference implementation. Random numbers come from torch's global
    generator, so DataLoader workers get distinct holes.

    Args:
        num_holes: Number of squares per image (0 disables the transform).
        length: Side of a square in pixels.
        value: The value written into the holes (0 = the mean colour after ImageNet
            normalisation).

    Raises:
        ValueError: A negative ``num_holes`` or ``length``.

    Example:
        >>> import torch
        >>> from lightly_derm.transforms import Cutout
        >>> image = Cutout(num_holes=3, length=8)(torch.rand(3, 32, 32))
        >>> image.shape
        torch.Size([3, 32, 32])
    """

    def __init__(self, num_holes: int = 3, length: int = 32, value: float = 0.0):
        if num_holes < 0 or length < 0:
            raise ValueError(
                f"num_holes and length must be >= 0, got num_holes={num_holes}, "
                f"length={length}"
            )
        self.num_holes = int(num_holes)
        self.length = int(length)
        self.value = float(value)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_holes={self.num_holes}, length={self.length}, "
            f"value={self.value})"
        )

    def __call__(self, image: Tensor) -> Tensor:
        """Returns a copy of ``image`` (…, H, W) with the holes filled."""
        if not isinstance(image, Tensor) or image.ndim < 2:
            raise TypeError(
                "Cutout needs a tensor image (..., H, W); put it after ToTensor, got "
                + (
                    f"shape {tuple(image.shape)}"
                    if isinstance(image, Tensor)
                    else type(image).__name__
                )
            )
        if self.num_holes == 0 or self.length == 0:
            return image
        height, width = image.shape[-2:]
        centre_y = torch.randint(height, (self.num_holes, 1))
        centre_x = torch.randint(width, (self.num_holes, 1))
        half = self.length // 2
        rows = torch.arange(height)
        cols = torch.arange(width)
        in_rows = (rows >= centre_y - half) & (rows < centre_y + half)  # (holes, H)
        in_cols = (cols >= centre_x - half) & (cols < centre_x + half)  # (holes, W)
        mask = (in_rows.unsqueeze(2) & in_cols.unsqueeze(1)).any(dim=0)
        return image.masked_fill(mask.to(image.device), self.value)
