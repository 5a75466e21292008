"""Moved: the jobs' pipelines live in :mod:`lightly_derm.transforms`.

``eval_transform`` and ``finetune_transform`` moved to :mod:`lightly_derm.transforms`,
``renormalize_backbone_input`` (the model's input scaling) to
:mod:`lightly_derm.models`, and ``SyntheticSegmentationTransform`` was only re-exported
here from its home, :mod:`lightly_derm.data`. This import path is kept for one release;
its names warn and forward there.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

#: Each moved name and the package that exports it now.
_MOVED = {
    "SyntheticSegmentationTransform": "lightly_derm.data",
    "eval_transform": "lightly_derm.transforms",
    "finetune_transform": "lightly_derm.transforms",
    "renormalize_backbone_input": "lightly_derm.models",
}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    home = _MOVED[name]
    warnings.warn(
        f"lightly_derm.jobs.transforms.{name} moved to {home}.{name}; "
        "the old path goes in the next release",
        FutureWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(home), name)
