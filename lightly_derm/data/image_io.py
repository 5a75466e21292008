"""Reading image files as 8-bit RGB PIL images, fast and with clear errors.

Builds on Pillow (and follows lightly's and torchvision's ``pil_loader``: open the file,
decode, convert to RGB). What it adds:

- **Correct bit-depth conversion** by :func:`lightly_derm.transforms.to_rgb8` (its
  rules, per PIL mode, are listed there): Pillow's ``convert("RGB")`` clips 16-bit
  grayscale at 255, which turns most 16-bit images white; here 16-bit values are
  scaled to 8 bit.
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

from PIL import Image

from lightly_derm.errors import ConfigError, DataError
from lightly_derm.transforms.rgb import to_rgb8
from lightly_derm.utils.validation import check_int

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
        ValueError: ``decode_size`` is not an integer >= 1.

    Example:
        >>> import io
        >>> from PIL import Image
        >>> buffer = io.BytesIO()
        >>> Image.new("L", (800, 600), 128).save(buffer, format="JPEG")
        >>> load_image(buffer.getvalue(), decode_size=200).size  # JPEG decoded at 1/2
        (400, 300)
    """
    if decode_size is not None:
        check_int("decode_size", decode_size)
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
