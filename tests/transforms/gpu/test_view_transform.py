from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.transforms.gaussian_blur import GaussianBlur as LightlyBlur
from lightly.transforms.rotation import RandomRotate
from lightly.transforms.solarize import RandomSolarization
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from lightly_derm import registry
from lightly_derm.transforms import Cutout
from lightly_derm.transforms.gpu import GPUMultiViewTransform, GPUViewTransform
from lightly_derm.utils.host_sync import record_host_syncs

PLAIN = {
    "cj_prob": 0.0,
    "random_gray_scale": 0.0,
    "gaussian_blur": 0.0,
    "normalize": None,
}


# ---------------------------------------------------------------- CPU configuration
def _walk(transform: Any, p: float = 1.0) -> list[tuple[Any, float]]:
    """The leaf transforms of a CPU view transform with the probability they run."""
    if isinstance(transform, (v2.RandomApply,)):
        return [
            t for inner in transform.transforms for t in _walk(inner, p * transform.p)
        ]
    for attribute in ("transforms", "transform"):
        inner = getattr(transform, attribute, None)
        if isinstance(inner, (list, tuple)):
            return [t for item in inner for t in _walk(item, p)]
        if inner is not None and not isinstance(transform, v2.Transform | Cutout):
            return _walk(inner, p)
    return [(transform, p)]


def _cpu_config(view: Any, input_size: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "crop": None,
        "hf_prob": 0.0,
        "vf_prob": 0.0,
        "rr_prob": 0.0,
        "rr_range": None,
        "cj_prob": 0.0,
        "jitter": (0.0, 0.0, 0.0, 0.0),
        "gray_prob": 0.0,
        "blur_prob": 0.0,
        "solarize_prob": 0.0,
        "normalize": None,
        "cutout": (0, 0, 0.0),
    }
    for leaf, p in _walk(view):
        if isinstance(leaf, v2.RandomResizedCrop):
            config.update(
                crop="random_resized", scale=tuple(leaf.scale), ratio=tuple(leaf.ratio)
            )
            assert tuple(leaf.size) == (input_size, input_size)
        elif isinstance(leaf, v2.Resize):
            config["crop"] = "resize"
            assert tuple(leaf.size) == (input_size, input_size)
        elif isinstance(leaf, v2.RandomHorizontalFlip):
            config["hf_prob"] = leaf.p * p
        elif isinstance(leaf, v2.RandomVerticalFlip):
            config["vf_prob"] = leaf.p * p
        elif isinstance(leaf, v2.RandomRotation):
            config.update(rr_prob=p, rr_range=tuple(leaf.degrees))
        elif isinstance(leaf, RandomRotate):
            config.update(rr_prob=leaf.prob * p, rr_range=None)
        elif isinstance(leaf, v2.ColorJitter):
            b, c, s, h = leaf.brightness, leaf.contrast, leaf.saturation, leaf.hue
            config["cj_prob"] = p
            config["jitter"] = tuple(
                0.0 if r is None else round(float(r[1]) - (0.0 if i == 3 else 1.0), 6)
                for i, r in enumerate((b, c, s, h))
            )
        elif isinstance(leaf, v2.RandomGrayscale):
            config["gray_prob"] = leaf.p * p
        elif isinstance(leaf, LightlyBlur):
            config.update(
                blur_prob=leaf.prob * p, sigmas=tuple(map(float, leaf.sigmas))
            )
        elif isinstance(leaf, v2.GaussianBlur):
            config.update(
                blur_prob=p,
                sigmas=tuple(map(float, leaf.sigma)),
                kernel=leaf.kernel_size[0],
            )
        elif isinstance(leaf, RandomSolarization):
            config.update(solarize_prob=leaf.prob * p, threshold=leaf.threshold / 255)
        elif isinstance(leaf, v2.Normalize):
            config["normalize"] = (tuple(leaf.mean), tuple(leaf.std))
        elif isinstance(leaf, Cutout):
            config["cutout"] = (leaf.num_holes, leaf.length, leaf.value)
    return config


def _gpu_config(view: GPUViewTransform, cpu: dict[str, Any]) -> dict[str, Any]:
    config = {
        "crop": view.crop,
        "hf_prob": view.hf_prob,
        "vf_prob": view.vf_prob,
        "rr_prob": view.rr_prob,
        "rr_range": view.rr_range if view.rr_prob else None,
        "cj_prob": view.cj_prob if any(view.jitter) else 0.0,
        "jitter": tuple(round(v, 6) for v in view.jitter)
        if view.cj_prob
        else (0.0,) * 4,
        "gray_prob": view.gray_prob,
        "blur_prob": view.blur_prob,
        "solarize_prob": view.solarize_prob,
        "normalize": view.normalize,
        "cutout": (view.cutout_holes, view.cutout_length, view.cutout_value)
        if view.cutout_holes
        else (0, 0, 0.0),
    }
    if "scale" in cpu:
        config.update(scale=view.scale, ratio=view.ratio)
    if "sigmas" in cpu:
        config["sigmas"] = view.sigmas
    if "kernel" in cpu:
        config["kernel"] = view.blur_kernel_size
    if "threshold" in cpu:
        config["threshold"] = view.solarize_threshold
    return config


def _cpu_views(method: Any, input_size: int) -> list[Any]:
    transform = method.cpu_view_transform(input_size)
    transform = getattr(transform, "transform", transform)  # RGBInput
    return list(transform.transforms)


@pytest.mark.parametrize(
    "name",
    [
        "byol",
        "ap_byol",
        "simclr",
        "barlow_twins",
        "gravis",
        "fgssl",
        "fgssl_classifier",
    ],
)
def test_gpu_pipeline_mirrors_cpu_transform(name: str) -> None:
    """Every parameter of every view equals the CPU transform's (read from its objects)."""
    method = registry.create("method", name, backbone="resnet18")
    cpu_views = _cpu_views(method, 64)
    gpu = method.gpu_view_transform(64)
    assert gpu.num_views == len(cpu_views) and gpu.input_size == 64
    for k, (cpu_view, gpu_view) in enumerate(
        zip(cpu_views, gpu.transforms, strict=True)
    ):
        cpu = _cpu_config(cpu_view, 64)
        assert _gpu_config(gpu_view, cpu) == cpu, f"{name} view {k}"


# ---------------------------------------------------------------- behaviour
def _images(n: int = 8, size: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size + 8), dtype=torch.uint8, generator=g)


def test_determinism_and_dtypes() -> None:
    view = GPUViewTransform(
        16, rr_prob=0.5, rr_degrees=10, solarization_prob=0.5, cutout_holes=2
    )
    images = _images()
    a = view(images, generator=torch.Generator().manual_seed(1))
    b = view(images, generator=torch.Generator().manual_seed(1))
    c = view(images, generator=torch.Generator().manual_seed(2))
    assert a.shape == (8, 3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    floats = view(images.double() / 255, generator=torch.Generator().manual_seed(1))
    assert floats.dtype == torch.float64
    torch.testing.assert_close(floats.float(), a, rtol=0, atol=1e-4)
    several = view(images, num_views=3, generator=torch.Generator().manual_seed(1))
    assert several.shape == (8, 3, 3, 16, 16)


def test_rates() -> None:
    """Flip, grayscale, solarisation and blur happen at their probabilities."""
    n = 3000
    ramp = torch.linspace(0, 255, 12).round().to(torch.uint8)
    images = ramp.view(1, 1, 1, 12).expand(n, 3, 12, 12).clone()
    images[:, 1] //= 2  # coloured, so that grayscale is visible
    g = torch.Generator().manual_seed(0)
    resized = GPUViewTransform(12, crop="resize", hf_prob=0.0, **PLAIN)(images[:1])
    flipped = GPUViewTransform(12, crop="resize", hf_prob=0.3, **PLAIN)(
        images, generator=g
    )
    rate = (flipped[:, 0, 0, 0] > flipped[:, 0, 0, -1]).float().mean()
    assert abs(rate - 0.3) < 0.03
    gray = GPUViewTransform(
        12, crop="resize", hf_prob=0.0, **{**PLAIN, "random_gray_scale": 0.4}
    )(images, generator=g)
    rate = (gray[:, 0] == gray[:, 1]).all(-1).all(-1).float().mean()
    assert abs(rate - 0.4) < 0.03
    solar = GPUViewTransform(
        12, crop="resize", hf_prob=0.0, solarization_prob=0.25, **PLAIN
    )(images, generator=g)
    rate = (solar != resized).any(-1).any(-1).any(-1).float().mean()
    assert abs(rate - 0.25) < 0.03
    blur = GPUViewTransform(
        12, crop="resize", hf_prob=0.0, **{**PLAIN, "gaussian_blur": 0.1}
    )(images, generator=g)
    rate = ((blur - resized).abs().amax(dim=(1, 2, 3)) > 1e-6).float().mean()
    assert abs(rate - 0.1) < 0.02


def test_fixed_geometry_equals_torchvision_resize() -> None:
    """crop='resize' without flips: torchvision's Resize (bilinear, up-scaling)."""
    images = _images(3, 10)
    out = GPUViewTransform(20, crop="resize", hf_prob=0.0, **PLAIN)(images)
    ref = torch.stack(
        [TF.resize(im.double() / 255, [20, 20], antialias=True) for im in images]
    )
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-6)


def test_multi_view_layout_dtype_and_format() -> None:
    plain = GPUViewTransform(16, crop="resize", hf_prob=0.0, **PLAIN)
    flip = GPUViewTransform(16, crop="resize", hf_prob=1.0, **PLAIN)
    multi = GPUMultiViewTransform([plain, flip, flip])
    assert [count for _, _, count in multi.groups] == [1, 2]
    images = _images(4)
    out = multi(images, dtype=torch.bfloat16, memory_format=torch.channels_last)
    assert out.shape == (12, 3, 16, 16) and out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last)
    views = out.float().unflatten(0, (4, 3))  # image-major
    torch.testing.assert_close(views[:, 1], TF.horizontal_flip(views[:, 0]))
    torch.testing.assert_close(views[:, 2], views[:, 1])
    contiguous = multi(images)
    assert contiguous.is_contiguous() and contiguous.dtype == torch.float32


def test_out_writes_the_same_views() -> None:
    """``out=`` (how the multi-view transform fills its batch) gives the full pipeline.

    Colour, normalisation and Cutout must all reach ``out``, in its dtype and layout,
    with the same random draws as the returned tensor.
    """
    view = GPUViewTransform(
        16,
        rr_prob=0.5,
        rr_degrees=30,
        solarization_prob=0.5,
        random_gray_scale=0.5,
        cutout_holes=1,
        cutout_length=5,
    )
    images = _images(6)
    ref = view(images, num_views=2, generator=torch.Generator().manual_seed(3))
    out = torch.zeros(6, 2, 3, 16, 16)
    made = view(
        images, num_views=2, generator=torch.Generator().manual_seed(3), out=out
    )
    assert made is out
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    slots = torch.zeros(6, 3, 3, 16, 16, dtype=torch.bfloat16)[:, 1:]
    view(images, num_views=2, generator=torch.Generator().manual_seed(3), out=slots)
    torch.testing.assert_close(slots.float(), ref, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="out must be"):
        view(images, num_views=2, out=torch.zeros(6, 3, 3, 16, 16))
    multi = GPUMultiViewTransform([view, view])
    batch = multi(images, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(batch.unflatten(0, (6, 2)), ref, rtol=0, atol=1e-6)


def test_no_host_syncs() -> None:
    method = registry.create("method", "gravis", backbone="resnet18", augment="gpu")
    pipeline = method.gpu_view_transform(32)
    images = _images(4, 40)
    sizes = torch.tensor([[40, 48]] * 4)
    pipeline(images, sizes)  # first call: makes the normalisation constants once
    with record_host_syncs(factories=True) as syncs:
        pipeline(images, sizes, dtype=torch.bfloat16, memory_format=torch.channels_last)
    assert len(syncs) == 0, syncs.summary()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="crop"):
        GPUViewTransform(crop="center")
    with pytest.raises(ValueError, match="hf_prob"):
        GPUViewTransform(hf_prob=1.5)
    with pytest.raises(ValueError, match="blur_kernel_size"):
        GPUViewTransform(blur_kernel_size=4)
    with pytest.raises(ValueError, match="input_size"):
        GPUMultiViewTransform([GPUViewTransform(32), GPUViewTransform(64)])
    with pytest.raises(TypeError, match="GPUViewTransform"):
        GPUMultiViewTransform([v2.RandomHorizontalFlip()])
    with pytest.raises(ValueError, match="channels"):
        GPUViewTransform(16)(torch.rand(2, 2, 20, 20))
