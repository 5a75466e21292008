"""Collates :class:`~lightly_derm.transforms.gpu.CanvasImage` samples for GPU views.

Builds on the sample contract of lightly's datasets (``(image, target[, filename])``,
as :class:`~lightly_derm.data.GroupedViewCollate`). What it adds: the batch of
undecorated uint8 canvases that a method turns into views on its device
(``SSLMethod(augment="gpu")``), a fraction of the bytes of float views: one uint8
image instead of K float32 views per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from lightly_derm.data.grouped_view_collate import _targets_tensor
from lightly_derm.transforms.gpu.canvas import CanvasImage

__all__ = ["CanvasBatch", "CanvasCollate"]


class CanvasBatch(NamedTuple):
    """A batch of canvases: images to make views of on the device.

    Attributes:
        images: (B, 3, side, side) uint8 canvases, each image in the top-left corner.
        sizes: (B, 2) int64 (height, width) of every image on its canvas.
        targets: (B,) targets (-1 where unlabelled) or (B, …) tensor targets.
        filenames: File names, ``None`` where the dataset gives none.
        view_size: Side of the views to make.
    """

    images: Tensor
    sizes: Tensor
    targets: Tensor
    filenames: list[str | None]
    view_size: int

    @property
    def batch_size(self) -> int:
        """B, the number of images."""
        return int(self.images.shape[0])


class CanvasCollate:
    """Turns ``(CanvasImage, target[, filename])`` samples into a :class:`CanvasBatch`.

    What ``SSLMethod.default_collate`` returns with ``augment="gpu"``.

    Example:
        >>> from PIL import Image
        >>> from lightly_derm.data import CanvasCollate
        >>> from lightly_derm.transforms.gpu import CanvasTransform
        >>> transform = CanvasTransform(view_size=32)
        >>> samples = [(transform(Image.new("RGB", (60, 40))), 0, "a.png"),
        ...            (transform(Image.new("RGB", (40, 60))), 1, "b.png")]
        >>> batch = CanvasCollate()(samples)
        >>> tuple(batch.images.shape), batch.sizes.tolist()
        ((2, 3, 49, 49), [[37, 49], [49, 37]])
    """

    def __call__(self, samples: Sequence[Any]) -> CanvasBatch:
        """Collates samples; see the class docstring."""
        if not isinstance(samples, Sequence) or len(samples) == 0:
            raise ValueError("CanvasCollate needs a non-empty list of samples")
        images, sizes, targets, filenames = [], [], [], []
        view_size: int | None = None
        shape: tuple[int, ...] | None = None
        for i, sample in enumerate(samples):
            if not isinstance(sample, (tuple, list)) or len(sample) not in (2, 3):
                raise TypeError(
                    f"sample {i} must be (canvas, target) or (canvas, target, filename), "
                    f"got {type(sample).__name__}"
                )
            canvas = sample[0]
            if not isinstance(canvas, CanvasImage):
                raise TypeError(
                    f"sample {i}: expected a CanvasImage (from CanvasTransform, the "
                    f"default_transform of a method with augment='gpu'), got "
                    f"{type(canvas).__name__}"
                )
            if shape is None:
                shape, view_size = tuple(canvas.image.shape), canvas.view_size
            elif tuple(canvas.image.shape) != shape or canvas.view_size != view_size:
                raise ValueError(
                    f"all canvases need one shape and view size: sample 0 has {shape} "
                    f"and view_size {view_size}, sample {i} has "
                    f"{tuple(canvas.image.shape)} and {canvas.view_size}"
                )
            images.append(canvas.image)
            sizes.append((canvas.height, canvas.width))
            targets.append(sample[1])
            filenames.append(sample[2] if len(sample) == 3 else None)
        assert view_size is not None
        return CanvasBatch(
            torch.stack(images),
            torch.tensor(sizes, dtype=torch.long),
            _targets_tensor(targets),
            filenames,
            view_size,
        )
