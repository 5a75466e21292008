from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightly_derm.data import UnreadableImageError, check_image, load_image
from lightly_derm.data.image_io import (
    MAX_IMAGE_PIXELS,
    ImageTooLargeError,
    max_image_pixels,
)
from lightly_derm.errors import ConfigError
from lightly_derm.transforms import to_rgb8
from tests.data.images import png16_rgb, rgb_array, truncate


def _gray_reference(values: np.ndarray, scale: float) -> np.ndarray:
    """Independent reference: per-pixel loop, float64 rounding, replicated to RGB."""
    out = np.zeros((*values.shape, 3), dtype=np.uint8)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = min(max(float(values[i, j]) * scale, 0.0), 255.0)
            out[i, j] = int(np.floor(v + 0.5))
    return out


def test_rgb_is_kept(tmp_path: Path) -> None:
    array = rgb_array()
    Image.fromarray(array).save(tmp_path / "a.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "a.png")), array)


@pytest.mark.parametrize("shape", [(5, 7), (16, 3)])
def test_16bit_gray_is_scaled_not_clipped(tmp_path: Path, shape) -> None:
    rng = np.random.default_rng(shape[0])
    values = rng.integers(0, 65536, shape, dtype=np.uint16)
    values.flat[:3] = [0, 257, 65535]
    Image.fromarray(values).save(tmp_path / "g16.png")
    image = load_image(tmp_path / "g16.png")
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), _gray_reference(values, 1 / 257))
    # What plain PIL does (clip at 255) would be nearly all white:
    assert np.asarray(image).mean() < 200


def test_16bit_rgb_png(tmp_path: Path) -> None:
    values = np.random.default_rng(1).integers(0, 65536, (6, 9, 3), dtype=np.uint16)
    png16_rgb(tmp_path / "rgb16.png", values)
    image = load_image(tmp_path / "rgb16.png")
    assert image.mode == "RGB" and image.size == (9, 6)
    assert np.abs(np.asarray(image).astype(float) - values / 257).max() <= 1.0


def test_int32_and_float_modes() -> None:
    ints = np.array([[-5, 0, 257], [1000, 65535, 100000]], dtype=np.int32)
    image = to_rgb8(Image.fromarray(ints, mode="I"))
    clipped = np.clip(ints, 0, 65535)
    assert np.array_equal(np.asarray(image), _gray_reference(clipped, 1 / 257))
    floats = np.array([[-0.2, 0.0, 0.5], [0.999, 1.0, 3.0]], dtype=np.float32)
    image = to_rgb8(Image.fromarray(floats, mode="F"))
    assert np.array_equal(
        np.asarray(image), _gray_reference(np.clip(floats, 0, 1), 255)
    )


def test_alpha_is_dropped(tmp_path: Path) -> None:
    rgba = np.random.default_rng(2).integers(0, 256, (8, 10, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: colour channels must still be kept
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "a.png")), rgba[..., :3])
    la = Image.fromarray(rgba[..., :2].copy(), mode="LA")
    expected = np.repeat(rgba[..., :1], 3, axis=-1)
    assert np.array_equal(np.asarray(to_rgb8(la)), expected)


def test_gray_and_palette(tmp_path: Path) -> None:
    gray = np.arange(80, dtype=np.uint8).reshape(8, 10)
    Image.fromarray(gray).save(tmp_path / "g.png")
    assert np.array_equal(
        np.asarray(load_image(tmp_path / "g.png")), np.repeat(gray[..., None], 3, -1)
    )
    palette = Image.fromarray(rgb_array(8, 10)).quantize(16)
    palette.save(tmp_path / "p.png")
    lut = np.asarray(palette.getpalette(), dtype=np.uint8).reshape(-1, 3)
    expected = lut[np.asarray(palette)]
    assert np.array_equal(np.asarray(load_image(tmp_path / "p.png")), expected)


def test_cmyk(tmp_path: Path) -> None:
    cmyk = np.random.default_rng(3).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.tif")
    image = load_image(tmp_path / "c.tif")
    c = cmyk[..., :3].astype(float)
    k = cmyk[..., 3:].astype(float)
    expected = (255 - c) * (255 - k) / 255  # subtractive model
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image) - expected).max() <= 1.0
    # a CMYK JPEG reads, too
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.jpg")
    assert load_image(tmp_path / "c.jpg").mode == "RGB"


@pytest.mark.parametrize(
    "size,decode_size", [((800, 600), 200), ((800, 600), 70), ((333, 1000), 64)]
)
def test_decode_size_keeps_short_side_and_content(size, decode_size: int) -> None:
    array = np.asarray(
        Image.fromarray(rgb_array(8, 8, seed=4)).resize(size, Image.BILINEAR)
    )
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    full = load_image(buffer.getvalue())
    small = load_image(buffer.getvalue(), decode_size=decode_size)
    assert min(small.size) >= decode_size
    assert min(small.size) < 2 * decode_size
    assert small.size[0] / small.size[1] == pytest.approx(size[0] / size[1], rel=0.02)
    reference = np.asarray(full.resize(small.size, Image.BOX), dtype=float)
    assert np.abs(np.asarray(small, dtype=float) - reference).mean() < 6.0


def test_decode_size_on_png_reduces() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), "tan").save(buffer, format="PNG")
    assert load_image(buffer.getvalue(), decode_size=100).size == (160, 120)
    with pytest.raises(ValueError, match="decode_size"):
        load_image(buffer.getvalue(), decode_size=0)


def test_check_image_finds_broken_files(tmp_path: Path, isic_image_paths) -> None:
    good = tmp_path / "good.jpg"
    good.write_bytes(isic_image_paths[0].read_bytes())
    assert check_image(good) is None
    padded = tmp_path / "padded.jpg"  # valid JPEG with trailing zero padding
    padded.write_bytes(good.read_bytes() + b"\x00" * 100)
    assert check_image(padded) is None
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes())
    truncate(truncated)
    assert "truncated" in check_image(truncated)
    (tmp_path / "empty.png").write_bytes(b"")
    assert check_image(tmp_path / "empty.png") == "empty file"
    (tmp_path / "text.jpg").write_text("not an image")
    assert "identify" in check_image(tmp_path / "text.jpg")
    Image.fromarray(rgb_array(64, 64)).save(tmp_path / "t.png")
    truncate(tmp_path / "t.png", 0.6)
    assert check_image(tmp_path / "t.png") is not None
    assert check_image(tmp_path / "t.png", full=True) is not None


def test_unreadable_error_names_file(tmp_path: Path) -> None:
    Image.fromarray(rgb_array(64, 64)).save(tmp_path / "x.jpg")
    truncate(tmp_path / "x.jpg", 0.3)
    with pytest.raises(UnreadableImageError, match="x.jpg") as info:
        load_image(tmp_path / "x.jpg")
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnreadableImageError, match="<bytes>"):
        load_image(b"garbage")
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.jpg")


def test_16bit_conversion_in_blocks_matches_the_formula() -> None:
    # tall enough for several row blocks; every 16-bit value, in integers
    values = np.arange(65536 * 40, dtype=np.int64) % 65536
    array = values.reshape(-1, 1024).astype(np.uint16)  # 2560 rows of 1024 px
    expected = ((array.astype(np.int64) * 2 + 257) // 514).astype(np.uint8)
    got = np.asarray(to_rgb8(Image.fromarray(array)))
    assert got.shape == (*array.shape, 3)
    assert np.array_equal(got[..., 0], expected) and np.array_equal(
        got[..., 2], expected
    )


def test_16bit_conversion_memory_is_bounded() -> None:
    # before: int64 intermediates of the whole image (3.9 GB for 12000x12000)
    import tracemalloc

    image = Image.fromarray(np.full((3000, 2000), 40000, dtype=np.uint16))
    tracemalloc.start()
    rgb = to_rgb8(image)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    output = 3000 * 2000 * 3
    assert rgb.getpixel((5, 5)) == (156, 156, 156)
    # the RGB result (twice: the array and the PIL copy) plus bounded blocks, far
    # below the 8 bytes per pixel of one int64 copy
    assert peak < 2 * output + 64 * 2**20, peak


def test_images_above_the_pixel_limit_are_refused_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "huge.png"
    Image.new("I;16", (400, 300)).save(path)
    monkeypatch.setenv("LIGHTLY_DERM_MAX_IMAGE_PIXELS", "100_000")
    assert max_image_pixels() == 100_000
    with pytest.raises(ImageTooLargeError) as info:
        load_image(path)
    message = str(info.value)
    assert message.startswith(
        f"cannot read image {path}: 400x300 = 120,000 pixels is more than the limit "
        "of 100,000"
    )
    assert "LIGHTLY_DERM_MAX_IMAGE_PIXELS" in message and "\n" not in message
    assert isinstance(info.value, UnreadableImageError)
    assert "120,000 pixels is more than the limit" in check_image(path)
    monkeypatch.setenv("LIGHTLY_DERM_MAX_IMAGE_PIXELS", "0")
    assert max_image_pixels() is None and load_image(path).size == (400, 300)
    monkeypatch.setenv("LIGHTLY_DERM_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match="LIGHTLY_DERM_MAX_IMAGE_PIXELS must be"):
        load_image(path)
    monkeypatch.delenv("LIGHTLY_DERM_MAX_IMAGE_PIXELS")
    assert max_image_pixels() == MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS
