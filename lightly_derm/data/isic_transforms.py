"""Moved: the ISIC image + mask pipeline lives in :mod:`lightly_derm.transforms.isic`.

This import path is kept for one release; its names warn and forward there.
"""

from __future__ import annotations

import warnings
from typing import Any

_MOVED = (
    "ORIGINAL_SHAPE_KEY",
    "BinaryLesionMaskd",
    "isic_segmentation_transforms",
)


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"lightly_derm.data.isic_transforms.{name} moved to "
        f"lightly_derm.transforms.isic.{name}; the old path goes in the next release",
        FutureWarning,
        stacklevel=2,
    )
    from lightly_derm.transforms import isic

    return getattr(isic, name)
