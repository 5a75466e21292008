"""Lightning callbacks and plugins of lightly-derm's training runs.

Dependable runs: a non-finite-loss guard, exact resumes (random states and the data
position), atomic checkpoint files and a periodic ``last.ckpt``; readable runs: the
epoch-mean and per-step training loss, a line saying how to continue a stopped run, and
how far a run turned each stage of the encoder.

Use them together with :class:`~lightly_derm.data.ResumableDataLoader` (see
docs/reliability.rst)::

    trainer = pl.Trainer(
        callbacks=[NonFiniteLossGuard(), ExactResume(), ModelCheckpoint(...)],
        plugins=[AtomicCheckpointIO()],
        deterministic=True,
    )
"""

from lightly_derm.callbacks.atomic_checkpoint_io import AtomicCheckpointIO, atomic_save
from lightly_derm.callbacks.encoder_change import (
    EncoderChange,
    StageChange,
    filter_turn,
    stage_of,
)
from lightly_derm.callbacks.exact_resume import (
    ExactResume,
    get_rng_states,
    set_rng_states,
)
from lightly_derm.callbacks.loss_logging import STEP_LOSS, EpochMeanLoss, StepLoss
from lightly_derm.callbacks.non_finite_loss import (
    NonFiniteLossError,
    NonFiniteLossGuard,
)
from lightly_derm.callbacks.periodic_checkpoint import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    PeriodicCheckpoint,
)
from lightly_derm.callbacks.resume_hint import ResumeHint

__all__ = [
    "BEST_CHECKPOINT",
    "LAST_CHECKPOINT",
    "STEP_LOSS",
    "AtomicCheckpointIO",
    "EncoderChange",
    "EpochMeanLoss",
    "ExactResume",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "PeriodicCheckpoint",
    "ResumeHint",
    "StageChange",
    "StepLoss",
    "atomic_save",
    "filter_turn",
    "get_rng_states",
    "set_rng_states",
    "stage_of",
]
