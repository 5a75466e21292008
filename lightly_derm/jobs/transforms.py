"""Moved: the jobs' pipelines live in :mod:`lightly_derm.transforms`.

``eval_transform`` and ``finetune_transform`` moved to :mod:`lightly_derm.transforms`,
``renormalize_backbone_input`` (the model's input scaling) to
:mod:`lightly_derm.models`, and ``SyntheticSegmentationTransform`` was only re-exported
here from its home, :mod:`lightly_derm.data`. This import path is kept for one release;
its names warn and forward there.
"""

from __future__ import annotations

from lightly_derm.utils.moved import moved

__getattr__ = moved(
    __name__,
    {
        "SyntheticSegmentationTransform": "lightly_derm.data",
        "eval_transform": "lightly_derm.transforms",
        "finetune_transform": "lightly_derm.transforms",
        "renormalize_backbone_input": "lightly_derm.models",
    },
)
