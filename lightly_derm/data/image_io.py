"""Reading image files as 8-bit RGB PIL images, fast and with clear errors.

Builds on Pillow (and follows lightly's and torchvision's ``pil_loader``: open the file,
decode, convert to RGB). What it adds:

- **Correct bit-depth conversion.** Pillow's ``convert("RGB")`` clips 16-bit grayscale
  (``I;16``) at 255, which turns most 16-bit images white; here 16-bit values are scaled
  to 8 bit. The rules, by PIL mode:

  ============================  =========================================================
  ``RGB``                       kept as it is
  ``L``, ``1``, ``P``           ``convert("RGB")`` (gray replicated, palette expanded)
  ``RGBA``, ``LA``, ``PA``,     alpha dropped, colour channels kept as stored (what
  ``RGBa``, ``RGBX``            lightly's and torchvision's RGB loaders do)
  ``CMYK``, ``YCbCr``, ``HSV``  Pillow's ``convert("RGB")`` (CMYK without ICC profile)
  ``I;16``, ``I;16B/L/N``       ``round(v / 257)`` (0…65535 → 0…255), gray → RGB
  ``I`` (32-bit int)            taken as 16-bit data: clipped to 0…65535, then as above
  ``F`` (32-bit float)          taken as 0…1: clipped, ``round(255 v)``, gray → RGB
  ============================  =========================================================

  16-bit-per-channel colour PNGs are decoded by Pillow as ``RGB``/``RGBA`` from their
  high bytes already, so they follow the ``RGB``/``RGBA`` rows. EXIF orientation is not
  applied (as in lightly and torchvision), so images stay aligned with their masks.
- **Reduced-size decoding.** With ``decode_size`` set, JPEGs are decoded at the smallest
  power-of-two scale (1/2, 1/4, 1/8, via :meth:`PIL.Image.Image.draft`) whose shorter
  side is still at least ``decode_size``; other formats are box-reduced
  (:meth:`PIL.Image.Image.reduce`) by the largest integer factor that keeps it. A
  1504×1129 ISIC JPEG read for a 224-pixel model decodes at 376×283, several times
  faster.
- **A cheap readability check** (:func:`check_image`) for dataset construction, and
  :class:`UnreadableImageError` (a :class:`~lightly_derm.errors.DataError`, so a
  ``ValueError``) naming the file and the reason.
- **Bounded memory.** An image of more than :func:`max_image_pixels` pixels (default
  :data:`MAX_IMAGE_PIXELS` = 89,478,485, Pillow's decompression-bomb threshold, above
  which Pillow itself only warns up to twice that) is refused before it is decoded,
  with :class:`ImageTooLargeError` naming the file, its size and the limit; set
  ``LIGHTLY_DERM_MAX_IMAGE_PIXELS`` to change the limit (``0``: no limit of
  lightly-derm's). A 280 KB PNG can hold 12000×12000 pixels: decoded, several GB in
  every DataLoader worker at once. The 16-bit conversion works in row blocks of about
  a million pixels, so its temporary memory is bounded too (the decoded image and its
  RGB copy remain).
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from lightly_derm.errors import ConfigError, DataError

#: File extensions read as images (lower case), the same as lightly's and torchvision's.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)

#: The exceptions a broken file raises while Pillow opens or decodes it.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    TypeError,
    Image.DecompressionBombError,
)

#: The default largest image, in pixels, that lightly-derm decodes (Pillow's
#: ``Image.MAX_IMAGE_PIXELS``; Pillow only warns between it and twice it).
MAX_IMAGE_PIXELS = 89_478_485
#: Environment variable that overrides :data:`MAX_IMAGE_PIXELS` (``0``: no limit).
ENV_MAX_IMAGE_PIXELS = "LIGHTLY_DERM_MAX_IMAGE_PIXELS"
_BLOCK_PIXELS = 1 << 20  # pixels per block of the 16-bit conversion
# round(v / 257) for every 16-bit value: 0 -> 0, 257 -> 1, 65535 -> 255.
_LUT16 = ((np.arange(65536, dtype=np.uint32) * 2 + 257) // 514).astype(np.uint8)

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La", "RGBX")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")

ImageSource = str | os.PathLike[str] | bytes | BinaryIO


class UnreadableImageError(DataError):
    """An image file that cannot be opened or decoded; the message names the file.

    A :class:`~lightly_derm.errors.DataError` (so also a ``ValueError``).
    """


class ImageTooLargeError(UnreadableImageError):
    """An image of more pixels than :func:`max_image_pixels`, refused before decoding."""


def max_image_pixels() -> int | None:
    """The largest image lightly-derm decodes, in pixels; ``None`` for no limit.

    ``LIGHTLY_DERM_MAX_IMAGE_PIXELS`` (a positive integer, or ``0`` for no limit) if
    set, else :data:`MAX_IMAGE_PIXELS`. Read at every call, so DataLoader workers see
    it too.

    Raises:
        ConfigError: The variable is not a non-negative integer.
    """
    value = os.environ.get(ENV_MAX_IMAGE_PIXELS, "").strip().replace("_", "")
    if not value:
        return MAX_IMAGE_PIXELS
    if not value.isdigit():
        raise ConfigError(
            f"{ENV_MAX_IMAGE_PIXELS} must be a number of pixels (0: no limit), got "
            f"{os.environ[ENV_MAX_IMAGE_PIXELS]!r}"
        )
    return int(value) or None


def check_pixel_limit(image: Image.Image, name: str) -> None:
    """Refuses an opened (not yet decoded) image above :func:`max_image_pixels`.

    Raises:
        ImageTooLargeError: Naming the file, its size and the limit.
    """
    limit = max_image_pixels()
    width, height = image.size
    if limit is not None and width * height > limit:
        raise ImageTooLargeError(
            f"cannot read image {name}: {width}x{height} = {width * height:,} pixels is "
            f"more than the limit of {limit:,} (decoded, at least "
            f"{width * height * 3 / 2**20:,.0f} MiB per worker); set "
            f"{ENV_MAX_IMAGE_PIXELS} to allow larger images"
        )


def _source_name(source: ImageSource, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return "<bytes>"


def to_rgb8(image: Image.Image) -> Image.Image:
    """Converts a PIL image of any mode to 8-bit RGB (see the module docstring).

    Args:
        image: A loaded PIL image.

    Returns:
        The image in mode ``RGB`` (the same object when it already is).

    Raises:
        ValueError: Pillow cannot convert the mode to RGB.

    Example:
        >>> import numpy as np
        >>> from PIL import Image
        >>> gray16 = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
        >>> gray16.mode, to_rgb8(gray16).getpixel((0, 0))
        ('I;16', (255, 255, 255))
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        array = np.asarray(image)
        rgb = np.empty((*array.shape[:2], 3), dtype=np.uint8)
        # Row blocks of about a million pixels: bounded temporaries at any image size
        # (whole-image int64 intermediates took 3.9 GB for a 12000x12000 PNG).
        rows = max(1, _BLOCK_PIXELS // max(1, array.shape[1]))
        for start in range(0, array.shape[0], rows):
            block = array[start : start + rows]
            if mode == "F":
                gray8 = np.rint(np.clip(block, 0.0, 1.0) * 255.0).astype(np.uint8)
            else:
                gray8 = _LUT16[np.clip(block, 0, 65535).astype(np.uint16)]
            rgb[start : start + rows] = gray8[..., None]
        return Image.fromarray(rgb)
    if mode in _ALPHA_MODES and mode not in ("RGBA", "RGBX"):
        # LA/PA/La: drop alpha via the alpha-carrying RGB form, then drop alpha.
        image = image.convert("RGBA")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ValueError(
            f"cannot convert an image of mode {mode!r} to RGB: {exc}"
        ) from exc


def _reduce_to(image: Image.Image, decode_size: int) -> Image.Image:
    factor = min(image.size) // decode_size
    if factor >= 2:
        return image.reduce(factor)
    return image


def load_image(
    source: ImageSource,
    decode_size: int | None = None,
    name: str | None = None,
) -> Image.Image:
    """Reads an image file as an 8-bit RGB PIL image.

    Args:
        source: A path, the file's bytes, or a binary file object.
        decode_size: If given, the smallest shorter side the caller needs; the image is
            decoded at reduced size when that is faster (see the module docstring) and
            is never made smaller than this. ``None`` decodes at full size.
        name: The name to use in error messages (default: the path).

    Returns:
        The decoded image in mode ``RGB``.

    Raises:
        UnreadableImageError: The file is not an image Pillow can read, is truncated or
            corrupt; the message names it and the reason.
        ImageTooLargeError: (an ``UnreadableImageError``) More pixels than
            :func:`max_image_pixels`, refused before decoding.
        ValueError: ``decode_size`` is not a positive integer.

    Example:
        >>> import io
        >>> from PIL import Image
        >>> buffer = io.BytesIO()
        >>> Image.new("L", (800, 600), 128).save(buffer, format="JPEG")
        >>> load_image(buffer.getvalue(), decode_size=200).size  # JPEG decoded at 1/2
        (400, 300)
    """
    if decode_size is not None and (
        isinstance(decode_size, bool)
        or not isinstance(decode_size, int)
        or decode_size < 1
    ):
        raise ValueError(
            f"decode_size must be a positive int or None, got {decode_size!r}"
        )
    label = _source_name(source, name)
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as file:
                return _decode(file, decode_size, label)
        if isinstance(source, (bytes, bytearray, memoryview)):
            return _decode(io.BytesIO(source), decode_size, label)
        return _decode(source, decode_size, label)
    except (FileNotFoundError, UnreadableImageError, ConfigError):
        raise
    except DECODE_ERRORS as exc:
        raise UnreadableImageError(
            f"cannot read image {label}: {type(exc).__name__}: {exc}"
        ) from exc


def open_image(file: BinaryIO | str | os.PathLike[str], name: str) -> Image.Image:
    """``PIL.Image.open`` (header only) and :func:`check_pixel_limit`.

    Pillow's decompression-bomb warning is silenced: the pixel limit decides.

    Raises:
        ImageTooLargeError: More pixels than :func:`max_image_pixels`.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(file)
    check_pixel_limit(image, name)
    return image


def _decode(file: BinaryIO, decode_size: int | None, name: str) -> Image.Image:
    # The caller owns and closes ``file``; after ``load()`` the pixels no longer need it.
    image = open_image(file, name)
    if decode_size is not None and image.format == "JPEG":
        image.draft(None, (decode_size, decode_size))
    image.load()
    rgb = to_rgb8(image)
    if decode_size is not None:
        rgb = _reduce_to(rgb, decode_size)
    return rgb


def check_image(path: str | os.PathLike[str], full: bool = False) -> str | None:
    """Checks cheaply whether a file looks like a readable image.

    The cheap check opens the file with Pillow (reads the header: format, size, mode)
    and, for JPEG and PNG, looks for the end marker (``FFD9``, ``IEND``) at the end of the
    file, which a truncated download lacks; only when the marker is missing is the file
    decoded to decide. Costs about the time of one ``stat`` plus two small reads.

    Args:
        path: The file.
        full: Decode the whole image instead (slow; catches corrupt data inside a file
            with intact header and end marker).

    Returns:
        ``None`` when the file looks readable, else the reason, for example
        ``"truncated: no JPEG end marker"``.
    """
    try:
        if full:
            load_image(path)
            return None
        size = os.path.getsize(path)
        if size == 0:
            return "empty file"
        with open(path, "rb") as file:
            with open_image(file, os.fspath(path)) as image:
                image_format = image.format
                width, height = image.size
            if width < 1 or height < 1:
                return f"invalid size {width}x{height}"
            marker = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}.get(image_format or "")
            if marker is None:
                return None
            file.seek(max(0, size - 1024))
            tail = file.read()
        if image_format == "JPEG":
            intact = tail.rstrip(b"\x00\r\n\t ").endswith(marker)
        else:
            intact = marker in tail[-64:]
        if intact:
            return None
        # A missing end marker is suspicious, not proof: decode to decide.
        load_image(path)
        return None
    except ConfigError:
        raise
    except ImageTooLargeError as exc:
        return str(exc).split(": ", 1)[1]
    except UnreadableImageError as exc:
        return _reason(exc.__cause__ or exc)
    except DECODE_ERRORS as exc:
        return _reason(exc)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image format Pillow can identify"
    return f"{type(exc).__name__}: {exc}"


def is_image_file(
    path: str | Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> bool:
    """Whether ``path`` has one of ``extensions`` (case-insensitive)."""
    return os.fspath(path).lower().endswith(extensions)
