"""The training loss as a person wants to read it: the mean of an epoch, every step.

Builds on :class:`pytorch_lightning.callbacks.Callback` and ``LightningModule.log`` /
the trainer's loggers. The methods log ``train_loss`` per step; :class:`EpochMeanLoss`
adds the per-epoch mean to choose the best checkpoint by, :class:`StepLoss` a value for
every step (for the loss plots of short runs), both without a host synchronisation per
step.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


class EpochMeanLoss(Callback):
    """Logs ``train_loss_epoch``, the mean of the step values of ``train_loss`` over an epoch.

    The methods log ``train_loss`` per step; the best checkpoint should not be chosen by
    the loss of one (the last) batch. The running sum stays on the device (no host sync
    per step) and is part of the checkpoint, so an epoch interrupted and resumed still
    averages all its steps. When the module logs ``train_loss`` with ``on_epoch=True``
    itself, Lightning's own ``train_loss_epoch`` is left as it is.

    Args:
        key: The step metric to average.
    """

    def __init__(self, key: str = "train_loss") -> None:
        self.key = key
        self._sum: torch.Tensor | None = None
        self._count = 0
        self._restored: tuple[float, int] | None = None
        self._logs_it = False  # whether this callback (not the module) logs the mean

    @property
    def name(self) -> str:
        """The logged metric."""
        return f"{self.key}_epoch"

    def on_train_epoch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        """Resets the running mean."""
        self._sum, self._count = None, 0

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Adds this step's value of the metric (to the restored sum after a resume)."""
        if self._restored is not None:
            total, self._count = self._restored
            self._sum = torch.tensor(total, device=pl_module.device)
            self._restored = None
        value = trainer.callback_metrics.get(self.key)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            return
        value = value.detach().float().reshape(())
        self._sum = value if self._sum is None else self._sum + value.to(self._sum)
        self._count += 1

    def on_train_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        """Logs the epoch mean (averaged over processes)."""
        if self._sum is None:
            return
        if self.name in trainer.callback_metrics and not self._logs_it:
            return  # the module logs it itself
        self._logs_it = True
        pl_module.log(
            self.name,
            self._sum / self._count,
            on_step=False,
            on_epoch=True,
            sync_dist=True,
        )
        # epoch-end checkpoints (written after this hook) hold no partial sum
        self._sum, self._count = None, 0

    def state_dict(self) -> dict[str, Any]:
        """The running sum of the current epoch (for mid-epoch checkpoints)."""
        total = float(self._sum) if self._sum is not None else 0.0
        return {"sum": total, "count": self._count, "logs_it": self._logs_it}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the running sum; the resumed epoch continues it."""
        count = int(state_dict.get("count", 0))
        self._restored = (float(state_dict.get("sum", 0.0)), count) if count else None
        self._logs_it = bool(state_dict.get("logs_it", False))


#: The metric of :class:`StepLoss`: the training loss of every step.
STEP_LOSS = "train_loss_per_step"


class StepLoss(Callback):
    """Logs the training loss of every step, without a host synchronisation per step.

    Lightning writes its logged metrics every ``log_every_n_steps`` steps, reading each
    value back to the host when it does; logging every step that way costs a
    synchronisation per step. This callback keeps each step's ``train_loss`` on the
    device and hands the values to the loggers (``metrics.csv``, TensorBoard) as
    :data:`STEP_LOSS` rows in one transfer every ``flush_every`` steps, at every epoch
    end and when training stops, so short runs get a full loss curve.

    Args:
        key: The step metric to record.
        flush_every: Steps between transfers.
    """

    def __init__(self, key: str = "train_loss", flush_every: int = 50) -> None:
        if isinstance(flush_every, bool) or not isinstance(flush_every, int):
            raise TypeError(f"flush_every must be an int, got {flush_every!r}")
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        self.key = key
        self.flush_every = flush_every
        self._values: list[torch.Tensor] = []
        self._steps: list[int] = []

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Keeps this step's value on the device; flushes every ``flush_every`` steps."""
        value = trainer.callback_metrics.get(self.key)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            return
        self._values.append(value.detach().float().reshape(()))
        # the step of Lightning's own rows in metrics.csv (batches that stepped)
        loop = trainer.fit_loop.epoch_loop
        self._steps.append(int(getattr(loop, "_batches_that_stepped", 0)))
        if len(self._values) >= self.flush_every:
            self.flush(trainer)

    def flush(self, trainer: pl.Trainer) -> None:
        """Hands the recorded values to the loggers (one device-to-host transfer)."""
        if not self._values:
            return
        values = torch.stack(self._values).cpu().tolist()
        steps, self._values, self._steps = self._steps, [], []
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            for step, value in zip(steps, values, strict=True):
                logger.log_metrics({STEP_LOSS: value}, step=step)

    def on_train_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        """Flushes at every epoch end."""
        self.flush(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Flushes what is left."""
        self.flush(trainer)

    def on_exception(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        exception: BaseException,
    ) -> None:
        """Keeps the steps before an interruption."""
        try:
            self.flush(trainer)
        except Exception:  # a broken device must not hide the original error
            self._values, self._steps = [], []
