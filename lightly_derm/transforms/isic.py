"""MONAI dictionary transforms for ISIC image + mask pairs.

(Moved here from ``lightly_derm.data.isic_transforms``, which forwards for one release.)

Builds on MONAI's dictionary transforms (``LoadImaged`` with ``PILReader``, ``Resized``,
``RandFlipd``, ``RandRotate90d``, ``RandAffined``, intensity transforms, ``EnsureTyped``)
so that image and mask move together, and on lightly's ImageNet normalisation (the one
the SSL methods pretrain with). What it adds: :class:`BinaryLesionMaskd`, which checks
each pair (same size, a binary mask) and turns the mask into float {0, 1}, naming the
files when a pair is bad. Files are read through :mod:`lightly_derm.data.image_io` (the
package's pixel limit and decode errors), imported when the first file is read: the
data package imports this module, so importing it here at import time would be a
cycle.

Orientation: ``PILReader(reverse_indexing=False)`` keeps NumPy's (row, column) order, so
an image comes out (C, H, W) exactly as ``torchvision.transforms.functional.to_tensor``
gives it (MONAI's default ``reverse_indexing=True`` would transpose it to (C, W, H)), and
SSL encoders pretrained on torchvision tensors see images the same way up.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE
from monai.data import PILReader
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    RandAffined,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
    ScaleIntensityRanged,
)
from monai.utils import ensure_tuple
from torch import Tensor

from lightly_derm.transforms.rgb import to_rgb8

if TYPE_CHECKING:
    from lightly_derm.data.image_io import UnreadableImageError

__all__ = ["ORIGINAL_SHAPE_KEY", "BinaryLesionMaskd", "isic_segmentation_transforms"]

#: Meta-data key of an image's (height, width) in its file, before JPEG draft decoding.
ORIGINAL_SHAPE_KEY = "lightly_derm_original_shape"


class _RGB:
    """PIL converter: 8-bit RGB as :func:`~lightly_derm.transforms.to_rgb8` converts.

    16-bit images are scaled to 8 bit (Pillow's ``convert("RGB")`` clips them at 255:
    all white), alpha is dropped. With ``size`` (H, W), JPEGs are decoded at the largest
    DCT reduction (1/2, 1/4, 1/8) that stays at least that large (PIL's
    ``Image.draft``): 5-10x faster for the large ISIC images when the output is small.
    The size in the file is kept in ``info``.
    """

    def __init__(self, size: tuple[int, int] | None = None) -> None:
        self.size = size

    def __call__(self, image: Any) -> Any:
        width, height = image.size
        if self.size is not None and image.format == "JPEG":
            image.draft("RGB", (self.size[1], self.size[0]))
        image = to_rgb8(image)
        image.info[ORIGINAL_SHAPE_KEY] = (height, width)
        return image


class _Unreadable:
    """What :class:`_PILReader` reads from a broken file: the error, raised later."""

    def __init__(self, error: UnreadableImageError) -> None:
        self.error = error


class _PILReader(PILReader):
    """MONAI's PILReader with lightly-derm's file handling.

    - Images above :func:`~lightly_derm.data.image_io.max_image_pixels` are refused
      before decoding, and every file is decoded here, so a truncated, empty or
      corrupt file (or mask) gives :class:`~lightly_derm.data.UnreadableImageError`
      naming it. MONAI's ``LoadImage`` turns a failing ``read`` into "cannot find a
      suitable reader" with the traceback in the message; the error is therefore
      raised from ``get_data`` instead, which ``LoadImage`` does not wrap.
    - The size an image has in its file is reported in the metadata.
    """

    def read(self, data: Any, **kwargs: Any) -> Any:
        # at call time: lightly_derm.data imports this module (see the module docstring)
        from lightly_derm.data.image_io import (
            DECODE_ERRORS,
            UnreadableImageError,
            open_image,
        )

        names = ensure_tuple(data)
        images: list[Any] = []
        for name in names:
            label = (
                os.fspath(name) if isinstance(name, (str, os.PathLike)) else str(name)
            )
            try:
                image = open_image(name, label)
                if callable(self.converter):
                    image = self.converter(image)
                image.load()
            except UnreadableImageError as exc:
                images.append(_Unreadable(exc))
            except DECODE_ERRORS as exc:
                error = UnreadableImageError(
                    f"cannot read image {label}: {type(exc).__name__}: {exc}"
                )
                error.__cause__ = exc
                images.append(_Unreadable(error))
            else:
                images.append(image)
        return images if len(names) > 1 else images[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        for image in ensure_tuple(img):
            if isinstance(image, _Unreadable):
                raise image.error
        return super().get_data(img)

    def _get_meta_dict(self, img: Any) -> dict:
        meta = super()._get_meta_dict(img)
        if ORIGINAL_SHAPE_KEY in img.info:
            meta[ORIGINAL_SHAPE_KEY] = tuple(img.info[ORIGINAL_SHAPE_KEY])
        return meta


def _to_gray(image: Any) -> Any:
    """PIL converter: every mask as one 8-bit channel (``1``, ``P``, ``I``, RGB → ``L``)."""
    return image if image.mode == "L" else image.convert("L")


def _shape_in_file(x: Any) -> tuple[int, ...]:
    meta = getattr(x, "meta", None)
    if isinstance(meta, Mapping) and ORIGINAL_SHAPE_KEY in meta:
        return tuple(int(v) for v in meta[ORIGINAL_SHAPE_KEY])
    return tuple(x.shape[1:])


def _filename(x: Any) -> str:
    meta = getattr(x, "meta", None)
    if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
        return str(meta["filename_or_obj"])
    return "<in-memory array>"


class BinaryLesionMaskd(MapTransform):
    """Checks an image/mask pair and makes the mask float {0, 1} of shape (1, H, W).

    A mask must have the image's height and width, one channel, and only the values
    {0, 255} or {0, 1} (ISIC masks are {0, 255}). A mask with other values is an error
    by default (it is usually the wrong file: ISIC 2017's ``_superpixels.png``, a JPEG
    re-encode, a resampled mask); with ``threshold`` it is binarised instead:
    ``mask / 255 > threshold`` (or ``mask > threshold`` when its values are within [0, 1]).

    Args:
        image_key: The image's key.
        label_key: The mask's key.
        threshold: ``None`` (strict, default) or the binarisation threshold in [0, 1).

    Raises:
        ValueError: When called on a pair whose sizes differ, whose mask has several
            channels or (strict) is not binary; the message names the files.

    Example:
        >>> import torch
        >>> from lightly_derm.transforms import BinaryLesionMaskd
        >>> out = BinaryLesionMaskd()({"image": torch.zeros(3, 4, 4),
        ...                            "label": torch.full((1, 4, 4), 255.0)})
        >>> out["label"].unique().tolist()
        [1.0]
    """

    def __init__(
        self,
        image_key: Hashable = "image",
        label_key: Hashable = "label",
        threshold: float | None = None,
    ) -> None:
        super().__init__([label_key])
        if threshold is not None and not 0 <= threshold < 1:
            raise ValueError(f"mask threshold must be in [0, 1), got {threshold!r}")
        self.image_key = image_key
        self.label_key = label_key
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Checks and binarises ``data[label_key]``."""
        d = dict(data)
        image, loaded = d[self.image_key], d[self.label_key]
        name = _filename(loaded)
        image_shape = _shape_in_file(image)
        if image_shape != tuple(loaded.shape[1:]):
            raise ValueError(
                f"mask {name} is {tuple(loaded.shape[1:])} (H, W) but image "
                f"{_filename(image)} is {image_shape}; image and mask must "
                "have the same size"
            )
        if loaded.shape[0] != 1:
            raise ValueError(
                f"mask {name} has {loaded.shape[0]} channels; a lesion mask has one"
            )
        # NumPy: as fast as torch with one thread, and not slowed down by MetaTensor
        # bookkeeping or by thread contention in the main process.
        mask = np.asarray(
            loaded.detach().cpu().numpy() if isinstance(loaded, Tensor) else loaded
        )
        if self.threshold is None:
            zero = mask == 0
            if (zero | (mask == 255)).all() or (zero | (mask == 1)).all():
                binary = ~zero
            else:
                values = np.unique(mask)
                raise ValueError(
                    f"mask {name} is not binary: it has {values.size} values "
                    f"({', '.join(f'{v:g}' for v in values[:6].tolist())}"
                    f"{', ...' if values.size > 6 else ''}); expected {{0, 255}} or "
                    "{0, 1}. Pass mask_threshold= to binarise soft masks."
                )
        else:
            scale = 255.0 if (mask > 1).any() else 1.0
            binary = mask > self.threshold * scale
        binary = torch.from_numpy(binary.astype(np.float32))
        d[self.label_key] = binary
        return d


class _ClearErrorsCompose(Compose):
    """``Compose`` that re-raises a transform's own ValueError/TypeError/OSError.

    MONAI wraps every error in ``RuntimeError("applying transform ...")``; the bad-pair
    errors of :class:`BinaryLesionMaskd` name the files and should reach the user as
    they are.
    """

    def __call__(
        self,
        input_: Any,
        start: int = 0,
        end: int | None = None,
        threading: bool = False,
        lazy: bool | None = None,
    ) -> Any:
        try:
            return super().__call__(input_, start, end, threading, lazy)
        except RuntimeError as exc:
            cause: BaseException = exc
            while isinstance(cause, RuntimeError) and cause.__cause__ is not None:
                cause = cause.__cause__
            if isinstance(cause, (ValueError, TypeError, OSError)):
                raise cause from None
            raise


def isic_segmentation_transforms(
    image_size: int | Sequence[int] = 256,
    train: bool = True,
    normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    mask_threshold: float | None = None,
    rotate_degrees: float = 15.0,
    scale_range: float = 0.1,
    intensity: float = 0.1,
    fast_jpeg: bool = True,
) -> Compose:
    """The MONAI pipeline from a pair of paths to an image and a mask tensor.

    ``{"image": path, "label": path, ...}`` → ``{"image": (3, H, W) float32 normalised,
    "label": (1, H, W) float32 in {0, 1}, ...}`` (other keys such as ``"id"`` pass
    through). Steps:

    1. ``LoadImaged`` image (RGB; large JPEGs decoded at a reduced scale, see
       ``fast_jpeg``) and mask (one channel) with ``PILReader(reverse_indexing=False)``:
       (C, H, W) as torchvision;
    2. :class:`BinaryLesionMaskd`: same size, binary mask (errors name the files);
    3. ``Resized`` both to ``image_size``: the image by area averaging (anti-aliased
       downsampling), the mask by exact nearest neighbour (stays binary);
    4. training only, jointly on image and mask: ``RandFlipd`` on both axes,
       ``RandRotate90d`` (square sizes), ``RandAffined`` (rotation, scale; bilinear /
       nearest); on the image: ``RandScaleIntensityd``/``RandShiftIntensityd`` per
       channel;
    5. scale to [0, 1] and normalise with ``normalize`` (ImageNet by default, as the
       SSL methods); ``EnsureTyped`` to plain float32 tensors.

    Everything before the first random step is deterministic, so
    :class:`monai.data.CacheDataset` caches the loaded, checked and resized pairs.

    Args:
        image_size: Output (H, W), or one int for square images.
        train: Add the random augmentations.
        normalize: ``{"mean": [...], "std": [...]}`` of the images in [0, 1], or
            ``None`` to leave them in [0, 1].
        mask_threshold: ``None``: masks must be binary; a float: binarise at it (see
            :class:`BinaryLesionMaskd`).
        rotate_degrees: Largest random rotation of ``RandAffined``.
        scale_range: Largest relative random zoom of ``RandAffined``.
        intensity: Strength of the random per-channel scale and shift.
        fast_jpeg: Decode JPEGs at a reduced scale (1/2, 1/4 or 1/8, PIL's
            ``Image.draft``) that is still at least ``image_size``, before the area
            resize: 5-10x faster on large ISIC images, nearly the same pixels. The
            mask check still compares the sizes in the files.

    Example:
        >>> from lightly_derm.transforms import isic_segmentation_transforms
        >>> transform = isic_segmentation_transforms(128, train=True)
        >>> # from lightly_derm.data import find_isic_pairs
        >>> # sample = transform(find_isic_pairs("isic2017-seg-subset")[0])
        >>> # sample["image"].shape, sample["label"].shape -> (3, 128, 128), (1, 128, 128)
    """
    size = (
        (int(image_size), int(image_size))
        if isinstance(image_size, int)
        else tuple(int(s) for s in image_size)
    )
    if len(size) != 2 or min(size) < 1:
        raise ValueError(
            f"image_size must be an int or (height, width), got {image_size!r}"
        )
    keys = ["image", "label"]
    # MONAI documents (and accepts) reader instances, but annotates classes only
    steps: list[Any] = [
        LoadImaged(
            "image",
            reader=_PILReader(  # type: ignore[arg-type]
                reverse_indexing=False, converter=_RGB(size if fast_jpeg else None)
            ),
            image_only=True,
            ensure_channel_first=True,
        ),
        LoadImaged(
            "label",
            reader=_PILReader(  # type: ignore[arg-type]
                reverse_indexing=False, converter=_to_gray
            ),
            image_only=True,
            ensure_channel_first=True,
        ),
        BinaryLesionMaskd("image", "label", threshold=mask_threshold),
        Resized(keys, spatial_size=size, mode=("area", "nearest-exact")),
    ]
    if train:
        steps += [
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
        ]
        if size[0] == size[1]:
            steps.append(RandRotate90d(keys, prob=0.5, max_k=3))
        if rotate_degrees > 0 or scale_range > 0:
            steps.append(
                RandAffined(
                    keys,
                    prob=0.5,
                    rotate_range=math.radians(rotate_degrees),
                    scale_range=(scale_range, scale_range),
                    mode=("bilinear", "nearest"),
                    padding_mode="zeros",
                )
            )
    steps.append(ScaleIntensityRanged("image", a_min=0, a_max=255, b_min=0, b_max=1))
    if train and intensity > 0:
        steps += [
            RandScaleIntensityd(
                "image", factors=intensity, prob=0.5, channel_wise=True
            ),
            RandShiftIntensityd(
                "image", offsets=intensity, prob=0.5, channel_wise=True
            ),
        ]
    if normalize is not None:
        # MONAI takes a sequence per channel (channel_wise) but annotates arrays only;
        # Python floats keep the arithmetic in the image's float32
        steps.append(
            NormalizeIntensityd(
                "image",
                subtrahend=list(normalize["mean"]),  # type: ignore[arg-type]
                divisor=list(normalize["std"]),  # type: ignore[arg-type]
                channel_wise=True,
            )
        )
    steps.append(EnsureTyped(keys, dtype=torch.float32, track_meta=False))
    return _ClearErrorsCompose(steps)
