"""ISIC lesion images and their segmentation masks, paired by ISIC id.

Builds on nothing but :mod:`pathlib` and PIL (to read image sizes from file headers): the
pairs are plain dictionaries in MONAI's convention (``{"image": path, "label": path}``,
plus ``"id"``), ready for :class:`monai.data.Dataset` and the dictionary transforms of
:func:`~lightly_derm.transforms.isic_segmentation_transforms`.

Understood layouts (ISIC 2016–2018 Task 1 downloads and the shared subset):

- ``root/images/ISIC_xxxxxxx.jpg`` with ``root/masks/ISIC_xxxxxxx_segmentation.png``;
- the official folders side by side, e.g. ``root/ISIC-2017_Training_Data/`` with
  ``root/ISIC-2017_Training_Part1_GroundTruth/`` (a folder whose name ends in ``_Data``
  or ``_Input``, and one whose name contains ``GroundTruth``);
- one flat folder holding both;
- any two folders given as ``image_dir`` and ``mask_dir``.

Masks are named ``<id>_segmentation.png`` or ``<id>_Segmentation.png``. Other files
(ISIC 2017's ``_superpixels.png``, metadata CSVs, …) are ignored.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from lightly_derm.errors import DataError

#: An ISIC image file: ``ISIC_`` and digits, then .jpg, .jpeg or .png.
ISIC_IMAGE_PATTERN = re.compile(r"^(ISIC_\d+)\.(?:jpe?g|png)$", re.IGNORECASE)
#: The mask suffixes tried for each id, in this order.
MASK_SUFFIXES: tuple[str, ...] = ("_segmentation.png", "_Segmentation.png")

IsicPair = dict[str, str]


def _find_dirs(root: Path) -> tuple[Path, Path]:
    if (root / "images").is_dir():
        return root / "images", (root / "masks" if (root / "masks").is_dir() else root)
    subdirs = [d for d in root.iterdir() if d.is_dir()]
    images = [d for d in subdirs if d.name.endswith(("_Data", "_Input"))]
    masks = [d for d in subdirs if "groundtruth" in d.name.lower()]
    if len(images) == 1 and len(masks) == 1:
        return images[0], masks[0]
    return root, root


def find_isic_pairs(
    root: str | Path | None = None,
    image_dir: str | Path | None = None,
    mask_dir: str | Path | None = None,
    ids: Iterable[str] | None = None,
    check_sizes: bool = True,
) -> list[IsicPair]:
    """Pairs every ISIC image with its segmentation mask.

    Args:
        root: A folder in one of the layouts of this module.
        image_dir: The image folder (overrides what ``root`` implies).
        mask_dir: The mask folder (default: ``root``'s, else ``image_dir``).
        ids: Keep only these ISIC ids (``"ISIC_0000000"``), e.g. a split file's.
        check_sizes: Read each image's and mask's size from the file headers and raise
            when they differ (fast: no pixels are decoded). The transforms check again
            when loading.

    Returns:
        ``[{"image": path, "label": path, "id": "ISIC_…"}, …]`` sorted by id.

    Raises:
        FileNotFoundError: A folder does not exist or has no ISIC image; an image has no
            mask (the message names the images and the mask names looked for); an id of
            ``ids`` has no image.
        ValueError: An image and its mask differ in size (naming both files).

    Example:
        >>> from lightly_derm.data import find_isic_pairs
        >>> pairs = find_isic_pairs("/data/isic2017-seg-subset")  # doctest: +SKIP
        >>> pairs[0]  # doctest: +SKIP
        {'image': '.../images/ISIC_0000000.jpg', 'label': '.../masks/ISIC_0000000_segmentation.png', 'id': 'ISIC_0000000'}
    """
    if root is None and image_dir is None:
        raise ValueError("find_isic_pairs needs root or image_dir")
    found_images = found_masks = None
    if root is not None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"ISIC folder {str(root)!r} does not exist")
        found_images, found_masks = _find_dirs(root)
    images_path = Path(image_dir) if image_dir is not None else found_images
    assert images_path is not None
    masks_path = Path(mask_dir) if mask_dir is not None else found_masks or images_path
    for name, folder in (("image_dir", images_path), ("mask_dir", masks_path)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{name} {str(folder)!r} does not exist")

    images: dict[str, Path] = {}
    for path in images_path.iterdir():
        match = ISIC_IMAGE_PATTERN.match(path.name)
        if match and path.is_file():
            images.setdefault(match.group(1), path)
    if not images:
        raise FileNotFoundError(
            f"no ISIC images (ISIC_<digits>.jpg) in {str(images_path)!r}"
        )
    if ids is not None:
        wanted = list(dict.fromkeys(ids))
        unknown = [i for i in wanted if i not in images]
        if unknown:
            raise FileNotFoundError(
                f"{len(unknown)} requested ids have no image in {str(images_path)!r}: "
                f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}"
            )
        images = {i: images[i] for i in wanted}

    mask_files = {p.name: p for p in masks_path.iterdir() if p.suffix.lower() == ".png"}
    pairs: list[IsicPair] = []
    missing: list[str] = []
    for isic_id in sorted(images):
        mask = next(
            (
                mask_files[isic_id + suffix]
                for suffix in MASK_SUFFIXES
                if isic_id + suffix in mask_files
            ),
            None,
        )
        if mask is None:
            missing.append(images[isic_id].name)
            continue
        pairs.append({"image": str(images[isic_id]), "label": str(mask), "id": isic_id})
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} ISIC images have no mask in {str(masks_path)!r}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} (looked for "
            f"<id>{' or <id>'.join(MASK_SUFFIXES)})"
        )
    if check_sizes:
        _check_sizes(pairs)
    return pairs


def _check_sizes(pairs: Sequence[IsicPair]) -> None:
    from PIL import Image

    bad = []
    for pair in pairs:
        with Image.open(pair["image"]) as image, Image.open(pair["label"]) as mask:
            if image.size != mask.size:
                bad.append(
                    f"{pair['image']} is {image.size[0]}×{image.size[1]} but "
                    f"{pair['label']} is {mask.size[0]}×{mask.size[1]}"
                )
    if bad:
        raise DataError(
            f"{len(bad)} ISIC masks differ in size from their images: "
            + "; ".join(bad[:3])
            + (" ..." if len(bad) > 3 else "")
        )


def _check_pairs(pairs: Sequence[IsicPair], name: str) -> None:
    if not isinstance(pairs, Sequence) or not all(
        isinstance(p, dict) and "image" in p and "label" in p for p in pairs
    ):
        raise TypeError(
            f"{name} must be a list of {{'image': ..., 'label': ...}} dictionaries "
            "(find_isic_pairs gives one)"
        )


def split_pairs(
    pairs: Sequence[IsicPair], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[IsicPair], list[IsicPair]]:
    """Splits pairs into training and validation sets at random (seeded).

    Args:
        pairs: The pairs, e.g. from :func:`find_isic_pairs`.
        val_fraction: The share of validation pairs, in [0, 1); at least one pair when
            it is positive and there are two or more pairs.
        seed: The seed of the split.

    Returns:
        Training and validation pairs, each in the input order.

    Raises:
        ValueError: ``val_fraction`` is outside [0, 1).
    """
    _check_pairs(pairs, "pairs")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n_val = round(val_fraction * len(pairs))
    if val_fraction > 0 and len(pairs) >= 2:
        n_val = min(max(n_val, 1), len(pairs) - 1)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    val = set(order[:n_val])
    return (
        [p for i, p in enumerate(pairs) if i not in val],
        [p for i, p in enumerate(pairs) if i in val],
    )


def subsample_pairs(
    pairs: Sequence[IsicPair], fraction: float, seed: int = 0
) -> list[IsicPair]:
    """Keeps a random ``fraction`` of the pairs: the low-label training sets.

    The subsets are nested: for one seed, the pairs kept at 1 % are among those kept at
    10 %, which are among those kept at 50 %, so label-efficiency curves compare like
    with like.

    Args:
        pairs: The training pairs.
        fraction: The share to keep, in (0, 1]; at least one pair is kept.
        seed: The seed of the choice.

    Returns:
        The kept pairs, in the input order.

    Raises:
        ValueError: ``fraction`` is outside (0, 1] or ``pairs`` is empty.

    Example:
        >>> from lightly_derm.data import subsample_pairs
        >>> pairs = [{"image": f"{i}.jpg", "label": f"{i}.png"} for i in range(100)]
        >>> len(subsample_pairs(pairs, 0.1))
        10
    """
    _check_pairs(pairs, "pairs")
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction!r}")
    if not pairs:
        raise ValueError("there are no pairs to subsample")
    if fraction == 1:
        return list(pairs)
    keep_count = max(1, round(fraction * len(pairs)))
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    keep = set(order[:keep_count])
    return [p for i, p in enumerate(pairs) if i in keep]
