"""Moved: the jobs' Lightning callbacks live in :mod:`lightly_derm.callbacks`.

This import path is kept for one release; its names warn and forward there.
"""

from __future__ import annotations

import warnings
from typing import Any

_MOVED = (
    "BEST_CHECKPOINT",
    "LAST_CHECKPOINT",
    "STEP_LOSS",
    "EpochMeanLoss",
    "PeriodicCheckpoint",
    "ResumeHint",
    "StepLoss",
)


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"lightly_derm.jobs.callbacks.{name} moved to lightly_derm.callbacks.{name}; "
        "the old path goes in the next release",
        FutureWarning,
        stacklevel=2,
    )
    from lightly_derm import callbacks

    return getattr(callbacks, name)
