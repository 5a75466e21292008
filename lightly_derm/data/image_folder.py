"""A folder of images, searched recursively, with optional labels.

Builds on :class:`~lightly_derm.data.ImageFileDataset` (items ``(transform(image),
target, filename)`` as lightly's ``LightlyDataset``) and on torchvision's
``ImageFolder`` convention for class-per-folder layouts.
"""

from __future__ import annotations

import fnmatch
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
from lightly_derm.data.image_io import IMAGE_EXTENSIONS
from lightly_derm.data.label_csv import LabelTable, normalize_id, read_labels_csv

#: File-name patterns left out of image folders by default: ISIC segmentation masks
#: (``ISIC_0000000_segmentation.png``, 2017's ``_Segmentation``) and the superpixel
#: maps of the ISIC 2017 training data (``ISIC_0000000_superpixels.png``).
EXCLUDE_PATTERNS: tuple[str, ...] = ("*_segmentation.*", "*_superpixels.*")


def find_image_files(
    root: str | os.PathLike[str],
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    exclude: Sequence[str] = EXCLUDE_PATTERNS,
) -> list[str]:
    """All image files under ``root``, recursively, as sorted POSIX relative paths.

    Hidden files and folders (names starting with ``.``) are skipped, symbolic links to
    folders are followed.

    Args:
        root: The folder.
        extensions: File extensions to keep (case-insensitive, with the dot).
        exclude: File-name glob patterns to leave out (case-insensitive).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is not a folder.
    """
    root_path = Path(root)
    if not root_path.exists():
        raise FileNotFoundError(f"image folder not found: {root_path}")
    if not root_path.is_dir():
        raise NotADirectoryError(f"not a folder: {root_path}")
    exts = tuple(
        e.lower() if e.startswith(".") else "." + e.lower() for e in extensions
    )
    patterns = [p.lower() for p in exclude]
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root_path, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root_path)
        for name in filenames:
            lower = name.lower()
            if name.startswith(".") or not lower.endswith(exts):
                continue
            if any(fnmatch.fnmatchcase(lower, p) for p in patterns):
                continue
            rel = name if rel_dir == "." else os.path.join(rel_dir, name)
            found.append(Path(rel).as_posix())
    return sorted(found)


def is_class_folder_layout(files: Sequence[str]) -> bool:
    """Whether every file lies exactly one folder deep, in at least two folders."""
    parts = [f.split("/") for f in files]
    return (
        bool(parts)
        and all(len(p) == 2 for p in parts)
        and len({p[0] for p in parts}) >= 2
    )


class ImageFolderDataset(ImageFileDataset):
    """All images under a folder, recursively; items ``(image, target, filename)``.

    Targets, in order of precedence:

    1. ``labels`` given (a label CSV path — ISIC 2016–2019 ground truth or generic, see
       :func:`~lightly_derm.data.read_labels_csv` — or a
       :class:`~lightly_derm.data.LabelTable`): each image is looked up by its relative
       path without extension, then by its file name without extension. Images the CSV
       does not list keep target ``-1`` (every image stays, for pretraining), with one
       warning that counts them; ``strict=True`` makes that an error. For a dataset of
       exactly the CSV's rows use :class:`~lightly_derm.data.ISICClassificationDataset`.
    2. Class-per-folder layout (torchvision's ``ImageFolder``: ``root/<class>/<image>``):
       used when ``class_folders=True``, or, with ``class_folders=None`` (default), when
       every image lies exactly one folder below ``root`` in at least two folders. Classes
       are the sorted folder names.
    3. Otherwise every target is ``-1`` (unlabelled; lightly's ``LightlyDataset`` uses
       ``0`` for a flat folder).

    ``filename`` is the path relative to ``root``. ISIC segmentation masks and
    superpixel maps (``*_segmentation.*``, ``*_superpixels.*``) are left out by default
    (``exclude``). Unreadable files are
    skipped with one warning at construction (see
    :class:`~lightly_derm.data.ImageFileDataset`; ``strict=True`` raises).

    Args:
        root: The folder.
        transform: Applied to each PIL RGB image; ``None`` yields the PIL image.
        labels: A label CSV path or a :class:`~lightly_derm.data.LabelTable`.
        strict: Make unreadable images and images missing from ``labels`` errors.
        extensions: File extensions to read (case-insensitive).
        exclude: File-name glob patterns to leave out (case-insensitive).
        class_folders: ``True``/``False`` to force or forbid class-per-folder targets,
            ``None`` to detect.
        check: File check at construction: ``"header"``, ``"full"`` or ``"none"``.
        decode_size: Decode JPEGs at reduced size with the shorter side at least this.
        task: With ``labels``: one class name for a one-vs-rest binary task.

    Raises:
        FileNotFoundError: ``root`` (or the labels CSV) does not exist.
        ValueError: No image with one of ``extensions`` under ``root`` (the message names
            the folder and the extensions), or a bad labels CSV.

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("nevus/a.jpg", "nevus/b.jpg", "melanoma/c.jpg"):
        ...     (root / name).parent.mkdir(exist_ok=True)
        ...     Image.new("RGB", (32, 32), "sienna").save(root / name)
        >>> dataset = ImageFolderDataset(root)
        >>> len(dataset), dataset.classes, dataset[0][1:]
        (3, ['melanoma', 'nevus'], (0, 'melanoma/c.jpg'))
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: Callable[[Image.Image], Any] | None = None,
        labels: str | os.PathLike[str] | LabelTable | None = None,
        strict: bool = False,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        exclude: Sequence[str] = EXCLUDE_PATTERNS,
        class_folders: bool | None = None,
        check: CheckMode = "header",
        decode_size: int | None = None,
        task: str | None = None,
    ) -> None:
        root_path = Path(root)
        files = find_image_files(root_path, extensions, exclude)
        if not files:
            raise ValueError(
                f"no images found in {root_path} (searched recursively for "
                f"{', '.join(extensions)})"
            )
        classes: list[str] = []
        targets: list[int]
        if labels is not None:
            table = (
                labels
                if isinstance(labels, LabelTable)
                else read_labels_csv(labels, task=task)
            )
            classes = list(table.classes)
            targets = []
            unlisted = []
            for rel in files:
                target = table.get(normalize_id(rel))
                if target is None:
                    target = table.get(Path(rel).stem)
                if target is None:
                    unlisted.append(rel)
                    target = -1
                targets.append(target)
            source = table.path or "the labels"
            if unlisted and len(unlisted) == len(files):
                raise ValueError(
                    f"none of the {len(files)} images in {root_path} is listed in "
                    f"{source} (first images: {describe_files(files)}; first ids: "
                    f"{describe_files(table.ids)})"
                )
            if unlisted:
                message = (
                    f"{len(unlisted)} of {len(files)} images in {root_path} are not in "
                    f"{source}: {describe_files(unlisted)}"
                )
                if strict:
                    raise ValueError(message)
                warnings.warn(
                    message + "; they get target -1 (unlabelled)",
                    UserWarning,
                    stacklevel=2,
                )
        elif class_folders or (class_folders is None and is_class_folder_layout(files)):
            folder_of = [f.split("/")[0] if "/" in f else "" for f in files]
            if "" in folder_of:
                raise ValueError(
                    f"class_folders=True but {root_path} has images outside class folders: "
                    f"{describe_files([f for f in files if '/' not in f])}"
                )
            classes = sorted(set(folder_of))
            lookup = {c: k for k, c in enumerate(classes)}
            targets = [lookup[c] for c in folder_of]
        else:
            targets = [-1] * len(files)
        super().__init__(
            files,
            targets=targets,
            root=root_path,
            classes=classes,
            transform=transform,
            strict=strict,
            check=check,
            decode_size=decode_size,
        )
