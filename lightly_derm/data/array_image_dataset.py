"""The shared part of the datasets that hold a whole split as one uint8 array.

Builds on :class:`torch.utils.data.Dataset` and PIL. Subclasses
(:class:`~lightly_derm.data.MedMNISTDataset`; the benchmarks' MNIST-format reader)
read their files into ``images``, ``targets``, ``classes`` and a filename prefix; this
base serves the items in the form every lightly-derm transform takes (PIL RGB).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from lightly_derm.transforms.rgb import to_rgb8

__all__ = ["ArrayImageDataset"]


class ArrayImageDataset(Dataset[tuple[Any, Any, str]]):
    """Items ``(transform(PIL RGB image), target, "<prefix><index:05d>")`` from arrays.

    Subclasses set ``images`` ((N, H, W) or (N, H, W, C) uint8), ``targets`` ((N,) or
    (N, K)), ``classes``, ``transform`` and ``_prefix`` in their constructor, and may
    override :meth:`target` (the default is ``int(targets[index])``).

    Example:
        >>> import numpy as np
        >>> from lightly_derm.data.array_image_dataset import ArrayImageDataset
        >>> class Tiny(ArrayImageDataset):
        ...     def __init__(self):
        ...         self.images = np.zeros((2, 4, 4), dtype=np.uint8)
        ...         self.targets = np.array([0, 1])
        ...         self.classes, self.transform, self._prefix = ["a", "b"], None, "t_"
        >>> image, target, name = Tiny()[1]
        >>> image.mode, target, name
        ('RGB', 1, 't_00001')
    """

    images: np.ndarray
    targets: np.ndarray
    classes: list[str]
    transform: Callable[[Any], Any] | None
    _prefix: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.classes)

    def get_filenames(self) -> list[str]:
        """``"<prefix><index:05d>"`` for every item."""
        return [f"{self._prefix}{i:05d}" for i in range(len(self))]

    def target(self, index: int) -> Any:
        """The target of item ``index`` (an int)."""
        return int(self.targets[index])

    def __getitem__(self, index: int) -> tuple[Any, Any, str]:
        """``(transform(image), target, filename)``."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for {n} images")
        index %= n
        image = to_rgb8(Image.fromarray(self.images[index]))
        if self.transform is not None:
            image = self.transform(image)
        return image, self.target(index), f"{self._prefix}{index:05d}"
