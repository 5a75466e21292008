"""The whole job as functions: pretrain, evaluate, segment (what the command line runs).

Each job takes its options as keyword arguments (or a config dataclass), writes a run
folder and returns its results, so notebooks, scripts and benchmarks run exactly what
``lightly-derm pretrain|evaluate|segment`` runs. :func:`build_trainer` is the one place
where a job's Lightning ``Trainer`` is made.
"""

from lightly_derm.jobs.callbacks import EpochMeanLoss, PeriodicCheckpoint, ResumeHint
from lightly_derm.jobs.checkpoints import (
    backbone_name,
    find_checkpoint,
    load_backbone,
    run_config,
)
from lightly_derm.jobs.config import JobConfig, load_yaml_mapping, parse_key_values
from lightly_derm.jobs.csv_logger import ContinuingCSVLogger
from lightly_derm.jobs.evaluate import EvaluateConfig, evaluate
from lightly_derm.jobs.pretrain import PretrainConfig, PretrainResult, pretrain
from lightly_derm.jobs.segment import SegmentConfig, segment
from lightly_derm.jobs.trainer import (
    build_trainer,
    default_callbacks,
    resolve_precision,
    trainer_options,
)

__all__ = [
    "ContinuingCSVLogger",
    "EpochMeanLoss",
    "EvaluateConfig",
    "JobConfig",
    "PeriodicCheckpoint",
    "PretrainConfig",
    "PretrainResult",
    "ResumeHint",
    "SegmentConfig",
    "backbone_name",
    "build_trainer",
    "default_callbacks",
    "evaluate",
    "find_checkpoint",
    "load_backbone",
    "load_yaml_mapping",
    "parse_key_values",
    "pretrain",
    "resolve_precision",
    "run_config",
    "segment",
    "trainer_options",
]
