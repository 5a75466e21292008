"""Moved: the ISIC image + mask pipeline lives in :mod:`lightly_derm.transforms.isic`.

This import path is kept for one release; its names warn and forward there.
"""

from __future__ import annotations

from lightly_derm.utils.moved import moved

__getattr__ = moved(
    __name__,
    dict.fromkeys(
        ("ORIGINAL_SHAPE_KEY", "BinaryLesionMaskd", "isic_segmentation_transforms"),
        "lightly_derm.transforms.isic",
    ),
)
