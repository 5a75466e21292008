from __future__ import annotations

import numpy as np
import pytest
import torch
from lightly.transforms.multi_view_transform import MultiViewTransform
from lightly.transforms.utils import IMAGENET_NORMALIZE
from PIL import Image

from lightly_derm.transforms import GraVISTransform, GraVISViewTransform

#: Every augmentation off: the view is the image, resized.
IDENTITY = dict(
    min_scale=1.0,
    rr_prob=0.0,
    cj_prob=0.0,
    random_gray_scale=0.0,
    gaussian_blur=0.0,
    hf_prob=0.0,
    normalize=None,
    cutout_holes=0,
)


def _image(size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


INPUTS = {
    "PIL RGB": Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (50, 70, 3), np.uint8)
    ),
    "PIL L": Image.new("L", (70, 50), 128),
    "PIL RGBA": Image.new("RGBA", (70, 50), (10, 200, 30, 5)),
    "float (3,H,W)": torch.rand(3, 50, 70),
    "float (1,H,W)": torch.rand(1, 50, 70),
    "float (H,W)": torch.rand(50, 70),
    "uint8 (3,H,W)": torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8),
    "array (H,W,3)": np.zeros((50, 70, 3), np.uint8),
}


@pytest.mark.parametrize("label", list(INPUTS))
def test_inputs_give_k_normalised_rgb_views(label) -> None:
    transform = GraVISTransform(num_views=3, input_size=24)
    assert isinstance(transform, MultiViewTransform)
    views = transform(INPUTS[label])
    assert len(views) == 3
    for view in views:
        assert type(view) is torch.Tensor  # plain tensors, not tv_tensors
        assert view.shape == (3, 24, 24) and view.dtype == torch.float32
        assert torch.isfinite(view).all()


def test_views_are_independent_and_seeded_by_torch() -> None:
    image = INPUTS["PIL RGB"]
    torch.manual_seed(0)
    views = GraVISTransform(num_views=4, input_size=32)(image)
    torch.manual_seed(0)
    again = GraVISTransform(num_views=4, input_size=32)(image)
    for a, b in zip(views, again, strict=True):
        assert torch.equal(a, b)
    for i in range(4):
        for j in range(i):
            assert not torch.equal(views[i], views[j])


def test_everything_off_is_the_image() -> None:
    image = _image()
    (view,) = GraVISTransform(num_views=1, input_size=32, **IDENTITY)(image)
    torch.testing.assert_close(view, image)
    # PIL input: ToTensor of the same pixels.
    pil = Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    (view,) = GraVISTransform(num_views=1, input_size=32, **IDENTITY)(pil)
    expected = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(view, expected)


def test_each_augmentation_parameter_acts() -> None:
    image = _image()

    def view(**changes) -> torch.Tensor:
        return GraVISViewTransform(**{"input_size": 32, **IDENTITY, **changes})(image)

    torch.testing.assert_close(view(hf_prob=1.0), image.flip(-1))
    torch.testing.assert_close(view(vf_prob=1.0), image.flip(-2))
    torch.testing.assert_close(
        view(rr_prob=1.0, rr_degrees=None), torch.rot90(image, 1, dims=(1, 2))
    )
    gray = view(random_gray_scale=1.0)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    expected_gray = (0.2989 * image[0] + 0.587 * image[1] + 0.114 * image[2]).clamp(
        0, 1
    )
    torch.testing.assert_close(gray[0], expected_gray, atol=1e-3, rtol=0)
    mean = torch.tensor(IMAGENET_NORMALIZE["mean"]).view(3, 1, 1)
    std = torch.tensor(IMAGENET_NORMALIZE["std"]).view(3, 1, 1)
    torch.testing.assert_close(view(normalize=IMAGENET_NORMALIZE), (image - mean) / std)
    holes = view(cutout_holes=3, cutout_length=6, cutout_value=-5.0)
    assert 0 < (holes == -5.0).all(dim=0).sum() <= 3 * 36
    blurred = view(gaussian_blur=1.0, sigmas=(1.5, 2.0))
    assert blurred.std() < image.std() * 0.7  # noise image loses contrast
    assert not torch.equal(view(cj_prob=1.0), image)
    assert not torch.equal(view(min_scale=0.2), image)
    assert view(input_size=16).shape == (3, 16, 16)
    # Degrees bound the rotation: ±0 degrees is no rotation at all.
    torch.testing.assert_close(view(rr_prob=1.0, rr_degrees=0.0), image)


def test_authors_defaults() -> None:
    t = GraVISViewTransform()
    text = repr(t)
    for part in (
        "size=(224, 224), scale=(0.2, 1.0)",
        "brightness=(0.6, 1.4), contrast=(0.6, 1.4), saturation=(0.6, 1.4), hue=(-0.1, 0.1)",
        "RandomGrayscale(p=0.2)",
        "sigma=[0.1, 2.0]",
        "RandomHorizontalFlip(p=0.5)",
        "Cutout(num_holes=3, length=32, value=0.0)",
    ):
        assert part in text, part
    assert "length=9" in repr(GraVISViewTransform(input_size=64))  # scaled to size
    assert GraVISTransform().num_views == 4


def test_bad_inputs() -> None:
    transform = GraVISTransform(num_views=2, input_size=16)
    with pytest.raises(ValueError, match=r"\(3, H, W\), got shape \(4, 8, 8\)"):
        transform(torch.rand(4, 8, 8))
    with pytest.raises(TypeError, match="uint8 or floating point, got torch.int32"):
        transform(torch.zeros(3, 8, 8, dtype=torch.int32))
    with pytest.raises(TypeError, match="PIL image, a tensor.*got str"):
        transform("image.jpg")
    with pytest.raises(ValueError, match="num_views must be an integer >= 1, got 0"):
        GraVISTransform(num_views=0)
    with pytest.raises(ValueError, match="blur_kernel_size must be a positive odd"):
        GraVISTransform(blur_kernel_size=4)
    with pytest.raises(ValueError, match="min_scale"):
        GraVISTransform(min_scale=0.0)
