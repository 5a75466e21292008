"""DermaMNIST as a zip of JPEG files with a ``labels.csv``, read without extracting.

Builds on :mod:`zipfile` and :func:`~lightly_derm.data.load_image`. The layout is the
third-party JPEG export of DermaMNIST (HAM10000 at 28×28; Tschandl et al., Scientific
Data 5:180161, 2018; Yang et al., MedMNIST v2, Scientific Data 10:41, 2023):

- ``dermamnist_jpg.zip`` with ``images/DermaMNIST_{split}_{NNNNN}.jpg`` (10,015 files),
- ``labels.csv`` beside it: ``image_id,dx,lesion_id``; the image of a row is
  ``images/<image_id>.jpg``, ``dx`` is the HAM10000 diagnosis code, and MedMNIST's label
  index is ``dx``'s position in ``akiec, bcc, bkl, df, mel, nv, vasc``.

The JPEGs are lossy copies of the official uint8 arrays: close, not identical, to
:class:`~lightly_derm.data.MedMNISTDataset` on ``dermamnist.npz``.
"""

from __future__ import annotations

import csv
import os
import re
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from lightly_derm.data.image_file_dataset import describe_files, load_or_next
from lightly_derm.data.image_io import UnreadableImageError, load_image
from lightly_derm.data.medmnist import DERMAMNIST_CLASSES, SPLITS
from lightly_derm.errors import DataError

#: The zip's name in the export folder.
ZIP_NAME = "dermamnist_jpg.zip"
_MEMBER = re.compile(r"^images/DermaMNIST_(train|val|test)_\d+\.jpg$")


def is_dermamnist_jpeg_zip(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a zip holding ``images/DermaMNIST_<split>_<n>.jpg`` files."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(_MEMBER.match(name) for name in archive.namelist()[:50])
    except (OSError, zipfile.BadZipFile):
        return False


class DermaMNISTJPEGDataset(Dataset[tuple[Any, int, str]]):
    """One split of the DermaMNIST JPEG export; items ``(image, target, filename)``.

    Images are read from the zip on demand. The zip is opened lazily, once per process:
    a dataset handed to ``DataLoader`` workers carries only paths, and each worker opens
    its own handle, so it is safe with ``fork`` and ``spawn`` and in DDP.

    Args:
        root: The export folder (holding ``dermamnist_jpg.zip`` and ``labels.csv``) or
            the zip itself (``labels.csv`` beside it).
        split: ``"train"`` (7,007 images), ``"val"`` (1,003), ``"test"`` (2,005) or
            ``"all"`` (10,015).
        transform: Applied to the PIL RGB image (28×28); ``None`` yields the PIL image.
        labels: The labels CSV, if not ``labels.csv`` beside the zip.
        strict: Make a corrupt member an error instead of replacing it.

    A member that cannot be decoded (or that the zip holds corrupt) is replaced by the
    next readable one with a warning naming it — as a corrupt file of a folder is
    (:class:`~lightly_derm.data.ImageFileDataset`) — and ``strict=True`` raises
    :class:`~lightly_derm.data.UnreadableImageError` instead.

    Attributes:
        targets: (N,) int64 MedMNIST label indices.
        classes: ``["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]``.
        image_ids: The ``image_id`` of every item, in index order.

    Raises:
        FileNotFoundError: The zip or the labels CSV does not exist.
        DataError: (a ``ValueError``) An unknown ``dx``, missing columns, a duplicated
            id (naming both lines), or CSV rows without an image in the zip (the
            message names a few).
        ValueError: Unknown split.

    Example:
        >>> from lightly_derm.data import DermaMNISTJPEGDataset
        >>> dataset = DermaMNISTJPEGDataset("/data/dermamnist-jpg", split="val")  # doctest: +SKIP
        >>> len(dataset), dataset[0][0].size  # doctest: +SKIP
        (1003, (28, 28))
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
        labels: str | os.PathLike[str] | None = None,
        strict: bool = False,
    ) -> None:
        root_path = Path(root)
        if not root_path.exists():
            raise FileNotFoundError(f"DermaMNIST export not found: {root_path}")
        self.zip_path = root_path / ZIP_NAME if root_path.is_dir() else root_path
        if not self.zip_path.is_file():
            raise FileNotFoundError(f"{ZIP_NAME} not found in {root_path}")
        labels_path = (
            Path(labels) if labels is not None else self.zip_path.parent / "labels.csv"
        )
        if not labels_path.is_file():
            raise FileNotFoundError(f"DermaMNIST labels CSV not found: {labels_path}")
        if split not in (*SPLITS, "all"):
            raise ValueError(
                f"split must be one of {', '.join((*SPLITS, 'all'))}, got {split!r}"
            )
        if transform is not None and not callable(transform):
            raise TypeError(
                f"transform must be callable or None, got {type(transform).__name__}"
            )
        lookup = {name: k for k, name in enumerate(DERMAMNIST_CLASSES)}
        ids: list[str] = []
        targets: list[int] = []
        with open(labels_path, newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            columns = reader.fieldnames or []
            if "image_id" not in columns or "dx" not in columns:
                raise DataError(
                    f"{labels_path} must have the columns image_id and dx, has {columns}"
                )
            prefix = f"DermaMNIST_{split}_" if split != "all" else "DermaMNIST_"
            first_line: dict[str, int] = {}
            line = 1
            for row in reader:
                line = reader.line_num
                image_id = (row["image_id"] or "").strip()
                if not image_id.startswith(prefix):
                    continue
                if image_id in first_line:
                    raise DataError(
                        f"{labels_path} line {line}: image id {image_id!r} appears "
                        f"again (first on line {first_line[image_id]}); each image "
                        "needs one label"
                    )
                first_line[image_id] = line
                dx = (row["dx"] or "").strip().lower()
                if dx not in lookup:
                    raise DataError(
                        f"{labels_path} line {line} ({image_id}): unknown dx {dx!r}; "
                        f"DermaMNIST classes are {', '.join(DERMAMNIST_CLASSES)}"
                    )
                ids.append(image_id)
                targets.append(lookup[dx])
        if not ids:
            raise DataError(f"{labels_path} lists no image of split {split!r}")
        order = sorted(range(len(ids)), key=lambda i: _sort_key(ids[i]))
        self.image_ids = [ids[i] for i in order]
        self.targets: np.ndarray = np.asarray(
            [targets[i] for i in order], dtype=np.int64
        )
        self.members = [f"images/{image_id}.jpg" for image_id in self.image_ids]
        with zipfile.ZipFile(self.zip_path) as archive:
            names = set(archive.namelist())
        missing = [m for m in self.members if m not in names]
        if missing:
            raise DataError(
                f"{len(missing)} images listed in {labels_path} are not in {self.zip_path}: "
                f"{describe_files(missing)}"
            )
        self.classes = list(DERMAMNIST_CLASSES)
        self.split = split
        self.transform = transform
        self.strict = strict
        self._bad: set[int] = set()
        self._archive: zipfile.ZipFile | None = None
        self._archive_pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_archive"] = None
        state["_archive_pid"] = None
        return state

    def _zip(self) -> zipfile.ZipFile:
        pid = os.getpid()
        if self._archive is None or self._archive_pid != pid:
            self._archive = zipfile.ZipFile(self.zip_path)
            self._archive_pid = pid
        return self._archive

    def __len__(self) -> int:
        return len(self.members)

    @property
    def num_classes(self) -> int:
        """The number of classes (7)."""
        return len(self.classes)

    def get_filenames(self) -> list[str]:
        """The zip member names, ``images/DermaMNIST_<split>_<n>.jpg``."""
        return list(self.members)

    def load(self, index: int) -> Image.Image:
        """The image of item ``index`` as PIL RGB, without transform or substitution.

        Raises:
            UnreadableImageError: The member cannot be decoded, or the zip holds it
                corrupt (a CRC or compression error); the message names both.
        """
        member = self.members[index]
        name = f"{self.zip_path}:{member}"
        try:
            data = self._zip().read(member)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise UnreadableImageError(
                f"cannot read image {name}: {type(exc).__name__}: {exc}"
            ) from exc
        return load_image(data, name=name)

    def __getitem__(self, index: int) -> tuple[Any, int, str]:
        """``(transform(image), target, filename)``; ``filename`` is the zip member.

        A corrupt member is replaced by the next readable one with a warning naming
        it, as a corrupt file of a folder dataset is (``strict``: raises).
        """
        i, image = load_or_next(
            index, len(self), self.load, self._bad, self.strict, f" in {self.zip_path}"
        )
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[i]), self.members[i]

    def __repr__(self) -> str:
        return (
            f"DermaMNISTJPEGDataset(zip={str(self.zip_path)!r}, split={self.split!r}, "
            f"images={len(self)}, classes={self.classes}, transform={self.transform!r})"
        )


def _sort_key(image_id: str) -> tuple[int, int]:
    # train < val < test, then by the number: the MedMNIST array order.
    parts = image_id.split("_")
    split_rank = SPLITS.index(parts[1]) if len(parts) > 2 and parts[1] in SPLITS else 3
    number = int(parts[-1]) if parts[-1].isdigit() else -1
    return split_rank, number
