"""ISIC classification data: the rows of a ground-truth CSV with their images.

Builds on :func:`~lightly_derm.data.read_labels_csv` (ISIC 2016–2019 and generic
formats) and :class:`~lightly_derm.data.ImageFileDataset` (items ``(transform(image),
target, filename)`` as lightly's ``LightlyDataset``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from lightly_derm.data.image_file_dataset import (
    CheckMode,
    ImageFileDataset,
    describe_files,
)
from lightly_derm.data.image_folder import EXCLUDE_PATTERNS, find_image_files
from lightly_derm.data.image_io import IMAGE_EXTENSIONS
from lightly_derm.data.label_csv import LabelTable, normalize_id, read_labels_csv
from lightly_derm.errors import DataError


class ISICClassificationDataset(ImageFileDataset):
    r"""The images a label CSV lists, with the CSV's targets and classes.

    One item per CSV row, in CSV order (rows without an image are skipped, see below).
    Each id is found under ``images_root``, recursively, by file name without extension
    (``ISIC_0000000`` → ``images/ISIC_0000000.jpg``; an id with a folder part, as a
    generic CSV may have, is matched as a relative path first). ISIC segmentation masks
    and superpixel maps (``*_segmentation.*``, ``*_superpixels.*``) are never taken as
    images.

    Ids without an image are skipped with **one** warning that counts them and names the
    first few — the usual case of an official CSV (2,000 rows in ISIC 2017) next to a
    subset of the images; ``strict=True`` raises instead. None found at all is always an
    error. Unreadable images are skipped as in
    :class:`~lightly_derm.data.ImageFileDataset`.

    Args:
        images_root: The folder holding the images (subfolders are searched).
        csv: The label CSV (see :func:`~lightly_derm.data.read_labels_csv` for the
            formats) or a :class:`~lightly_derm.data.LabelTable`.
        transform: Applied to each PIL RGB image; ``None`` yields the PIL image.
        task: ``None`` for all classes, or one class name for a one-vs-rest binary task
            (``"melanoma"`` = ISIC 2017 Part 3a, ``"seborrheic_keratosis"`` = 3b).
        strict: Make missing and unreadable images errors.
        check: File check at construction: ``"header"``, ``"full"`` or ``"none"``.
        decode_size: Decode JPEGs at reduced size with the shorter side at least this.
        extensions: Image file extensions to look for.

    Attributes:
        format: The CSV format detected (``"isic2017"``, ``"generic"``, …).
        missing_ids: The CSV ids that have no image.

    Raises:
        FileNotFoundError: ``images_root`` or ``csv`` does not exist.
        DataError: (a ``ValueError``) A bad CSV, an id matching two images, two ids
            naming one image (``X`` and ``sub/X``), naming the CSV lines.
        ValueError: No image for any id, or (``strict``) an id without image.

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "images").mkdir()
        >>> for i in range(2):
        ...     Image.new("RGB", (32, 32), "sienna").save(root / f"images/ISIC_000000{i}.jpg")
        >>> _ = (root / "gt.csv").write_text(
        ...     "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
        ...     "ISIC_0000000,0,1,0,0,0,0,0\nISIC_0000001,1,0,0,0,0,0,0\n")
        >>> dataset = ISICClassificationDataset(root / "images", root / "gt.csv")
        >>> dataset.format, dataset.targets.tolist(), dataset.classes[:2]
        ('isic2018', [1, 0], ['MEL', 'NV'])
    """

    def __init__(
        self,
        images_root: str | os.PathLike[str],
        csv: str | os.PathLike[str] | LabelTable,
        transform: Callable[[Image.Image], Any] | None = None,
        task: str | None = None,
        strict: bool = False,
        check: CheckMode = "header",
        decode_size: int | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        root = Path(images_root)
        table = csv if isinstance(csv, LabelTable) else read_labels_csv(csv, task=task)
        files = find_image_files(root, extensions, EXCLUDE_PATTERNS)
        by_path: dict[str, str] = {}
        by_stem: dict[str, list[str]] = {}
        for file in files:
            by_path[normalize_id(file)] = file
            by_stem.setdefault(Path(file).stem, []).append(file)
        chosen: list[str] = []
        targets: list[int] = []
        missing: list[str] = []
        row_of: dict[str, int] = {}  # image file -> the CSV row that took it
        for i, (image_id, target) in enumerate(
            zip(table.ids, table.targets.tolist(), strict=True)
        ):
            rel = by_path.get(image_id)
            if rel is None:
                candidates = by_stem.get(Path(image_id).name, [])
                if len(candidates) > 1:
                    raise DataError(
                        f"{table.where(i)}: image id {image_id!r} matches several files "
                        f"under {root}: {describe_files(candidates)}"
                    )
                rel = candidates[0] if candidates else None
            if rel is None:
                missing.append(image_id)
                continue
            if rel in row_of:
                # e.g. ids "X" and "sub/X": one image would be in twice, two labels
                first = row_of[rel]
                raise DataError(
                    f"{table.where(i)}: image id {image_id!r} names the same image "
                    f"{rel} as id {table.ids[first]!r} ({table.where(first)}); each "
                    "image needs one row"
                )
            row_of[rel] = i
            chosen.append(rel)
            targets.append(target)
        source = table.path or "the labels"
        if not chosen:
            raise DataError(
                f"none of the {len(table)} image ids in {source} has an image under {root} "
                f"(looked for {', '.join(extensions)}; first ids: {describe_files(table.ids)}; "
                f"{len(files)} images found there"
                + (f", e.g. {describe_files(files)}" if files else "")
                + ")"
            )
        if missing:
            message = (
                f"{len(missing)} of {len(table)} image ids in {source} have no image under "
                f"{root}: {describe_files(missing)}"
            )
            if strict:
                raise DataError(message)
            warnings.warn(message + "; skipped", UserWarning, stacklevel=2)
        self.format = table.format
        self.missing_ids = missing
        super().__init__(
            chosen,
            targets=targets,
            root=root,
            classes=table.classes,
            transform=transform,
            strict=strict,
            check=check,
            decode_size=decode_size,
        )
