"""The one place where the jobs construct their Lightning ``Trainer``.

Builds on :class:`pytorch_lightning.Trainer`, its ``ModelCheckpoint``, loggers
(:class:`~lightly_derm.jobs.csv_logger.ContinuingCSVLogger`, ``TensorBoardLogger``) and
progress bar. :func:`trainer_options` holds what every training run of lightly-derm
gets (hardware options and :func:`default_callbacks`); :func:`build_trainer` adds the
output folder: checkpoints, metrics and TensorBoard logs. Pretraining, segmentation
fine-tuning and the fine-tuning of ``evaluate`` all go through here, so a callback that
every run should have is added once, in :func:`default_callbacks`.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import Logger

from lightly_derm.callbacks import (
    BEST_CHECKPOINT,
    AtomicCheckpointIO,
    EpochMeanLoss,
    ExactResume,
    NonFiniteLossGuard,
    PeriodicCheckpoint,
    StepLoss,
)
from lightly_derm.errors import ConfigError
from lightly_derm.jobs.csv_logger import ContinuingCSVLogger


class _NoTips(logging.Filter):
    """Drops Lightning's advertising tips ("💡 Tip: ... try installing ...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.getMessage())


def quiet_lightning() -> None:
    """Hides Lightning's tips and its ``_pytree`` deprecation warning (idempotent).

    Lightning's other messages and warnings stay. The warning is about a torch API
    inside Lightning's structured-tree helper, shown on every run, Lightning's to fix.
    """
    warnings.filterwarnings(
        "ignore",
        message=r".*isinstance\(treespec, LeafSpec\)",
        module=r"pytorch_lightning\.utilities\._pytree",
    )
    for name in (
        "lightning_fabric.utilities.rank_zero",
        "pytorch_lightning.utilities.rank_zero",
        "lightning.pytorch.utilities.rank_zero",
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in logger.filters):
            logger.addFilter(_NoTips())


class ProgressBar(TQDMProgressBar):
    """Lightning's progress bar without ``v_num`` (the logger's version, meaningless here)."""

    def get_metrics(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        """The bar's metrics, less ``v_num``."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


#: Subfolder of the run folder for checkpoints.
CHECKPOINT_DIR = "checkpoints"
#: Subfolder of the run folder for TensorBoard event files.
TENSORBOARD_DIR = "tensorboard"


def default_callbacks(advice: str | None = None) -> list[Callback]:
    """The callbacks every lightly-derm training run gets (pretraining and fine-tuning).

    - :class:`~lightly_derm.callbacks.NonFiniteLossGuard`: a NaN or infinite training
      loss stops the run, naming the step and the last good checkpoint (checked on the
      device, without a host synchronisation per step);
    - :class:`~lightly_derm.callbacks.ExactResume`: random states and the data position
      go into every checkpoint, so a resumed run continues as the interrupted one.

    The extension point for run-wide safety callbacks: add them here and every job has
    them.

    Args:
        advice: The last sentence of the guard's error: a command that works for the
            job (default: the guard's generic advice).
    """
    guard = (
        NonFiniteLossGuard() if advice is None else NonFiniteLossGuard(advice=advice)
    )
    return [guard, ExactResume()]


def default_plugins() -> list[Any]:
    """The Trainer plugins every lightly-derm training run gets.

    :class:`~lightly_derm.callbacks.AtomicCheckpointIO`: checkpoints are written to a
    temporary file and renamed, so a kill never leaves a half-written ``last.ckpt``;
    they are read back with ``torch.load(weights_only=True)``.
    """
    return [AtomicCheckpointIO()]


def resolve_precision(precision: str | int | None, accelerator: str = "auto") -> str:
    """``precision``, or for ``None``: ``"bf16-mixed"`` on a CUDA GPU that supports it, else ``"32-true"``.

    Example:
        >>> resolve_precision(None, "cpu")
        '32-true'
        >>> resolve_precision("16-mixed")
        '16-mixed'

    Raises:
        ValueError: ``precision`` is not one of Lightning's precision settings.
    """
    if precision is not None:
        value = str(precision)
        try:  # Lightning's own list of settings (a private module: checked if present)
            from typing import get_args

            from lightning_fabric.plugins.precision.precision import (
                _PRECISION_INPUT_STR,
                _PRECISION_INPUT_STR_ALIAS_CONVERSION,
            )
        except ImportError:  # pragma: no cover - other Lightning versions
            return value
        value = _PRECISION_INPUT_STR_ALIAS_CONVERSION.get(value, value)
        allowed = get_args(_PRECISION_INPUT_STR)
        if value not in allowed:
            raise ValueError(
                f"precision {precision!r} is not a Lightning precision; choose one of "
                f"{', '.join(allowed)} (or 16, 32, 64, bf16)"
            )
        return value
    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"


def tensorboard_available() -> bool:
    """Whether TensorBoard logging can be used (``tensorboard`` or ``tensorboardX``)."""
    return any(
        importlib.util.find_spec(name) is not None
        for name in ("tensorboard", "tensorboardX")
    )


def trainer_options(
    accelerator: str = "auto",
    devices: int | str | Sequence[int] = "auto",
    strategy: str = "auto",
    precision: str | int | None = None,
    progress_bar: bool = True,
    callbacks: Sequence[Callback] = (),
    advice: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Keyword arguments for :class:`pytorch_lightning.Trainer` shared by every job.

    Includes :func:`default_callbacks`, :func:`default_plugins` and, by default, no
    logger and no checkpoints (:func:`build_trainer` adds those); ``kwargs`` override
    everything.

    Returns:
        A dictionary for ``pl.Trainer(**options)`` (or ``finetune_evaluate``'s
        ``trainer_kwargs``).
    """
    quiet_lightning()
    options: dict[str, Any] = {
        "accelerator": accelerator,
        "devices": devices,
        "strategy": strategy,
        "precision": resolve_precision(precision, accelerator),
        "enable_progress_bar": progress_bar,
        "enable_model_summary": False,
        "logger": False,
        "enable_checkpointing": False,
        "callbacks": [
            *default_callbacks(advice),
            *([ProgressBar()] if progress_bar else []),
            *callbacks,
        ],
        "plugins": default_plugins(),
    }
    options.update(kwargs)
    return options


def build_trainer(
    out_dir: str | Path,
    max_epochs: int | None = None,
    max_steps: int = -1,
    accelerator: str = "auto",
    devices: int | str | Sequence[int] = "auto",
    strategy: str = "auto",
    precision: str | int | None = None,
    monitor: str | None = "train_loss_epoch",
    mode: str = "min",
    checkpoint_every_n_steps: int | None = None,
    checkpoint_interval_s: float = 0.0,
    log_every_n_steps: int = 50,
    progress_bar: bool = True,
    tensorboard: bool = True,
    resume_log_step: int | None = None,
    callbacks: Sequence[Callback] = (),
    advice: str | None = None,
    **kwargs: Any,
) -> pl.Trainer:
    """The Trainer of a job that writes a run folder.

    ``out_dir`` gets:

    - ``checkpoints/last.ckpt``: the full training state, every
      ``checkpoint_every_n_steps`` optimizer steps and at epoch ends at most every
      ``checkpoint_interval_s`` seconds, the last epoch always
      (:class:`~lightly_derm.callbacks.PeriodicCheckpoint`);
    - ``checkpoints/best.ckpt``: the best state by ``monitor`` (Lightning's
      ``ModelCheckpoint``; by default the epoch-mean training loss that
      :class:`~lightly_derm.callbacks.EpochMeanLoss` logs);
    - ``metrics.csv`` and ``hparams.yaml``
      (:class:`~lightly_derm.jobs.csv_logger.ContinuingCSVLogger`);
    - ``tensorboard/``: TensorBoard event files (when TensorBoard is installed and
      ``tensorboard`` is true).

    Args:
        out_dir: The run folder.
        max_epochs: Training epochs.
        max_steps: Optimizer-step limit (-1: none).
        accelerator: Lightning's ``accelerator`` (``"auto"``, ``"cpu"``, ``"gpu"``, …).
        devices: Lightning's ``devices``.
        strategy: Lightning's ``strategy`` (``"auto"``, ``"ddp"``, …).
        precision: Lightning's ``precision``; ``None``: see :func:`resolve_precision`.
        monitor: The metric of ``best.ckpt`` (``None``: no best checkpoint).
        mode: ``"min"`` or ``"max"`` for ``monitor``.
        checkpoint_every_n_steps: Also write ``last.ckpt`` every this many steps.
        checkpoint_interval_s: Epoch-end writes of ``last.ckpt`` at most this often.
        log_every_n_steps: Lightning's logging interval.
        progress_bar: Show Lightning's progress bar.
        tensorboard: Also log to TensorBoard.
        resume_log_step: When resuming: the checkpoint's logging step, so that
            ``metrics.csv`` continues where the checkpoint was written.
        callbacks: More callbacks.
        advice: What the non-finite-loss error tells to do (see
            :func:`default_callbacks`).
        **kwargs: Passed to :class:`pytorch_lightning.Trainer` (override the above).

    Example:
        >>> from lightly_derm.jobs import build_trainer
        >>> trainer = build_trainer("runs/demo", max_epochs=5, accelerator="cpu")
        >>> # trainer.fit(model, loader)
    """
    out = Path(out_dir)
    checkpoints = out / CHECKPOINT_DIR
    loggers: list[Logger] = [
        ContinuingCSVLogger(out, keep_through_step=resume_log_step)
    ]
    if tensorboard:
        if tensorboard_available():
            from pytorch_lightning.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(out, name="", version=TENSORBOARD_DIR))
        else:
            warnings.warn(
                "TensorBoard is not installed, so only metrics.csv is written "
                "(pip install 'lightly-derm[tensorboard]' for TensorBoard logs)",
                UserWarning,
                stacklevel=2,
            )
    job_callbacks: list[Callback] = [
        PeriodicCheckpoint(
            checkpoints,
            checkpoint_every_n_steps,
            min_interval_s=checkpoint_interval_s,
        )
    ]
    if monitor is not None:
        if monitor == "train_loss_epoch":
            job_callbacks.append(EpochMeanLoss("train_loss"))
            job_callbacks.append(StepLoss("train_loss"))
        job_callbacks.append(
            ModelCheckpoint(
                dirpath=checkpoints,
                filename=Path(BEST_CHECKPOINT).stem,
                monitor=monitor,
                mode=mode,
                save_top_k=1,
                save_last=False,
                enable_version_counter=False,
                auto_insert_metric_name=False,
            )
        )
    options = trainer_options(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        precision=precision,
        progress_bar=progress_bar,
        callbacks=[*job_callbacks, *callbacks],
        advice=advice,
        logger=loggers,
        enable_checkpointing=True,
        max_epochs=max_epochs,
        max_steps=max_steps,
        log_every_n_steps=log_every_n_steps,
        default_root_dir=out,
    )
    options.update(kwargs)
    try:
        return pl.Trainer(**options)
    except (ValueError, MisconfigurationException) as exc:
        # the hardware options as given (accelerator, devices, strategy, precision)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"Lightning refused the Trainer options: {first}") from exc
