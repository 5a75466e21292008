from __future__ import annotations

import torch


def smooth_images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Natural-looking float64 images in [0, 1]: low-frequency noise plus a blob."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(
        n, 3, max(2, height // 8), max(2, width // 8), generator=generator
    )
    images = torch.nn.functional.interpolate(
        coarse.double(), size=(height, width), mode="bicubic", align_corners=False
    )
    return images.clamp(0, 1)
