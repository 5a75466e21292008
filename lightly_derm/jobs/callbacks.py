"""Moved: the jobs' Lightning callbacks live in :mod:`lightly_derm.callbacks`.

This import path is kept for one release; its names warn and forward there.
"""

from __future__ import annotations

from lightly_derm.utils.moved import moved

__getattr__ = moved(
    __name__,
    dict.fromkeys(
        (
            "BEST_CHECKPOINT",
            "LAST_CHECKPOINT",
            "STEP_LOSS",
            "EpochMeanLoss",
            "PeriodicCheckpoint",
            "ResumeHint",
            "StepLoss",
        ),
        "lightly_derm.callbacks",
    ),
)
