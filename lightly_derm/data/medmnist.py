"""MedMNIST ``.npz`` files (DermaMNIST and the other 2-D MedMNIST v2 / MedMNIST+ sets).

Builds on :func:`numpy.load` and the official MedMNIST file layout (Yang et al.,
"MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image
classification", Scientific Data 10:41, 2023): arrays ``{split}_images`` (N, H, W) or
(N, H, W, 3) uint8 and ``{split}_labels`` (N, 1) for ``split`` in ``train``, ``val``,
``test``. Items follow lightly's ``LightlyDataset`` contract ``(transform(image), target,
filename)`` without needing the ``medmnist`` package.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lightly_derm.data.array_image_dataset import ArrayImageDataset
from lightly_derm.data.label_csv import MAX_CLASS_INDEX
from lightly_derm.errors import DataError

#: DermaMNIST's class order (MedMNIST label index → HAM10000 ``dx`` code).
DERMAMNIST_CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

SPLITS: tuple[str, ...] = ("train", "val", "test")


class MedMNISTDataset(ArrayImageDataset):
    """One split of an official MedMNIST ``.npz`` file; items ``(image, target, filename)``.

    The split's arrays are read into memory once (28×28 DermaMNIST train: 16 MB; the
    224×224 MedMNIST+ file: 1.1 GB); worker processes share them. Images become PIL RGB
    (grayscale sets are replicated to three channels). Targets are ints from (N, 1)
    labels; multi-label sets (labels (N, K), e.g. ChestMNIST) yield (K,) int64 tensors.
    ``filename`` is ``"<file stem>_<split>_<index:05d>"``.

    Args:
        path: The ``.npz`` file (e.g. ``dermamnist.npz`` or ``dermamnist_224.npz``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        transform: Applied to the PIL RGB image; ``None`` yields the PIL image.
        classes: Class names; default the DermaMNIST names for a file whose name starts
            with ``dermamnist``, else ``"0"``, ``"1"``, ….

    Attributes:
        targets: (N,) int64 array, or (N, K) for multi-label sets.
        classes: The class names.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``split`` is not in the file (the message lists the splits found),
            or the arrays have the wrong shape or type.

    Example:
        >>> import tempfile, pathlib, numpy as np
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "dermamnist.npz"
        >>> rng = np.random.default_rng(0)
        >>> arrays = {f"{s}_images": rng.integers(0, 256, (4, 28, 28, 3), dtype=np.uint8)
        ...           for s in ("train", "val", "test")}
        >>> arrays.update({f"{s}_labels": np.array([[0], [4], [5], [5]])
        ...                for s in ("train", "val", "test")})
        >>> np.savez_compressed(path, **arrays)
        >>> dataset = MedMNISTDataset(path, split="val")
        >>> image, target, filename = dataset[1]
        >>> image.size, target, dataset.classes[target], filename
        ((28, 28), 4, 'mel', 'dermamnist_val_00001')
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"MedMNIST file not found: {self.path}")
        if transform is not None and not callable(transform):
            raise TypeError(
                f"transform must be callable or None, got {type(transform).__name__}"
            )
        try:
            archive = np.load(self.path, allow_pickle=False)
            with archive:
                keys = set(archive.files)
                found = [
                    s for s in SPLITS if f"{s}_images" in keys and f"{s}_labels" in keys
                ]
                if split not in found:
                    raise DataError(
                        f"split {split!r} is not in {self.path}: it has the splits "
                        f"{found} (arrays: {sorted(keys)}); a MedMNIST file has "
                        "train_images/train_labels, val_*, test_*"
                    )
                # Reading an array decompresses it: a corrupt member fails here.
                images = archive[f"{split}_images"]
                labels = archive[f"{split}_labels"]
        except DataError:
            raise
        except (
            OSError,
            ValueError,
            EOFError,
            zipfile.BadZipFile,
            zlib.error,
        ) as exc:
            raise DataError(
                f"cannot read {self.path} as an .npz file (corrupt or truncated?): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if (
            images.dtype != np.uint8
            or images.ndim not in (3, 4)
            or (images.ndim == 4 and images.shape[-1] not in (1, 3))
        ):
            raise DataError(
                f"{self.path}: {split}_images must be uint8 (N, H, W) or (N, H, W, 3), "
                f"got {images.dtype} {images.shape} (3-D MedMNIST volumes are not images)"
            )
        if labels.ndim == 1:
            labels = labels[:, None]
        if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
            raise DataError(
                f"{self.path}: {split}_labels must be (N, 1) or (N, K) with N = "
                f"{images.shape[0]}, got {labels.shape}"
            )
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        self.images = images
        self.split = split
        self.transform = transform
        self.multi_label = labels.shape[1] > 1
        self.targets: np.ndarray = (
            labels.astype(np.int64)
            if self.multi_label
            else labels[:, 0].astype(np.int64)
        )
        if classes is not None:
            self.classes = list(classes)
        elif self.path.name.lower().startswith("dermamnist"):
            self.classes = list(DERMAMNIST_CLASSES)
        else:
            count = labels.shape[1] if self.multi_label else int(labels.max()) + 1
            if count > MAX_CLASS_INDEX + 1:
                raise DataError(
                    f"{self.path}: {split}_labels reach {count - 1}, above "
                    f"{MAX_CLASS_INDEX}; labels are class indices 0 … K-1"
                )
            self.classes = [str(c) for c in range(count)]
        if (
            not self.multi_label
            and self.targets.size
            and (self.targets.min() < 0 or self.targets.max() >= len(self.classes))
        ):
            raise DataError(
                f"{self.path}: {split}_labels range from {self.targets.min()} to "
                f"{self.targets.max()}, but there are {len(self.classes)} classes"
            )
        self._prefix = f"{self.path.stem}_{split}_"

    def target(self, index: int) -> Any:
        """An int, or a (K,) int64 tensor for multi-label sets."""
        if self.multi_label:
            return torch.from_numpy(self.targets[index].copy())
        return int(self.targets[index])

    def __repr__(self) -> str:
        return (
            f"MedMNISTDataset(path={str(self.path)!r}, split={self.split!r}, "
            f"images={len(self)}, size={tuple(self.images.shape[1:3])}, "
            f"classes={self.classes}, transform={self.transform!r})"
        )
