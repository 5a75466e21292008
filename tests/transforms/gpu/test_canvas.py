from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from lightly_derm.transforms.gpu import CanvasTransform, default_canvas_size


def _image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(width * 1000 + height)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


@pytest.mark.parametrize(
    "width,height,expected",
    [
        (150, 100, (73, 97)),
        (100, 150, (97, 73)),
        (73, 73, (73, 73)),
        (300, 100, (73, 97)),
    ],
)
def test_shapes_and_placement(width, height, expected) -> None:
    """Shorter side to size, longer side centre-cropped to size·4/3, top-left placement."""
    transform = CanvasTransform(view_size=64)
    assert transform.size == default_canvas_size(64) == 73 and transform.side == 97
    image = _image(width, height)
    canvas = transform(image)
    assert canvas.image.shape == (3, 97, 97) and canvas.image.dtype == torch.uint8
    assert (canvas.height, canvas.width) == expected and canvas.view_size == 64
    h, w = expected
    assert canvas.image[:, h:].sum() == 0 and canvas.image[:, :, w:].sum() == 0
    # The content: PIL's bilinear resize, then the centre crop.
    new_h, new_w = transform.resized_shape(height, width)
    resized = TF.pil_to_tensor(image.resize((new_w, new_h), Image.BILINEAR))
    top, left = (new_h - h) // 2, (new_w - w) // 2
    assert torch.equal(
        canvas.image[:, :h, :w], resized[:, top : top + h, left : left + w]
    )


def test_other_inputs() -> None:
    transform = CanvasTransform(view_size=32, size=40)
    gray = transform(_image(60, 40, "L"))
    assert torch.equal(gray.image[0], gray.image[1])
    tensor = torch.rand(3, 40, 60)
    from_tensor = transform(tensor)
    from_uint8 = transform((tensor * 255).round().to(torch.uint8))
    assert torch.equal(from_tensor.image, from_uint8.image)
    assert (from_tensor.height, from_tensor.width) == (40, 53)
    array = transform(np.zeros((40, 60), dtype=np.uint8))
    assert array.image.shape == (3, 53, 53)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="view_size"):
        CanvasTransform(view_size=0)
    with pytest.raises(ValueError, match="at least view_size"):
        CanvasTransform(view_size=64, size=32)
    with pytest.raises(ValueError, match="max_aspect"):
        CanvasTransform(max_aspect=0.5)
    with pytest.raises(TypeError):
        CanvasTransform()("not an image")
