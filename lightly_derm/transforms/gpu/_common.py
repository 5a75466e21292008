"""Shared helpers of the batched GPU transforms: input checks, dtypes, random draws."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def as_float_images(images: Any, name: str = "images") -> Tensor:
    """Checks a (N, C, H, W) image batch; returns it as float in [0, 1].

    uint8 becomes float32 / 255; float16 and bfloat16 become float32; float32 and
    float64 are returned as they are (no copy).

    Raises:
        TypeError: Not a tensor, or neither uint8 nor floating point.
        ValueError: Not 4-D.
    """
    check_images(images, name)
    if images.dtype == torch.uint8:
        return images.to(torch.float32).mul_(1.0 / 255.0)
    if images.dtype in (torch.float16, torch.bfloat16):
        return images.to(torch.float32)
    return images


def check_images(
    images: Any, name: str = "images", channels: int | None = None
) -> None:
    """Raises a TypeError/ValueError naming ``name`` unless it is a (N, C, H, W) batch."""
    if not isinstance(images, Tensor):
        raise TypeError(
            f"{name} must be a tensor (N, C, H, W), got {type(images).__name__}"
        )
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"{name} must be uint8 or floating point, got {images.dtype}")
    if images.ndim != 4:
        raise ValueError(
            f"{name} must be a batch (N, C, H, W), got shape {tuple(images.shape)}"
        )
    if channels is not None and images.shape[1] != channels:
        raise ValueError(
            f"{name} must have {channels} channels, got shape {tuple(images.shape)}"
        )


def to_device(value: Any, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A parameter as a tensor on ``device``: tensors are moved, Python scalars filled.

    ``torch.as_tensor(3.0, device="cuda")`` copies from pageable host memory (a
    synchronising copy); ``torch.full`` writes the value with a kernel instead.
    """
    if isinstance(value, Tensor):
        return value.to(device=device, dtype=dtype)
    if isinstance(value, (bool, int, float)):
        return torch.full((), value, dtype=dtype, device=device)
    return torch.as_tensor(value, dtype=dtype, device=device)


def rand(
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """Uniform [0, 1) float32 draws on ``device`` (no host synchronisation).

    Raises:
        ValueError: ``generator`` lives on another device.
    """
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"the generator is on {generator.device} but the images are on {device}; "
            "use torch.Generator(device=images.device)"
        )
    return torch.rand(shape, generator=generator, device=device)


def check_probability(value: float, name: str) -> float:
    """Returns ``value`` as a float; raises ValueError naming it unless in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return float(value)
