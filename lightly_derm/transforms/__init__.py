"""View transforms: GraVIS K views, Cutout, jigsaw puzzles (per sample and batched), FG-SSL views, MONAI forms.

The MONAI dictionary transforms are imported on first use, so that ``import
lightly_derm.transforms`` does not import MONAI.
"""

from __future__ import annotations

from typing import Any

from lightly_derm.transforms.cutout import Cutout
from lightly_derm.transforms.fgssl_transform import (
    FGSSLTransform,
    FGSSLView1Transform,
    FGSSLView2Transform,
    check_input_size,
)
from lightly_derm.transforms.gravis_transform import (
    GraVISTransform,
    GraVISViewTransform,
)
from lightly_derm.transforms.jigsaw import (
    PERMUTATIONS,
    HierarchicalJigsaw,
    check_grid,
    check_permutations,
    cycle_from_order,
    jigsaw_shuffle,
    jigsaw_unshuffle,
    permute_tiles,
    random_tile_permutations,
)
from lightly_derm.transforms.rgb import RGBInput, to_rgb, to_rgb8

__all__ = [
    "PERMUTATIONS",
    "Cutout",
    "FGSSLTransform",
    "FGSSLView1Transform",
    "FGSSLView2Transform",
    "GraVISTransform",
    "GraVISViewTransform",
    "HierarchicalJigsaw",
    "RGBInput",
    "RandHierarchicalJigsawd",
    "check_grid",
    "check_input_size",
    "check_permutations",
    "cycle_from_order",
    "jigsaw_shuffle",
    "jigsaw_unshuffle",
    "permute_tiles",
    "random_tile_permutations",
    "to_rgb",
    "to_rgb8",
]


_MONAI_FORMS = {"RandHierarchicalJigsawd"}


def __getattr__(name: str) -> Any:
    if name in _MONAI_FORMS:
        from lightly_derm.transforms import monai

        return getattr(monai, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
