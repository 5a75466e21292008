"""Transforms: SSL views (GraVIS, Cutout, jigsaws, FG-SSL), MONAI forms, ISIC pairs, evaluation.

The SSL view transforms, the jobs' evaluation and fine-tuning pipelines
(:mod:`~lightly_derm.transforms.eval`) and, on first use, the MONAI dictionary
transforms (the jigsaw's MONAI form, :mod:`~lightly_derm.transforms.monai`, and the ISIC
image + mask pipeline, :mod:`~lightly_derm.transforms.isic`), which are imported lazily
so that ``import lightly_derm.transforms`` imports neither MONAI nor
:mod:`lightly_derm.data`.
"""

from __future__ import annotations

from typing import Any

from lightly_derm.transforms.cutout import Cutout
from lightly_derm.transforms.eval import eval_transform, finetune_transform
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
    "BinaryLesionMaskd",
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
    "eval_transform",
    "finetune_transform",
    "isic_segmentation_transforms",
    "jigsaw_shuffle",
    "jigsaw_unshuffle",
    "permute_tiles",
    "random_tile_permutations",
    "to_rgb",
    "to_rgb8",
]


_MONAI_FORMS = {"RandHierarchicalJigsawd"}
_ISIC = {"BinaryLesionMaskd", "isic_segmentation_transforms"}


def __getattr__(name: str) -> Any:
    if name in _MONAI_FORMS:
        from lightly_derm.transforms import monai

        return getattr(monai, name)
    if name in _ISIC:
        from lightly_derm.transforms import isic

        return getattr(isic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
