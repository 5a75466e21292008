"""Batched Gaussian blur with a standard deviation per image.

Builds on :func:`torch.nn.functional.conv2d` (a depthwise, separable convolution) and
torchvision's ``transforms.v2.functional.gaussian_blur`` definition: kernel
exp(−t²/(2σ²)) normalised over t = −(k−1)/2 … (k−1)/2, reflect padding. What it adds:
σ differs per image (one depthwise convolution, the image index folded into the
channels), so a batch is blurred in two convolutions without a loop.

lightly's ``GaussianBlur`` blurs with PIL's ``GaussianBlur(radius=σ)``, an extended
box-blur approximation of the same Gaussian; torchvision's (and GraVIS's) is the
truncated Gaussian kernel computed here. Both draw σ uniformly from ``sigmas``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightly_derm.transforms.gpu._common import as_float_images, to_device

__all__ = ["default_kernel_size", "gaussian_blur", "gaussian_kernels"]


def default_kernel_size(max_sigma: float) -> int:
    """2·⌈3·σ_max⌉ + 1: the odd kernel covering ±3σ (13 for σ_max = 2)."""
    return 2 * math.ceil(3 * max_sigma) + 1


def gaussian_kernels(sigmas: Tensor, kernel_size: int) -> Tensor:
    """Normalised 1-D Gaussian kernels (N, kernel_size), one per σ in ``sigmas`` (N,)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
    half = (kernel_size - 1) / 2
    t = torch.linspace(
        -half, half, kernel_size, dtype=sigmas.dtype, device=sigmas.device
    )
    logits = -(t[None, :] ** 2) / (2 * sigmas[:, None] ** 2)
    return torch.softmax(logits, dim=1)


def gaussian_blur(
    images: Tensor,
    sigmas: Any,
    kernel_size: int,
    apply: Any = True,
) -> Tensor:
    """Blurs image i with σ = ``sigmas[i]`` where ``apply[i]`` (else leaves it unchanged).

    Equals torchvision's ``gaussian_blur(image, kernel_size, sigma)`` per image (tested):
    a separable kernel, reflect padding of ``kernel_size // 2`` pixels (which needs
    images larger than that).

    Args:
        images: (N, C, H, W) float (or uint8, read as value / 255).
        sigmas: (N,) standard deviations in pixels (> 0), or a scalar.
        kernel_size: Odd kernel side.
        apply: (N,) bool or a scalar: which images to blur.

    Returns:
        Float images (N, C, H, W).

    Example:
        >>> import torch
        >>> x = torch.rand(4, 3, 32, 32)
        >>> gaussian_blur(x, torch.tensor([0.5, 1.0, 1.5, 2.0]), 13).shape
        torch.Size([4, 3, 32, 32])
    """
    x = as_float_images(images)
    n, channels, height, width = x.shape
    pad = kernel_size // 2
    if pad >= min(height, width):
        raise ValueError(
            f"kernel_size {kernel_size} needs images larger than {pad} pixels for "
            f"reflect padding, got {height}×{width}"
        )
    sigma = to_device(sigmas, x.device, x.dtype)
    if sigma.ndim == 0:
        sigma = sigma.expand(n)
    if sigma.shape != (n,):
        raise ValueError(
            f"sigmas must be a scalar or ({n},), got shape {tuple(sigma.shape)}"
        )
    kernels = gaussian_kernels(sigma, kernel_size)  # (N, k)
    weight = kernels.repeat_interleave(channels, dim=0)[:, None]  # (N·C, 1, k)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect").reshape(
        1, n * channels, height + 2 * pad, width + 2 * pad
    )
    blurred = F.conv2d(padded, weight[..., None], groups=n * channels)  # vertical
    blurred = F.conv2d(blurred, weight[:, :, None, :], groups=n * channels)
    blurred = blurred.view(n, channels, height, width)
    if isinstance(apply, bool):
        return blurred if apply else x
    mask = to_device(apply, x.device, torch.bool)
    if mask.ndim == 0:
        mask = mask.expand(n)
    if mask.shape != (n,):
        raise ValueError(f"apply must be a scalar or ({n},), got {tuple(mask.shape)}")
    return torch.where(mask.view(n, 1, 1, 1), blurred, x)
