"""The whole job as functions: pretrain, evaluate, segment (what the command line runs).

Each job takes its options as keyword arguments (or a config dataclass), writes a run
folder and returns its results, so notebooks, scripts and benchmarks run exactly what
``lightly-derm pretrain|evaluate|segment`` runs. :func:`build_trainer` is the one place
where a job's Lightning ``Trainer`` is made. The job's parts (run folders, loggers,
configuration parsing, callbacks) live in the submodules and are not exported here.
"""

from lightly_derm.jobs.checkpoints import find_checkpoint, load_backbone
from lightly_derm.jobs.evaluate import EvaluateConfig, evaluate
from lightly_derm.jobs.pretrain import PretrainConfig, PretrainResult, pretrain
from lightly_derm.jobs.segment import SegmentConfig, segment
from lightly_derm.jobs.trainer import (
    build_trainer,
    default_callbacks,
    resolve_precision,
)

__all__ = [
    "EvaluateConfig",
    "PretrainConfig",
    "PretrainResult",
    "SegmentConfig",
    "build_trainer",
    "default_callbacks",
    "evaluate",
    "find_checkpoint",
    "load_backbone",
    "pretrain",
    "resolve_precision",
    "segment",
]
