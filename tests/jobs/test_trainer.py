from __future__ import annotations

import pytest
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from lightly_derm.callbacks import EpochMeanLoss, PeriodicCheckpoint
from lightly_derm.jobs import build_trainer
from lightly_derm.jobs.csv_logger import ContinuingCSVLogger
from lightly_derm.jobs.trainer import (
    ProgressBar,
    default_callbacks,
    resolve_precision,
    trainer_options,
)


def test_resolve_precision() -> None:
    assert resolve_precision(None, "cpu") == "32-true"
    assert resolve_precision("bf16") == "bf16-mixed"
    assert resolve_precision(16) == "16-mixed"
    assert resolve_precision("32-true") == "32-true"
    with pytest.raises(
        ValueError, match="precision 'half' is not a Lightning precision"
    ):
        resolve_precision("half")


def test_trainer_options_carry_the_default_callbacks() -> None:
    options = trainer_options(accelerator="cpu", max_epochs=3, logger=True)
    assert options["max_epochs"] == 3 and options["logger"] is True
    kinds = [type(c) for c in options["callbacks"]]
    assert kinds == [type(c) for c in default_callbacks()] + [ProgressBar]
    quiet = trainer_options(accelerator="cpu", progress_bar=False)
    assert ProgressBar not in [type(c) for c in quiet["callbacks"]]
    assert (
        options["precision"] == "32-true" and options["enable_checkpointing"] is False
    )


def test_build_trainer_layout(tmp_path) -> None:
    trainer = build_trainer(
        tmp_path, max_epochs=1, accelerator="cpu", checkpoint_every_n_steps=7
    )
    assert isinstance(trainer.loggers[0], ContinuingCSVLogger)
    assert any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers)
    periodic = [c for c in trainer.callbacks if isinstance(c, PeriodicCheckpoint)]
    assert periodic[0].every_n_steps == 7
    assert periodic[0].path == tmp_path / "checkpoints" / "last.ckpt"
    best = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert best[0].monitor == "train_loss_epoch" and best[0].filename == "best"
    assert any(isinstance(c, EpochMeanLoss) for c in trainer.callbacks)
    quiet = build_trainer(
        tmp_path, accelerator="cpu", monitor="val_dice", mode="max", tensorboard=False
    )
    assert len(quiet.loggers) == 1
    assert not any(isinstance(c, EpochMeanLoss) for c in quiet.callbacks)
