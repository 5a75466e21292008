"""A ``last.ckpt`` of the full training state every N optimizer steps and every epoch.

Builds on :class:`pytorch_lightning.callbacks.Checkpoint` and
:meth:`pytorch_lightning.Trainer.save_checkpoint` (the full training state: weights,
optimizer, schedulers, loop progress, callbacks), which is what ``Trainer.fit(...,
ckpt_path=...)`` resumes from. Lightning's ``ModelCheckpoint`` keeps the best checkpoint;
this adds what it does not do on its own: ``last.ckpt`` both every N optimizer steps and
at every epoch end (``ModelCheckpoint`` triggers are one or the other).
"""

from __future__ import annotations

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
    interrupted run loses at most ``every_n_steps`` optimizer steps (or the current
    epoch when ``every_n_steps`` is ``None``). Continue it with
    ``Trainer.fit(model, data, ckpt_path=".../last.ckpt")``; Lightning restores the step,
    epoch and position in the epoch.

    Args:
        dirpath: The checkpoint folder.
        every_n_steps: Save when this many optimizer steps (``trainer.global_step``)
            have passed since the last save; ``None`` or 0: only at epoch ends.
        filename: The file name.

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
    ) -> None:
        if every_n_steps is not None and (
            isinstance(every_n_steps, bool)
            or not isinstance(every_n_steps, int)
            or every_n_steps < 0
        ):
            raise ValueError(
                f"every_n_steps must be an int >= 0 or None, got {every_n_steps!r}"
            )
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps or 0
        self.filename = filename
        self._last_saved_step = -1

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

    def on_train_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        """Counts the next interval from the (restored) step."""
        self._last_saved_step = trainer.global_step

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
        """Saves at the end of every training epoch."""
        self._save(trainer)
