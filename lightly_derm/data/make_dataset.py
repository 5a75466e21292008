"""One entry point that finds the right dataset for a path (used by the command line).

Builds on the datasets of :mod:`lightly_derm.data`; it only decides which one to create.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from lightly_derm.data.dermamnist_jpeg import (
    ZIP_NAME,
    DermaMNISTJPEGDataset,
    is_dermamnist_jpeg_zip,
)
from lightly_derm.data.image_file_dataset import CheckMode
from lightly_derm.data.image_folder import ImageFolderDataset
from lightly_derm.data.image_io import IMAGE_EXTENSIONS
from lightly_derm.data.isic_classification import ISICClassificationDataset
from lightly_derm.data.medmnist import MedMNISTDataset
from lightly_derm.data.synthetic_lesions import SyntheticLesions

#: The data sources :func:`make_dataset` recognises, for messages and ``--help``.
DATA_SOURCES = (
    "nothing (built-in synthetic lesions), a MedMNIST .npz file, the DermaMNIST JPEG "
    "export (folder or zip), an ISIC image+mask folder (images/ and masks/), a folder of "
    "images with a labels CSV, or a plain folder of images (searched recursively)"
)
_SPLITS = ("train", "val", "test")


def make_dataset(
    data: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    transform: Callable[[Any], Any] | None = None,
    strict: bool = False,
    split: str = "train",
    *,
    task: str | None = None,
    check: CheckMode = "header",
    decode_size: int | None = None,
    num_images: int = 1000,
    image_size: int = 64,
    num_classes: int = 3,
    seed: int = 0,
) -> Dataset[Any]:
    """Creates the dataset for ``data``, detecting what kind of source it is.

    The rules, in order:

    1. ``data=None``: :class:`~lightly_derm.data.SyntheticLesions` (built-in synthetic
       lesions; ``num_images``, ``image_size``, ``num_classes``, ``seed`` and ``split``
       apply).
    2. A ``.npz`` file: :class:`~lightly_derm.data.MedMNISTDataset` (``split``).
    3. A zip of ``images/DermaMNIST_*.jpg``, or a folder holding ``dermamnist_jpg.zip``:
       :class:`~lightly_derm.data.DermaMNISTJPEGDataset` (``split``; ``labels``
       overrides the ``labels.csv`` beside the zip).
    4. A folder with ``train/`` and ``val/`` or ``test/`` subfolders: the rules below
       applied to ``data/<split>``.
    5. A folder whose only content is one ``.npz`` file: rule 2 on that file.
    6. The ISIC image+mask layout, a folder with ``images/`` and ``masks/``: the images
       in ``images/`` (mask pairing is :mod:`lightly_derm.segmentation`'s job).
    7. With ``labels``: :class:`~lightly_derm.data.ISICClassificationDataset` over the
       folder (ISIC 2016–2019 ground-truth or generic CSV; ``task`` applies).
    8. Otherwise :class:`~lightly_derm.data.ImageFolderDataset` (recursive; class
       subfolders give targets).

    Image folders always leave out ISIC masks and superpixel maps. ``transform``,
    ``strict``, ``check`` and ``decode_size`` are passed on where they apply.

    Args:
        data: The data path, or ``None`` for the built-in synthetic lesions.
        labels: A labels CSV for an image folder (see
            :func:`~lightly_derm.data.read_labels_csv`).
        transform: Applied to every PIL RGB image.
        strict: Make unreadable images and images without labels errors.
        split: ``"train"``, ``"val"`` or ``"test"`` for sources with splits.
        task: One class name for a one-vs-rest binary task (with ``labels``).
        check: File check of image folders: ``"header"``, ``"full"`` or ``"none"``.
        decode_size: Decode JPEGs at reduced size with the shorter side at least this.
        num_images: Synthetic data only: the number of images.
        image_size: Synthetic data only: the image side in pixels.
        num_classes: Synthetic data only: the number of classes.
        seed: Synthetic data only: the seed.

    Returns:
        A map-style dataset of ``(transform(image), target, filename)`` with attributes
        ``targets`` (int64 array, ``-1`` = unlabelled) and ``classes``.

    Raises:
        FileNotFoundError: ``data`` or ``labels`` does not exist (the message names it).
        ValueError: ``data`` is of no recognised kind, holds no images, or an argument
            does not fit the source (the message says which).

    Example:
        >>> from lightly_derm.data import make_dataset
        >>> make_dataset(num_images=16, image_size=32).classes
        ['nevus-like', 'melanoma-like', 'seborrheic-keratosis-like']
        >>> make_dataset("/data/ISIC2018_Task3_Training_Input",  # doctest: +SKIP
        ...              labels="/data/ISIC2018_Task3_Training_GroundTruth.csv")
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {', '.join(_SPLITS)}, got {split!r}")
    if labels is not None and not Path(labels).is_file():
        raise FileNotFoundError(f"labels CSV not found: {labels}")
    if data is None:
        if labels is not None:
            raise ValueError(
                "labels were given without data; the built-in synthetic lesions carry "
                "their own labels"
            )
        return SyntheticLesions(
            num_images=num_images,
            image_size=image_size,
            num_classes=num_classes,
            seed=seed,
            transform=transform,
            split=split,
        )
    path = Path(data).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data not found: {path}")
    if path.is_file():
        return _from_file(path, labels, transform, split)
    if (path / ZIP_NAME).is_file():
        return DermaMNISTJPEGDataset(path / ZIP_NAME, split, transform, labels=labels)
    subfolders = {p.name for p in path.iterdir() if p.is_dir()}
    if "train" in subfolders and ({"val", "test"} & subfolders):
        if split not in subfolders:
            raise ValueError(
                f"{path} has the split folders {sorted(subfolders & set(_SPLITS))} but "
                f"no {split!r}"
            )
        return make_dataset(
            path / split,
            labels,
            transform,
            strict,
            split,
            task=task,
            check=check,
            decode_size=decode_size,
        )
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    npz_files = [p for p in entries if p.suffix.lower() == ".npz"]
    if len(npz_files) == 1 and len(entries) == 1:
        return _from_file(npz_files[0], labels, transform, split)
    images_root = path
    if "images" in subfolders and "masks" in subfolders:
        images_root = path / "images"
    if labels is not None:
        return ISICClassificationDataset(
            images_root,
            labels,
            transform=transform,
            task=task,
            strict=strict,
            check=check,
            decode_size=decode_size,
        )
    if task is not None:
        raise ValueError("task needs labels: pass a labels CSV")
    try:
        return ImageFolderDataset(
            images_root,
            transform=transform,
            strict=strict,
            check=check,
            decode_size=decode_size,
        )
    except ValueError as exc:
        if not str(exc).startswith("no images found"):
            raise
        raise ValueError(f"{exc}. lightly-derm reads {DATA_SOURCES}") from exc


def dataset_splits(data: str | os.PathLike[str] | None) -> tuple[str, ...]:
    """The predefined splits of a data source, or ``()`` when it has none.

    Follows the rules of :func:`make_dataset`: the synthetic lesions, MedMNIST ``.npz``
    files and the DermaMNIST JPEG export have ``("train", "val", "test")``; a folder with
    ``train/`` and ``val/`` or ``test/`` subfolders has those; other folders have none
    (the caller splits them).

    Example:
        >>> dataset_splits(None)
        ('train', 'val', 'test')
    """
    if data is None:
        return _SPLITS
    path = Path(data).expanduser()
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz" or (suffix == ".zip" and is_dermamnist_jpeg_zip(path)):
            return _SPLITS
        return ()
    if not path.is_dir():
        return ()
    if (path / ZIP_NAME).is_file():
        return _SPLITS
    subfolders = {p.name for p in path.iterdir() if p.is_dir()}
    if "train" in subfolders and ({"val", "test"} & subfolders):
        return tuple(s for s in _SPLITS if s in subfolders)
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].suffix.lower() == ".npz":
        return _SPLITS
    return ()


def _from_file(
    path: Path,
    labels: str | os.PathLike[str] | None,
    transform: Callable[[Any], Any] | None,
    split: str,
) -> Dataset[Any]:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        if labels is not None:
            raise ValueError(
                f"{path} is a MedMNIST .npz file, which carries its own labels; "
                "leave out labels"
            )
        return MedMNISTDataset(path, split=split, transform=transform)
    if suffix == ".zip":
        if is_dermamnist_jpeg_zip(path):
            return DermaMNISTJPEGDataset(path, split, transform, labels=labels)
        raise ValueError(
            f"{path} is a zip but not the DermaMNIST JPEG export "
            "(images/DermaMNIST_<split>_<n>.jpg); unpack it and pass the folder"
        )
    if suffix == ".csv":
        raise ValueError(
            f"{path} is a CSV: pass the image folder as data and the CSV as labels"
        )
    if suffix in IMAGE_EXTENSIONS:
        raise ValueError(f"{path} is one image; pass the folder that holds the images")
    raise ValueError(f"cannot read {path} as data; lightly-derm reads {DATA_SOURCES}")
