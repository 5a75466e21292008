"""A ``last.ckpt`` of the full training state every N optimizer steps and at epoch ends.

Builds on :class:`pytorch_lightning.callbacks.Checkpoint` and
:meth:`pytorch_lightning.Trainer.save_checkpoint` (the full training state: weights,
optimizer, schedulers, loop progress, callbacks), which is what ``Trainer.fit(...,
ckpt_path=...)`` resumes from. Lightning's ``ModelCheckpoint`` keeps the best checkpoint;
this adds what it does not do on its own: ``last.ckpt`` both every N optimizer steps and
at epoch ends (``ModelCheckpoint`` triggers are one or the other), epoch-end saves at
most every ``min_interval_s`` seconds (as ``ModelCheckpoint(train_time_interval=...)``),
so that runs of many short epochs do not spend their time writing checkpoints.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint

#: The file name of the checkpoint ``--resume`` continues from.
LAST_CHECKPOINT = "last.ckpt"
#: The file name of the best checkpoint.
BEST_CHECKPOINT = "best.ckpt"


class PeriodicCheckpoint(Checkpoint):
    """Saves the full training state to ``dirpath/last.ckpt`` every N steps and epochs.

    The file is overwritten each time, so it always holds the latest state: an
    interrupted run loses at most ``every_n_steps`` optimizer steps, or the epochs of
    the last ``min_interval_s`` seconds. The last epoch and the end of training are
    always saved. Continue it with
    ``Trainer.fit(model, data, ckpt_path=".../last.ckpt")``; Lightning restores the step,
    epoch and position in the epoch.

    Args:
        dirpath: The checkpoint folder.
        every_n_steps: Save when this many optimizer steps (``trainer.global_step``)
            have passed since the last save; ``None`` or 0: only at epoch ends.
        filename: The file name.
        min_interval_s: Skip an epoch-end save when the last save is more recent
            than this many seconds (0: save at every epoch end). A fine-tune of 100
            two-step epochs otherwise writes its 160 MiB state 100 times.

    Example:
        >>> import pytorch_lightning as pl
        >>> from lightly_derm.callbacks import PeriodicCheckpoint
        >>> trainer = pl.Trainer(callbacks=[PeriodicCheckpoint("run/checkpoints", 100)],
        ...                      logger=False, enable_progress_bar=False)
    """

    def __init__(
        self,
        dirpath: str | Path,
        every_n_steps: int | None = None,
        filename: str = LAST_CHECKPOINT,
        min_interval_s: float = 0.0,
    ) -> None:
        if every_n_steps is not None and (
            isinstance(every_n_steps, bool)
            or not isinstance(every_n_steps, int)
            or every_n_steps < 0
        ):
            raise ValueError(
                f"every_n_steps must be an int >= 0 or None, got {every_n_steps!r}"
            )
        if isinstance(min_interval_s, bool) or not min_interval_s >= 0:
            raise ValueError(f"min_interval_s must be >= 0, got {min_interval_s!r}")
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps or 0
        self.filename = filename
        self.min_interval_s = float(min_interval_s)
        self._last_saved_step = -1
        self._last_saved_time = time.monotonic()

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return self.dirpath / self.filename

    @property
    def state_key(self) -> str:
        """Distinguishes this callback's state from other checkpoint callbacks'."""
        return self._generate_state_key(
            filename=self.filename, every_n_steps=self.every_n_steps
        )

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking or trainer.global_step == self._last_saved_step:
            return
        # the full training state (weights_only=False here means "not only weights")
        trainer.save_checkpoint(self.path, weights_only=False)
        self._last_saved_step = trainer.global_step
        self._last_saved_time = time.monotonic()

    def on_train_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        """Counts the next interval from the (restored) step and from now."""
        self._last_saved_step = trainer.global_step
        self._last_saved_time = time.monotonic()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Saves when ``every_n_steps`` optimizer steps have passed."""
        if (
            self.every_n_steps
            and trainer.global_step >= self._last_saved_step + self.every_n_steps
        ):
            self._save(trainer)

    def on_train_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        """Saves at an epoch end unless the last save is under ``min_interval_s`` old."""
        last_epoch = (
            trainer.max_epochs is not None
            and trainer.max_epochs >= 0
            and trainer.current_epoch + 1 >= trainer.max_epochs
        )
        if (
            last_epoch
            or trainer.should_stop
            or time.monotonic() - self._last_saved_time >= self.min_interval_s
        ):
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Saves the final state if the last epoch-end save did not (``max_steps``)."""
        self._save(trainer)
