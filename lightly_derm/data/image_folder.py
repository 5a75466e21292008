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
from dataclasses import dataclass, field
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
from lightly_derm.errors import DataError

#: File-name patterns left out of image folders by default: ISIC segmentation masks
#: (``ISIC_0000000_segmentation.png``, 2017's ``_Segmentation``) and the superpixel
#: maps of the ISIC 2017 training data (``ISIC_0000000_superpixels.png``).
EXCLUDE_PATTERNS: tuple[str, ...] = ("*_segmentation.*", "*_superpixels.*")


@dataclass(frozen=True)
class ImageFileScan:
    """What :func:`scan_image_files` found under a folder.

    Attributes:
        files: The image files as sorted POSIX paths relative to the folder, each real
            file once.
        skipped_links: Relative paths of the symbolic links not followed because they
            lead to a folder or an image already found (a link loop such as ``x -> .``,
            or a second name for the same files), sorted.
    """

    files: list[str]
    skipped_links: list[str] = field(default_factory=list)


def scan_image_files(
    root: str | os.PathLike[str],
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    exclude: Sequence[str] = EXCLUDE_PATTERNS,
) -> ImageFileScan:
    """All image files under ``root``, recursively, each real file once.

    Hidden files and folders (names starting with ``.``) are skipped. Symbolic links
    are followed unless they lead to a folder already searched or an image already
    found (identified by its resolved path): a link loop (``x -> .``) is not walked,
    and one image reached by two names is listed once, under the name that involves
    no link when there is one. Builds on :func:`os.walk` without following links,
    plus a set of the resolved folders already walked.

    Args:
        root: The folder.
        extensions: File extensions to keep (case-insensitive, with the dot).
        exclude: File-name glob patterns to leave out (case-insensitive).

    Returns:
        The files and the skipped links (see :class:`ImageFileScan`).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is not a folder.

    Example:
        >>> import os, tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "a.jpg").touch()
        >>> os.symlink(".", root / "loop")  # walks forever with os.walk(followlinks=True)
        >>> scan = scan_image_files(root)
        >>> scan.files, scan.skipped_links
        (['a.jpg'], ['loop'])
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
    walked: set[str] = set()  # resolved folders already walked
    found: dict[str, str] = {}  # resolved file -> relative name
    linked_files: list[tuple[str, str]] = []  # (relative name, path) of file links
    skipped: list[str] = []
    # Folders to walk: (path, relative name); links to folders are queued after the
    # folder they lie in is done, so real names win over names through links.
    pending: list[tuple[str, str]] = [(os.fspath(root_path), "")]
    while pending:
        top, top_rel = pending.pop(0)
        real_top = os.path.realpath(top)
        if real_top in walked:
            skipped.append(top_rel)
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            real_dir = os.path.realpath(dirpath)
            walked.add(real_dir)
            rel_dir = os.path.relpath(dirpath, top)
            rel_dir = top_rel if rel_dir == "." else os.path.join(top_rel, rel_dir)
            kept = []
            for d in sorted(dirnames):
                if d.startswith("."):
                    continue
                path = os.path.join(dirpath, d)
                if os.path.islink(path):
                    pending.append((path, Path(rel_dir, d).as_posix()))
                elif os.path.join(real_dir, d) in walked:  # reached again via a link
                    skipped.append(Path(rel_dir, d).as_posix())
                else:
                    kept.append(d)
            dirnames[:] = kept
            for name in filenames:
                lower = name.lower()
                if name.startswith(".") or not lower.endswith(exts):
                    continue
                if any(fnmatch.fnmatchcase(lower, p) for p in patterns):
                    continue
                rel = Path(rel_dir, name).as_posix()
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    linked_files.append((rel, path))
                else:
                    found.setdefault(os.path.join(real_dir, name), rel)
    for rel, path in sorted(linked_files):
        real = os.path.realpath(path)
        if real in found:
            skipped.append(rel)
        else:
            found[real] = rel  # a broken link stays: the readability check names it
    return ImageFileScan(files=sorted(found.values()), skipped_links=sorted(skipped))


def find_image_files(
    root: str | os.PathLike[str],
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    exclude: Sequence[str] = EXCLUDE_PATTERNS,
) -> list[str]:
    """All image files under ``root``, recursively, as sorted POSIX relative paths.

    ``scan_image_files(...).files``: each real file once, link loops not walked (see
    :func:`scan_image_files`, which also reports the links it skipped).

    Args:
        root: The folder.
        extensions: File extensions to keep (case-insensitive, with the dot).
        exclude: File-name glob patterns to leave out (case-insensitive).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is not a folder.
    """
    return scan_image_files(root, extensions, exclude).files


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

    ``filename`` is the path relative to ``root``; each real file is listed once and
    symbolic-link loops are not walked (see :func:`scan_image_files`; the links skipped
    are in ``skipped_links``, with one warning). ISIC segmentation masks and
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
        scan = scan_image_files(root_path, extensions, exclude)
        files = scan.files
        #: Symbolic links under ``root`` not followed (a loop or a second name).
        self.skipped_links: list[str] = scan.skipped_links
        if scan.skipped_links:
            warnings.warn(
                f"skipped {len(scan.skipped_links)} symbolic link(s) in {root_path} "
                "that lead to a folder or an image already found (a link loop or a "
                f"second name; each image is read once): "
                f"{describe_files(scan.skipped_links)}",
                UserWarning,
                stacklevel=2,
            )
        if not files:
            raise DataError(
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
                raise DataError(
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
                    raise DataError(message)
                warnings.warn(
                    message + "; they get target -1 (unlabelled)",
                    UserWarning,
                    stacklevel=2,
                )
        elif class_folders or (class_folders is None and is_class_folder_layout(files)):
            folder_of = [f.split("/")[0] if "/" in f else "" for f in files]
            if "" in folder_of:
                raise DataError(
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
