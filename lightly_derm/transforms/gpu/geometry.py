"""Batched random resized crop, rotation and flips as one resampling per view.

Builds on :func:`torch.nn.functional.grid_sample` and follows torchvision's conventions
(``transforms.v2.functional.resized_crop``, ``rotate``, ``horizontal_flip``) and the
parameter sampling of ``transforms.v2.RandomResizedCrop`` (including its fallback to a
central crop). What it adds: every image of a batch — and every one of several views of
it — gets its own crop box, angle and flips, and the whole geometry is one
``grid_sample`` call on the device, without a Python loop over samples or a host
synchronisation.

The composed map, for an output pixel (u, v) of an S × S view:

1. flips (``hflip``: u → S − 1 − u, ``vflip``: v → S − 1 − v), applied last as in the
   GraVIS transform (crop → rotation → flip); with ``flip_first=True`` they are
   applied before the rotation, as in lightly's BYOL/SimCLR transforms;
2. rotation by ``angle`` degrees counter-clockwise about the view centre (torchvision's
   ``rotate``); pixels whose rotated position rounds outside the view get ``fill``
   (exactly the pixels torchvision's nearest-neighbour rotation fills);
3. the crop box (top, left, height, width) resized to S × S with torchvision's
   half-pixel convention (``interpolate(align_corners=False)``), the position clamped
   to the box so that its border pixels extend, as a crop followed by a resize does;
4. one bilinear sample of the source image there.

Deviations from the CPU chain, by design: one interpolation instead of two when a
rotation follows the resize (the CPU chain resizes bilinearly, then rotates with
nearest neighbour); and no antialiasing filter when a crop is *down*-scaled (torchvision
resizes tensors with ``antialias=True``). For up-scaling both are the same bilinear
interpolation; for down-scaling by the factors a decoded-once cache gives (at most about
1.5: see :class:`~lightly_derm.transforms.gpu.CanvasTransform`) the difference is
bounded and tested. Keep sources at most about 1.5× the view size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightly_derm.transforms.gpu._common import check_images, rand, to_device
from lightly_derm.utils.validation import check_int

__all__ = ["full_boxes", "resized_crop", "sample_resized_crop"]


def _check_sizes(sizes: Any, n: int, height: int, width: int) -> Tensor | None:
    if sizes is None:
        return None
    if not isinstance(sizes, Tensor) or sizes.shape != (n, 2):
        raise ValueError(
            f"sizes must be a tensor ({n}, 2) of each image's (height, width), got "
            + (
                f"shape {tuple(sizes.shape)}"
                if isinstance(sizes, Tensor)
                else type(sizes).__name__
            )
        )
    return sizes


def full_boxes(heights: Tensor, widths: Tensor, num_views: int = 1) -> Tensor:
    """Boxes (N, V, 4) covering every image: (0, 0, height, width) — a plain Resize."""
    heights = heights.to(torch.float32)
    widths = widths.to(torch.float32)
    zeros = torch.zeros_like(heights)
    box = torch.stack([zeros, zeros, heights, widths], dim=-1)  # (N, 4)
    return box[:, None, :].expand(-1, num_views, -1)


def sample_resized_crop(
    heights: Tensor,
    widths: Tensor,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    num_views: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draws crop boxes as ``torchvision.transforms.v2.RandomResizedCrop`` does, batched.

    For every image and view, up to 10 trials draw an area fraction uniformly from
    ``scale`` and a log aspect ratio uniformly from ``log(ratio)``; the first trial
    whose rounded width and height fit the image is taken, with a uniformly random
    integer position. Without one, the fallback is torchvision's central crop (the whole
    image, trimmed to the nearest allowed aspect ratio). All trials are drawn at once.

    Args:
        heights: (N,) image heights in pixels (any numeric dtype, on the device).
        widths: (N,) image widths.
        scale: Range of the crop area relative to the image area.
        ratio: Range of the crop aspect ratio (width / height).
        num_views: Boxes per image.
        generator: Random generator on the images' device (default: the global one).

    Returns:
        Boxes (N, ``num_views``, 4) as float32 (top, left, height, width), integers.

    Example:
        >>> import torch
        >>> boxes = sample_resized_crop(torch.tensor([300, 200]), torch.tensor([400, 200]))
        >>> boxes.shape
        torch.Size([2, 1, 4])
    """
    if not (0 < scale[0] <= scale[1]):
        raise ValueError(f"scale must be 0 < min <= max, got {scale}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio must be 0 < min <= max, got {ratio}")
    if heights.shape != widths.shape or heights.ndim != 1:
        raise ValueError(
            f"heights and widths must be (N,) tensors, got {tuple(heights.shape)} and "
            f"{tuple(widths.shape)}"
        )
    trials = 10
    n = heights.shape[0]
    device = heights.device
    height = heights.to(torch.float32)[:, None, None]  # (N, 1, 1)
    width = widths.to(torch.float32)[:, None, None]
    u = rand((n, num_views, 2 * trials + 2), generator, device)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target_area = height * width * (scale[0] + (scale[1] - scale[0]) * u[..., :trials])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., trials : 2 * trials])
    w = torch.round(torch.sqrt(target_area * aspect))  # (N, V, trials)
    h = torch.round(torch.sqrt(target_area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=-1, keepdim=True)  # first fitting trial
    found = fits.any(dim=-1)
    w = w.gather(-1, first).squeeze(-1)
    h = h.gather(-1, first).squeeze(-1)
    height, width = height[..., 0], width[..., 0]  # (N, 1)
    top = torch.floor(u[..., -2] * (height - h + 1)).clamp_max(height - h)
    left = torch.floor(u[..., -1] * (width - w + 1)).clamp_max(width - w)
    # Fallback: torchvision's central crop at the nearest allowed aspect ratio.
    in_ratio = width / height
    fallback_w = torch.where(
        in_ratio > ratio[1], torch.round(height * ratio[1]), width
    ).expand_as(w)
    fallback_h = torch.where(
        in_ratio < ratio[0], torch.round(width / ratio[0]), height
    ).expand_as(h)
    w = torch.where(found, w, fallback_w)
    h = torch.where(found, h, fallback_h)
    top = torch.where(found, top, torch.floor((height - h) / 2))
    left = torch.where(found, left, torch.floor((width - w) / 2))
    return torch.stack([top, left, h, w], dim=-1)


def _as_views(
    value: Tensor | Sequence[Any] | float | bool | None,
    n: int,
    views: int,
    name: str,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor | None:
    if value is None:
        return None
    tensor = to_device(value, device, dtype)
    if tensor.ndim == 0:
        return tensor.expand(n, views)
    if tensor.shape == (n,) and views == 1:
        tensor = tensor[:, None]
    if tensor.shape != (n, views):
        raise ValueError(
            f"{name} must be a scalar, ({n},) or ({n}, {views}) (images × views), got "
            f"shape {tuple(tensor.shape)}"
        )
    return tensor


def resized_crop(
    images: Tensor,
    boxes: Tensor,
    size: int,
    angles: Tensor | float | None = None,
    hflip: Tensor | bool | None = None,
    vflip: Tensor | bool | None = None,
    fill: float = 0.0,
    flip_first: bool = False,
) -> Tensor:
    """Crops, resizes, rotates and flips every image with its own parameters.

    See the module docstring for the exact map and how it relates to torchvision.

    Args:
        images: (N, C, H, W) uint8 (0…255) or float (0…1) images.
        boxes: (N, 4) or (N, V, 4) crop boxes (top, left, height, width) in pixels of
            ``images``; with V views per image the images are read once.
        size: Side S of the square output views.
        angles: Counter-clockwise rotations in degrees, (N,) or (N, V) or a scalar;
            ``None`` for none.
        hflip: Horizontal flips (bool), (N,) or (N, V) or a scalar; ``None`` for none.
        vflip: Vertical flips, as ``hflip``.
        fill: Value of the pixels a rotation brings in (0 = black).
        flip_first: Flip before rotating (lightly's BYOL/SimCLR order) instead of after
            (GraVIS's order).

    Returns:
        Float views (N, C, S, S) — or (N, V, C, S, S) for (N, V, 4) boxes — in [0, 1];
        float64 for float64 input, float32 otherwise.

    Raises:
        TypeError: ``images`` is not a uint8 or float tensor.
        ValueError: Shapes do not fit.

    Example:
        >>> import torch
        >>> images = torch.randint(0, 256, (2, 3, 40, 60), dtype=torch.uint8)
        >>> boxes = torch.tensor([[0.0, 0.0, 40.0, 60.0], [5.0, 10.0, 20.0, 20.0]])
        >>> resized_crop(images, boxes, 32, hflip=torch.tensor([True, False])).shape
        torch.Size([2, 3, 32, 32])
    """
    check_images(images)
    check_int("size", size)
    n, channels, height, width = images.shape
    if not isinstance(boxes, Tensor) or boxes.ndim not in (2, 3) or boxes.shape[0] != n:
        raise ValueError(
            f"boxes must be a tensor ({n}, 4) or ({n}, V, 4), got "
            + (
                f"shape {tuple(boxes.shape)}"
                if isinstance(boxes, Tensor)
                else type(boxes).__name__
            )
        )
    squeeze = boxes.ndim == 2
    if squeeze:
        boxes = boxes[:, None]
    if boxes.shape[-1] != 4:
        raise ValueError(f"boxes must end in 4 values, got shape {tuple(boxes.shape)}")
    views = boxes.shape[1]
    device = images.device
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    boxes = boxes.to(device=device, dtype=dtype)
    angles_t = _as_views(angles, n, views, "angles", device, dtype)
    hflip_t = _as_views(hflip, n, views, "hflip", device, torch.bool)
    vflip_t = _as_views(vflip, n, views, "vflip", device, torch.bool)

    # Output pixel coordinates (N, V, S, S), x along the width, y along the height.
    # x varies along the width only and y along the height only until a rotation
    # mixes them: (N, V, 1, S) and (N, V, S, 1), so the coordinate arithmetic costs
    # O(S) per view, not O(S²).
    coords = torch.arange(size, device=device, dtype=dtype)
    x = coords.view(1, 1, 1, size).expand(n, views, 1, size)
    y = coords.view(1, 1, size, 1).expand(n, views, size, 1)
    last = float(size - 1)

    def flip(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if hflip_t is not None:
            x = torch.where(hflip_t[..., None, None], last - x, x)
        if vflip_t is not None:
            y = torch.where(vflip_t[..., None, None], last - y, y)
        return x, y

    if not flip_first:
        x, y = flip(x, y)
    inside = None
    if angles_t is not None:
        theta = torch.deg2rad(angles_t)[..., None, None]
        cos, sin = torch.cos(theta), torch.sin(theta)
        centre = last / 2
        xc, yc = x - centre, y - centre
        x = cos * xc - sin * yc + centre
        y = sin * xc + cos * yc + centre
        # torchvision's nearest-neighbour rotation fills where the rounded position
        # leaves the view.
        rx, ry = torch.round(x), torch.round(y)
        inside = (rx >= 0) & (rx <= last) & (ry >= 0) & (ry <= last)
    if flip_first:
        x, y = flip(x, y)

    top, left, box_h, box_w = (b[..., None, None] for b in boxes.unbind(-1))
    # Half-pixel resize of the box, clamped to it (interpolate, align_corners=False).
    xs = left + ((x + 0.5) * (box_w / size) - 0.5).clamp(min=0).minimum(box_w - 1)
    ys = top + ((y + 0.5) * (box_h / size) - 0.5).clamp(min=0).minimum(box_h - 1)
    grid = torch.stack(
        torch.broadcast_tensors((2 * xs + 1) / width - 1, (2 * ys + 1) / height - 1),
        dim=-1,
    )  # (N, V, S, S, 2)
    # uint8: sample the 0…255 values and scale the (smaller) output instead.
    source_images = images if images.dtype == dtype else images.to(dtype)
    out = F.grid_sample(
        source_images,
        grid.reshape(n, views * size, size, 2),
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )  # (N, C, V·S, S)
    out = out.view(n, channels, views, size, size).transpose(1, 2)
    result = torch.empty((n, views, channels, size, size), dtype=dtype, device=device)
    if images.dtype == torch.uint8:
        torch.mul(out, 1.0 / 255.0, out=result)
    else:
        result.copy_(out)
    if inside is not None:
        result.masked_fill_(~inside[:, :, None], fill)
    return result[:, 0] if squeeze else result
