"""Reading a CPU view transform as the arguments of its GPU pipeline.

Walks the object tree of a per-image view transform — lightly's ``MultiViewTransform``
and its view transforms (``SimCLRViewTransform``, ``BYOLView1Transform``, … each a
torchvision ``Compose`` in ``.transform``), torchvision ``Compose`` / ``RandomApply``,
and lightly-derm's :class:`~lightly_derm.transforms.GraVISViewTransform`,
:class:`~lightly_derm.transforms.FGSSLView1Transform`,
:class:`~lightly_derm.transforms.Cutout` and :class:`~lightly_derm.transforms.RGBInput`
— and returns, per view, the keyword arguments of
:class:`~lightly_derm.transforms.gpu.GPUViewTransform` that reproduce its parameter
distributions. ``RandomApply(p)`` multiplies the probability of what it wraps, as it
does on the CPU. An operation the GPU pipeline cannot make, an order it cannot follow
(e.g. colour jitter after ``Normalize``) or an argument it does not support (a crop that
is not square, a rotation that expands the image) raises one :class:`ValueError` that
names the transform and where it sits; ``ignore`` drops chosen transform types on
purpose (FG-SSL's classifier drops AugMix on the device).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch
from lightly.transforms.gaussian_blur import GaussianBlur as LightlyGaussianBlur
from lightly.transforms.multi_view_transform import MultiViewTransform
from lightly.transforms.rotation import RandomRotate, RandomRotateDegrees
from lightly.transforms.solarize import RandomSolarization
from lightly.transforms.torchvision_v2_compatibility import ToTensor as LightlyToTensor
from torchvision import transforms as T1
from torchvision.transforms import v2

from lightly_derm.transforms.cutout import Cutout
from lightly_derm.transforms.rgb import RGBInput

__all__ = ["UntranslatableTransformError", "gpu_view_kwargs", "view_transforms"]

#: Conversions to an RGB float tensor in [0, 1]: the GPU pipeline's input already is.
_FORMAT = (
    v2.ToImage,
    v2.ToPureTensor,
    v2.ToTensor,
    v2.PILToTensor,
    v2.Identity,
    T1.ToTensor,
    T1.PILToTensor,
)
_COMPOSE = (v2.Compose, T1.Compose)
_RANDOM_APPLY = (v2.RandomApply, T1.RandomApply)

# Stages of the GPU pipeline, in its order; a CPU transform must not go backwards.
_CROP, _ROTATE, _JITTER, _GRAY, _BLUR, _SOLARIZE, _NORMALIZE, _CUTOUT = range(8)
_STAGE_NAMES = (
    "crop/resize",
    "rotation",
    "colour jitter",
    "grayscale",
    "blur",
    "solarisation",
    "normalisation",
    "Cutout",
)


class UntranslatableTransformError(ValueError):
    """A CPU view transform has a step the GPU view pipeline cannot reproduce."""


def view_transforms(transform: Any) -> list[Any]:
    """The per-view transforms of a multi-view transform (one entry per view).

    Unwraps :class:`~lightly_derm.transforms.RGBInput`; a lightly
    ``MultiViewTransform`` (SimCLR's, BYOL's, GraVIS's, FG-SSL's, …) gives its
    ``transforms``; any other callable is one view.
    """
    while isinstance(transform, RGBInput):
        transform = transform.transform
    if isinstance(transform, MultiViewTransform):
        return list(transform.transforms)
    return [transform]


def _is_view_wrapper(transform: Any) -> bool:
    """A view class that only runs the Compose in its ``transform`` attribute.

    lightly's view transforms (``SimCLRViewTransform``, ``BYOLView1Transform``, …,
    classes named ``*ViewTransform`` in ``lightly.transforms``) and lightly-derm's
    (``GraVISViewTransform``, ``FGSSLView1Transform``, ``RandomRotateDegrees``'s
    ``RandomApply``) follow this convention; other classes with a ``transform``
    attribute may do more in ``__call__`` and are not looked into.
    """
    cls = type(transform)
    module = cls.__module__
    known = module.startswith(("lightly.transforms", "lightly_derm.transforms")) and (
        re.search(r"View\d*Transform$", cls.__name__) is not None
        or isinstance(transform, (RandomRotateDegrees, LightlyToTensor, RGBInput))
    )
    return known and hasattr(transform, "transform")


def _symmetric(value: Any, centre: float, name: str, where: str) -> float:
    """Strength s of a ColorJitter range (centre − s, centre + s), lower end ≥ 0 clamped."""
    if value is None:
        return 0.0
    low, high = (float(v) for v in value)
    strength = round(high - centre, 12)  # 1.4 - 1 = 0.39999999999999991
    expected_low = max(0.0, centre - strength) if centre == 1.0 else -strength
    if strength < 0 or not math.isclose(low, expected_low, abs_tol=1e-9):
        raise UntranslatableTransformError(
            f"{where}: ColorJitter {name}={(low, high)} is not symmetric around "
            f"{centre}; the GPU pipeline draws {name} in [{centre} - s, {centre} + s]"
        )
    return strength


def _square(size: Any, what: str, where: str) -> int:
    sizes = [size] if isinstance(size, int) else list(size)
    if len(sizes) != 2 or sizes[0] != sizes[1]:
        raise UntranslatableTransformError(
            f"{where}: {what}(size={size}) — the GPU pipeline makes square views; "
            f"use {what}(({sizes[0]}, {sizes[0]}))"
        )
    return int(sizes[0])


def _leaves(
    transform: Any, p: float, where: str, ignore: tuple[type, ...]
) -> list[tuple[Any, float, str]]:
    """The leaf transforms with the probability they run and their place in the tree."""
    if ignore and isinstance(transform, ignore):
        return []
    name = type(transform).__name__
    if isinstance(transform, _RANDOM_APPLY):
        inner = [
            leaf
            for k, t in enumerate(transform.transforms)
            for leaf in _leaves(t, p * transform.p, f"{where} > {name}[{k}]", ignore)
        ]
        if transform.p < 1 and len([x for x in inner if x[0] is not None]) > 1:
            raise UntranslatableTransformError(
                f"{where} > {name}: RandomApply(p={transform.p}) of several operations "
                "applies them together; the GPU pipeline draws each on its own"
            )
        return inner
    if isinstance(transform, _COMPOSE):
        return [
            leaf
            for k, t in enumerate(transform.transforms)
            for leaf in _leaves(t, p, f"{where} > {name}[{k}]", ignore)
        ]
    if _is_view_wrapper(transform):
        return _leaves(transform.transform, p, f"{where} > {name}", ignore)
    return [(transform, p, f"{where} > {name}")]


def _is_format(leaf: Any) -> bool:
    if isinstance(leaf, _FORMAT):
        return True
    if isinstance(leaf, (v2.ToDtype, T1.ConvertImageDtype)):
        dtype = leaf.dtype
        if isinstance(dtype, dict):
            dtype = next(iter(dtype.values()), None)
        return dtype in (torch.float32, None)
    # lightly-derm's PIL/tensor → RGB converters (``_ToRGB``) change no pixel values.
    return type(leaf).__name__ == "_ToRGB" and type(leaf).__module__.startswith(
        "lightly_derm.transforms"
    )


def gpu_view_kwargs(
    view: Any, ignore: Sequence[type] = (), where: str | None = None
) -> dict[str, Any]:
    """The :class:`~lightly_derm.transforms.gpu.GPUViewTransform` arguments of one view.

    Args:
        view: A per-image view transform (e.g. lightly's ``SimCLRViewTransform``, a
            torchvision ``Compose``, :class:`~lightly_derm.transforms.GraVISViewTransform`).
        ignore: Transform types to leave out on purpose.
        where: Name of the view in error messages.

    Returns:
        Keyword arguments for ``GPUViewTransform``, every operation given explicitly
        (absent ones switched off), ``input_size`` from the crop or resize.

    Raises:
        UntranslatableTransformError: (a ``ValueError``) naming the first transform,
            argument or order the GPU pipeline cannot reproduce.

    Example:
        >>> from lightly.transforms import SimCLRViewTransform
        >>> from lightly_derm.transforms.gpu.translate import gpu_view_kwargs
        >>> kwargs = gpu_view_kwargs(SimCLRViewTransform(input_size=64))
        >>> kwargs["input_size"], kwargs["cj_prob"], kwargs["gaussian_blur"]
        (64, 0.8, 0.5)
    """
    where = where or type(view).__name__
    kwargs: dict[str, Any] = {
        "crop": None,
        "hf_prob": 0.0,
        "vf_prob": 0.0,
        "rr_prob": 0.0,
        "flip_first": True,
        "cj_prob": 0.0,
        "cj_strength": 1.0,
        "cj_bright": 0.0,
        "cj_contrast": 0.0,
        "cj_sat": 0.0,
        "cj_hue": 0.0,
        "random_gray_scale": 0.0,
        "gaussian_blur": 0.0,
        "solarization_prob": 0.0,
        "normalize": None,
        "cutout_holes": 0,
    }
    stage, seen, flipped = -1, set(), False

    def enter(step: int, leaf_where: str) -> None:
        nonlocal stage
        if step in seen:
            raise UntranslatableTransformError(
                f"{leaf_where}: a second {_STAGE_NAMES[step]} in one view; the GPU "
                "pipeline has one of each"
            )
        if step < stage:
            raise UntranslatableTransformError(
                f"{leaf_where}: {_STAGE_NAMES[step]} after {_STAGE_NAMES[stage]}; the "
                "GPU pipeline runs crop → rotation → colour jitter → grayscale → blur → "
                "solarisation → normalisation → Cutout (flips anywhere)"
            )
        seen.add(step)
        stage = step

    for leaf, p, leaf_where in _leaves(view, 1.0, where, tuple(ignore)):
        if _is_format(leaf):
            continue
        if isinstance(leaf, (v2.RandomResizedCrop, T1.RandomResizedCrop)):
            enter(_CROP, leaf_where)
            if p < 1:
                raise UntranslatableTransformError(
                    f"{leaf_where}: a crop applied with probability {p} < 1"
                )
            kwargs.update(
                input_size=_square(leaf.size, "RandomResizedCrop", leaf_where),
                crop="random_resized",
                min_scale=float(leaf.scale[0]),
                ratio=(float(leaf.ratio[0]), float(leaf.ratio[1])),
            )
            if float(leaf.scale[1]) != 1.0:
                raise UntranslatableTransformError(
                    f"{leaf_where}: RandomResizedCrop scale={tuple(leaf.scale)}; the GPU "
                    "pipeline's largest crop is the whole image (scale max 1)"
                )
        elif isinstance(leaf, (v2.Resize, T1.Resize)):
            enter(_CROP, leaf_where)
            if isinstance(leaf.size, int) or len(leaf.size) != 2:
                raise UntranslatableTransformError(
                    f"{leaf_where}: Resize(size={leaf.size}) resizes the shorter side; "
                    "the GPU pipeline resizes the whole image to a square, "
                    "Resize((s, s))"
                )
            kwargs.update(
                input_size=_square(leaf.size, "Resize", leaf_where), crop="resize"
            )
        elif isinstance(leaf, (v2.RandomHorizontalFlip, T1.RandomHorizontalFlip)):
            if kwargs["hf_prob"] > 0:
                raise UntranslatableTransformError(
                    f"{leaf_where}: a second RandomHorizontalFlip in one view; the GPU pipeline has "
                    "one of each"
                )
            kwargs["hf_prob"] = float(leaf.p) * p
            flipped = flipped or leaf.p * p > 0
        elif isinstance(leaf, (v2.RandomVerticalFlip, T1.RandomVerticalFlip)):
            if kwargs["vf_prob"] > 0:
                raise UntranslatableTransformError(
                    f"{leaf_where}: a second RandomVerticalFlip in one view; the GPU pipeline has "
                    "one of each"
                )
            kwargs["vf_prob"] = float(leaf.p) * p
            flipped = flipped or leaf.p * p > 0
        elif isinstance(leaf, (v2.RandomRotation, T1.RandomRotation)):
            enter(_ROTATE, leaf_where)
            fill = leaf.fill
            fills = list(fill.values()) if isinstance(fill, dict) else [fill]
            if (
                leaf.expand
                or leaf.center is not None
                or any(f not in (0, None) for f in fills)
            ):
                raise UntranslatableTransformError(
                    f"{leaf_where}: RandomRotation with expand, center or a fill other "
                    "than 0; the GPU pipeline rotates about the centre, filling 0"
                )
            kwargs.update(
                rr_prob=p,
                rr_degrees=(float(leaf.degrees[0]), float(leaf.degrees[1])),
                flip_first=flipped,
            )
        elif isinstance(leaf, RandomRotate):
            enter(_ROTATE, leaf_where)
            angle = float(leaf.angle)
            kwargs.update(
                rr_prob=float(leaf.prob) * p,
                rr_degrees=None if angle == 90.0 else (angle, angle),
                flip_first=flipped,
            )
        elif isinstance(leaf, (v2.ColorJitter, T1.ColorJitter)):
            enter(_JITTER, leaf_where)
            kwargs.update(
                cj_prob=p,
                cj_bright=_symmetric(leaf.brightness, 1.0, "brightness", leaf_where),
                cj_contrast=_symmetric(leaf.contrast, 1.0, "contrast", leaf_where),
                cj_sat=_symmetric(leaf.saturation, 1.0, "saturation", leaf_where),
                cj_hue=_symmetric(leaf.hue, 0.0, "hue", leaf_where),
            )
        elif isinstance(leaf, (v2.RandomGrayscale, T1.RandomGrayscale)):
            enter(_GRAY, leaf_where)
            kwargs["random_gray_scale"] = float(leaf.p) * p
        elif isinstance(leaf, LightlyGaussianBlur):
            enter(_BLUR, leaf_where)
            kwargs.update(
                gaussian_blur=float(leaf.prob) * p,
                sigmas=(float(leaf.sigmas[0]), float(leaf.sigmas[1])),
                blur_kernel_size=None,
            )
        elif isinstance(leaf, (v2.GaussianBlur, T1.GaussianBlur)):
            enter(_BLUR, leaf_where)
            kernel = list(leaf.kernel_size)
            if kernel[0] != kernel[-1]:
                raise UntranslatableTransformError(
                    f"{leaf_where}: GaussianBlur kernel_size={tuple(kernel)} is not "
                    "square"
                )
            kwargs.update(
                gaussian_blur=p,
                sigmas=(float(leaf.sigma[0]), float(leaf.sigma[1])),
                blur_kernel_size=int(kernel[0]),
            )
        elif isinstance(leaf, RandomSolarization):
            enter(_SOLARIZE, leaf_where)
            kwargs.update(
                solarization_prob=float(leaf.prob) * p,
                solarization_threshold=float(leaf.threshold) / 255,
            )
        elif isinstance(leaf, (v2.Normalize, T1.Normalize)):
            enter(_NORMALIZE, leaf_where)
            if p < 1:
                raise UntranslatableTransformError(
                    f"{leaf_where}: Normalize applied with probability {p} < 1"
                )
            kwargs["normalize"] = {"mean": list(leaf.mean), "std": list(leaf.std)}
        elif isinstance(leaf, Cutout):
            enter(_CUTOUT, leaf_where)
            if p < 1:
                raise UntranslatableTransformError(
                    f"{leaf_where}: Cutout applied with probability {p} < 1"
                )
            kwargs.update(
                cutout_holes=int(leaf.num_holes),
                cutout_length=int(leaf.length),
                cutout_value=float(leaf.value),
            )
        else:
            raise UntranslatableTransformError(
                f"{leaf_where}: cannot translate {type(leaf).__module__}."
                f"{type(leaf).__qualname__} to the GPU view pipeline (supported: "
                "RandomResizedCrop, Resize((s, s)), flips, RandomRotation, lightly's "
                "RandomRotate, ColorJitter, RandomGrayscale, GaussianBlur, "
                "RandomSolarization, Normalize, Cutout, RandomApply, Compose); leave it "
                "out with ignore=..., or write the method's gpu_view_transform"
            )
    if kwargs["crop"] is None:
        raise UntranslatableTransformError(
            f"{where}: no RandomResizedCrop or Resize((s, s)) to set the view size"
        )
    if kwargs["rr_prob"] == 0:
        kwargs["flip_first"] = True
    return kwargs
