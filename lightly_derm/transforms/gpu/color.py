"""Batched colour augmentations with per-sample parameters: jitter, grayscale, solarize.

Builds on torchvision's ``transforms.v2.functional`` definitions (``adjust_brightness``,
``adjust_contrast``, ``adjust_saturation``, ``adjust_hue``, ``rgb_to_grayscale``,
``solarize``) and on ``transforms.v2.ColorJitter``'s parameter distribution: every
function here equals the torchvision function applied image by image with that image's
parameter (tested), but runs as a few elementwise kernels on the whole batch, with the
parameters as tensors on the device (no host synchronisation).

Inputs are (N, 3, H, W) floats in [0, 1] (uint8 is read as value / 255); outputs are
float32 (float64 for float64 input).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightly_derm.transforms.gpu._common import (
    as_float_images,
    check_images,
    rand,
    to_device,
)

__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "color_jitter",
    "grayscale",
    "rgb_to_grayscale",
    "sample_color_jitter",
    "solarize",
]

#: The ops of :func:`color_jitter`, in the index order of torchvision's ColorJitter.
JITTER_OPS: tuple[str, ...] = ("brightness", "contrast", "saturation", "hue")


def _rgb(images: Any) -> Tensor:
    check_images(images, channels=3)
    return as_float_images(images)


def _factors(values: Any, x: Tensor, name: str) -> Tensor:
    """(N, 1, 1, 1) per-sample factors in the images' dtype and device."""
    n = x.shape[0]
    t = to_device(values, x.device, x.dtype)
    if t.ndim == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(
            f"{name} must be a scalar or one value per image ({n},), got shape "
            f"{tuple(t.shape)}"
        )
    return t.view(n, 1, 1, 1)


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """Luma (N, 1, H, W) = 0.2989 R + 0.587 G + 0.114 B, torchvision's weights."""
    x = _rgb(images)
    r, g, b = x.unbind(dim=1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def _blend(x: Tensor, alpha: Tensor, other: Tensor, beta: Tensor) -> Tensor:
    """clamp(alpha·x + beta·other, 0, 1), torchvision's ``_blend`` per sample."""
    return torch.addcmul(beta * other, x, alpha).clamp_(0.0, 1.0)


def adjust_brightness(images: Tensor, factors: Any) -> Tensor:
    """clamp(f·x, 0, 1) with f per image (torchvision ``adjust_brightness``)."""
    x = _rgb(images)
    return x.mul(_factors(factors, x, "factors")).clamp_(0.0, 1.0)


def adjust_contrast(images: Tensor, factors: Any) -> Tensor:
    """Blend with the mean luma of each image by f (torchvision ``adjust_contrast``)."""
    x = _rgb(images)
    f = _factors(factors, x, "factors")
    mean = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, f, mean, 1.0 - f)


def adjust_saturation(images: Tensor, factors: Any) -> Tensor:
    """Blend with each pixel's luma by f (torchvision ``adjust_saturation``)."""
    x = _rgb(images)
    f = _factors(factors, x, "factors")
    return _blend(x, f, rgb_to_grayscale(x), 1.0 - f)


def _hue_shift(x: Tensor, shift: Tensor) -> Tensor:
    """Rotates the HSV hue of every pixel by ``shift`` (N, 1, 1, 1) turns.

    HSV → RGB as f(n) = V − C·clamp(min(k, 4 − k), 0, 1), k = (n + 6H) mod 6 for
    n = 5, 3, 1 (R, G, B), with V = max, C = max − min: the same function as
    torchvision's ``_rgb_to_hsv``/``_hsv_to_rgb`` pair (which it is tested against),
    in about a third of the memory traffic and without an index tensor.
    """
    r, g, b = x.unbind(dim=1)
    minc, maxc = torch.aminmax(x, dim=1)
    chroma = maxc - minc
    divisor = torch.where(chroma == 0, torch.ones_like(chroma), chroma)
    # Hue in sixths of a turn, torchvision's branch order: max = R, then G, then B.
    h6 = torch.where(
        maxc == r,
        (g - b) / divisor,
        torch.where(maxc == g, (b - r) / divisor + 2.0, (r - g) / divisor + 4.0),
    )
    h6 = torch.remainder(h6 + 6.0 * shift[:, 0], 6.0)
    out = torch.empty_like(x)
    for channel, n in enumerate((5.0, 3.0, 1.0)):
        k = torch.remainder(h6 + n, 6.0)
        weight = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
        torch.sub(maxc, chroma * weight, out=out[:, channel])
    return out


def adjust_hue(images: Tensor, factors: Any) -> Tensor:
    """Shifts the HSV hue by f ∈ [−0.5, 0.5] turns per image (torchvision ``adjust_hue``)."""
    x = _rgb(images)
    return _hue_shift(x, _factors(factors, x, "factors"))


def grayscale(images: Tensor, apply: Any = True) -> Tensor:
    """Replaces the images where ``apply`` by their luma in all 3 channels.

    torchvision's ``rgb_to_grayscale(num_output_channels=3)`` per selected image.
    """
    x = _rgb(images)
    mask = _factors(apply, x, "apply").to(torch.bool)
    return torch.where(mask, rgb_to_grayscale(x).expand_as(x), x)


def solarize(images: Tensor, threshold: float, apply: Any = True) -> Tensor:
    """Inverts the pixels ≥ ``threshold`` of the images where ``apply`` (torchvision ``solarize``).

    lightly's ``RandomSolarization`` inverts uint8 values ≥ 128, i.e. ``threshold`` =
    128 / 255 for [0, 1] floats.
    """
    x = _rgb(images)
    mask = _factors(apply, x, "apply").to(torch.bool) & (x >= threshold)
    return torch.where(mask, 1.0 - x, x)


def sample_color_jitter(
    n: int,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    hue: float = 0.0,
    p: float = 1.0,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draws ``transforms.v2.RandomApply([ColorJitter(...)], p)`` parameters for n images.

    Per image: whether the jitter applies (probability ``p``); factors uniform in
    [max(0, 1 − b), 1 + b] for brightness, contrast and saturation and in [−h, h] for
    hue; and a uniformly random order of the four ops, as torchvision draws one per
    call. Images the jitter skips, and ops whose strength is 0, get the identity
    factor (1, or 0 for hue).

    Returns:
        ``factors`` (n, 4) float32 in :data:`JITTER_OPS` order and ``order`` (n, 4)
        int64, a permutation of 0…3 per row (op indices in application order).
    """
    device = torch.device(device)
    u = rand((n, 9), generator, device)
    apply = u[:, 0] < p
    columns = []
    for index, strength in enumerate((brightness, contrast, saturation, hue)):
        if strength < 0:
            raise ValueError(f"{JITTER_OPS[index]} must be >= 0, got {strength}")
        if index == 3:
            if strength > 0.5:
                raise ValueError(f"hue must be <= 0.5, got {strength}")
            low, high, identity = -strength, strength, 0.0
        else:
            low, high, identity = max(0.0, 1.0 - strength), 1.0 + strength, 1.0
        value = low + (high - low) * u[:, 1 + index]
        on = apply if strength > 0 else torch.zeros_like(apply)
        columns.append(torch.where(on, value, torch.full_like(value, identity)))
    order = torch.argsort(u[:, 5:9], dim=1)
    return torch.stack(columns, dim=1), order


def color_jitter(
    images: Tensor,
    factors: Tensor,
    order: Tensor,
    ops: tuple[bool, bool, bool, bool] = (True, True, True, True),
) -> Tensor:
    """Applies brightness, contrast, saturation and hue in a per-image order.

    Equals, for every image i, torchvision's ``ColorJitter`` with the factors
    ``factors[i]`` applied in the order ``order[i]`` (what ``ColorJitter`` does with
    the parameters it draws), batched: the ops before the hue shift run as up to three
    "slots" in which every image applies its own next op (a per-image blend
    clamp(α·x + β·mean + γ·luma)), then one hue shift for all images, then up to three
    slots for the ops after it. An image with nothing to do in a slot gets α = 1,
    β = γ = 0, which leaves it bit-for-bit unchanged.

    Args:
        images: (N, 3, H, W) in [0, 1] (or uint8).
        factors: (N, 4) brightness, contrast, saturation factors and hue shift
            (identity: 1, 1, 1, 0).
        order: (N, 4) int64 permutations of 0…3 (indices into ``factors``' columns).
        ops: Which ops can be non-identity (known on the host): skipping the hue shift
            or the luma statistics of disabled ops saves their kernels.

    Returns:
        The jittered images, float.
    """
    x = _rgb(images)
    n = x.shape[0]
    if factors.shape != (n, 4) or order.shape != (n, 4):
        raise ValueError(
            f"factors and order must be ({n}, 4), got {tuple(factors.shape)} and "
            f"{tuple(order.shape)}"
        )
    factors = factors.to(device=x.device, dtype=x.dtype)
    order = order.to(x.device)
    use_b, use_c, use_s, use_h = ops
    if not (use_b or use_c or use_s or use_h):
        return x
    if use_h:
        hue_position = torch.argsort(order, dim=1)[:, 3]  # where hue comes
        slots = [(t, t < hue_position) for t in range(3)]
        after = [(t, t > hue_position) for t in range(1, 4)]
    else:
        slots = [(t, order[:, t] != 3) for t in range(4)]
        after = []
    if use_b or use_c or use_s:
        for t, active in slots:
            x = _linear_slot(x, factors, order[:, t], active, use_c, use_s)
    if use_h:
        hue = factors[:, 3].view(n, 1, 1, 1)
        x = torch.where((hue != 0), _hue_shift(x, hue), x)
    if use_b or use_c or use_s:
        for t, active in after:
            x = _linear_slot(x, factors, order[:, t], active, use_c, use_s)
    return x


def _linear_slot(
    x: Tensor,
    factors: Tensor,
    op: Tensor,
    active: Tensor,
    use_contrast: bool,
    use_saturation: bool,
) -> Tensor:
    """One slot of :func:`color_jitter`: image i applies op ``op[i]`` where ``active[i]``."""
    n = x.shape[0]
    linear = active & (op < 3)
    f = factors.gather(1, op.clamp(max=2)[:, None])[:, 0]
    one = torch.ones_like(f)
    zero = torch.zeros_like(f)
    alpha = torch.where(linear, f, one).view(n, 1, 1, 1)
    other = torch.zeros_like(x[:, :1])
    if use_contrast or use_saturation:
        luma = rgb_to_grayscale(x)
        beta_mean = torch.where(linear & (op == 1), 1.0 - f, zero).view(n, 1, 1, 1)
        beta_luma = torch.where(linear & (op == 2), 1.0 - f, zero).view(n, 1, 1, 1)
        if use_contrast:
            mean = luma.mean(dim=(1, 2, 3), keepdim=True)
            other = beta_mean * mean
        if use_saturation:
            other = torch.addcmul(other, beta_luma, luma)
    return torch.addcmul(other, x, alpha).clamp_(0.0, 1.0)
