"""MNIST-format (IDX) files: MNIST, Fashion-MNIST, KMNIST and the like, gzipped or not.

Builds on :mod:`gzip` and :func:`numpy.frombuffer`. The IDX format (LeCun et al.,
http://yann.lecun.com/exdb/mnist/) is a 4-byte magic number — two zero bytes, a type
code, the number of dimensions — then one big-endian int32 per dimension and the data,
big-endian. torchvision's MNIST readers expect the uncompressed files of its own download
folder; the Debian packages (``dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist``)
and the original mirrors ship ``.gz`` files, read here as they are. Items follow lightly's
``LightlyDataset`` contract ``(transform(image), target, filename)``.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lightly_derm.data.array_image_dataset import ArrayImageDataset

#: Fashion-MNIST's class names (Xiao, Rasul, Vollgraf, arXiv:1708.07747), label order.
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)

#: IDX type code → big-endian NumPy dtype.
IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

#: File-name prefix of each split in the MNIST layout.
IDX_SPLITS: dict[str, str] = {"train": "train", "test": "t10k"}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Reads an IDX file (``.gz`` or uncompressed) into a NumPy array.

    Args:
        path: The file, e.g. ``train-images-idx3-ubyte.gz``. Gzip is detected from the
            content, not the name.

    Returns:
        The array with the file's shape, in native byte order (``uint8`` for images and
        labels of the MNIST family).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is not IDX (bad magic number or type code), or its size
            does not match the dimensions in its header (truncated or padded); the
            message names the file.

    Example:
        >>> import gzip, struct, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte.gz"
        >>> header = struct.pack(">BBBBi", 0, 0, 8, 1, 3)  # uint8, 1 dimension of 3
        >>> _ = path.write_bytes(gzip.compress(header + bytes([7, 2, 1])))
        >>> read_idx(path).tolist()
        [7, 2, 1]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path} is a damaged gzip file: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path} is not an IDX file: it must start with two zero bytes, a type code "
            f"and the number of dimensions, got {raw[:4].hex() or 'an empty file'}"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise ValueError(
            f"{path}: unknown IDX type code 0x{code:02x}; known: "
            + ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path}: the header announces {ndim} dimensions but the file has only "
            f"{len(raw)} bytes"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: the header says shape {shape} of {dtype.name} ({expected} bytes with "
            f"the header) but the file has {len(raw)} bytes (truncated or not IDX)"
        )
    array = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{stem} (or {stem}.gz) not found in {root}")


def is_idx_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding ``train-images-idx3-ubyte`` (or ``.gz``)."""
    folder = Path(path)
    return folder.is_dir() and any(
        (folder / f"train-images-idx3-ubyte{suffix}").is_file()
        for suffix in ("", ".gz")
    )


class IDXImageDataset(ArrayImageDataset):
    """One split of an MNIST-layout folder of IDX files; items ``(image, target, filename)``.

    The folder holds ``{train,t10k}-images-idx3-ubyte`` and ``{train,t10k}-labels-idx1-ubyte``,
    each optionally gzipped (the layout of MNIST, Fashion-MNIST, KMNIST and Debian's
    ``dataset-fashion-mnist``). The split is read into memory once (Fashion-MNIST train:
    47 MB of uint8), so worker processes share it. Images are yielded as PIL RGB (the
    gray channel repeated), the form every lightly-derm transform takes.

    Args:
        root: The folder.
        split: ``"train"`` or ``"test"`` (the ``t10k`` files). These sets have no
            validation split; hold one out of ``train``, e.g. with
            :func:`~lightly_derm.evaluation.stratified_subset`.
        transform: Applied to the PIL RGB image; ``None`` yields the PIL image.
        classes: The class names; default ``"0"`` … ``"9"`` (pass
            :data:`FASHION_MNIST_CLASSES` for Fashion-MNIST).

    Attributes:
        images: (N, H, W) uint8 array.
        targets: (N,) int64 array.
        classes: The class names.

    Raises:
        FileNotFoundError: The folder or one of the split's two files is missing.
        ValueError: Unknown split; a file is not IDX; images are not (N, H, W) uint8;
            the image and label counts differ; a label is outside ``classes``.

    Example:
        >>> from idx import FASHION_MNIST_CLASSES, IDXImageDataset
        >>> data = IDXImageDataset("/usr/share/datasets/fashion-mnist", "test",  # doctest: +SKIP
        ...                        classes=FASHION_MNIST_CLASSES)
        >>> len(data), data[0][0].size, data.classes[data[0][1]]  # doctest: +SKIP
        (10000, (28, 28), 'ankle boot')
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"IDX folder not found: {self.root}")
        if split not in IDX_SPLITS:
            raise ValueError(
                f"split must be one of {', '.join(IDX_SPLITS)} for an MNIST-layout "
                f"folder, got {split!r} (hold a validation set out of 'train')"
            )
        if transform is not None and not callable(transform):
            raise TypeError(
                f"transform must be callable or None, got {type(transform).__name__}"
            )
        prefix = IDX_SPLITS[split]
        images_path = _find(self.root, f"{prefix}-images-idx3-ubyte")
        labels_path = _find(self.root, f"{prefix}-labels-idx1-ubyte")
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"{images_path}: images must be (N, H, W) uint8, got {images.dtype} "
                f"{images.shape}"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{labels_path} holds labels of shape {labels.shape} but "
                f"{images_path} holds {images.shape[0]} images"
            )
        self.images = images
        self.targets: np.ndarray = labels.astype(np.int64)
        if classes is None:
            count = int(self.targets.max()) + 1 if self.targets.size else 0
            classes = [str(c) for c in range(count)]
        self.classes = list(classes)
        if self.targets.size and (
            self.targets.min() < 0 or self.targets.max() >= len(self.classes)
        ):
            raise ValueError(
                f"{labels_path}: labels range from {self.targets.min()} to "
                f"{self.targets.max()}, but there are {len(self.classes)} classes"
            )
        self.split = split
        self.transform = transform
        self._prefix = f"{prefix}_"

    def __repr__(self) -> str:
        return (
            f"IDXImageDataset(root={str(self.root)!r}, split={self.split!r}, "
            f"images={len(self)}, size={tuple(self.images.shape[1:])}, "
            f"classes={self.classes}, transform={self.transform!r})"
        )
