from __future__ import annotations

import types
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightly_derm.callbacks import EpochMeanLoss, PeriodicCheckpoint


class Tiny(pl.LightningModule):
    """Logs train_loss = a known value per step (the batch index)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = (
            self.layer(batch[0]).sum() * 0.0
            + float(batch_idx)
            + 10 * self.current_epoch
        )
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(
    callbacks, root: Path, epochs: int = 2, batches: int = 5, max_steps: int = -1
) -> pl.Trainer:
    """Fits :class:`Tiny`; Lightning's own checkpoints go under ``root`` (a tmp folder)."""
    loader = DataLoader(TensorDataset(torch.randn(batches * 2, 2)), batch_size=2)
    trainer = pl.Trainer(
        default_root_dir=root,
        max_epochs=epochs,
        max_steps=max_steps,
        callbacks=callbacks,
        logger=False,
        # no default ModelCheckpoint writing into the working directory
        enable_checkpointing=any(
            isinstance(c, pl.callbacks.Checkpoint) for c in callbacks
        ),
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(Tiny(), loader)
    return trainer


@pytest.fixture
def saved(monkeypatch) -> list[int]:
    """The global step of every ``Trainer.save_checkpoint`` call (which still saves)."""
    steps: list[int] = []
    original = pl.Trainer.save_checkpoint

    def record(self, path, *args, **kwargs):
        steps.append(self.global_step)
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "save_checkpoint", record)
    return steps


def test_periodic_checkpoint_every_n_steps_and_every_epoch(tmp_path, saved) -> None:
    callback = PeriodicCheckpoint(tmp_path / "checkpoints", every_n_steps=3)
    fit([callback], tmp_path)
    # 5 steps per epoch: step 3, the epoch end (5), 3 steps later (8), the epoch end (10)
    assert saved == [3, 5, 8, 10]
    state = torch.load(callback.path, weights_only=False)
    assert state["global_step"] == 10
    with pytest.raises(ValueError, match="every_n_steps"):
        PeriodicCheckpoint(tmp_path, every_n_steps=-1)


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        (0.0, [2, 4, 6, 8]),  # every epoch end (2 steps per epoch)
        (3600.0, [8]),  # only the last epoch
        (10.0, [4, 8]),  # the clock moves 6 s per epoch: every second one, the last
    ],
)
def test_periodic_checkpoint_epoch_ends_at_most_every_interval(
    tmp_path, monkeypatch, saved, interval, expected
) -> None:
    import lightly_derm.callbacks.periodic_checkpoint as module

    now = [0.0]

    class Clock(pl.Callback):  # runs before PeriodicCheckpoint's epoch end
        def on_train_epoch_end(self, trainer, pl_module):
            now[0] += 6.0

    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    callback = PeriodicCheckpoint(
        tmp_path / "c", every_n_steps=0, min_interval_s=interval
    )
    fit([Clock(), callback], tmp_path, epochs=4, batches=2)
    assert saved == expected
    assert torch.load(callback.path, weights_only=False)["global_step"] == 8
    with pytest.raises(ValueError, match="min_interval_s"):
        PeriodicCheckpoint(tmp_path, min_interval_s=-1.0)


def test_periodic_checkpoint_saves_the_end_of_a_max_steps_run(tmp_path, saved) -> None:
    callback = PeriodicCheckpoint(tmp_path / "c", every_n_steps=0, min_interval_s=3600)
    fit([callback], tmp_path, epochs=10, batches=5, max_steps=7)  # stops mid-epoch
    assert saved == [7]


def test_epoch_mean_loss_is_the_mean_of_the_steps(tmp_path) -> None:
    means = []

    class Record(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            means.append(float(trainer.callback_metrics["train_loss_epoch"]))

    fit([EpochMeanLoss(), Record()], tmp_path)
    # reference: steps log 0..4 (+10 in the second epoch); the callback logs before
    # Record reads (callbacks run in order)
    assert means == pytest.approx([sum(range(5)) / 5, 10 + sum(range(5)) / 5])


def test_epoch_mean_loss_survives_a_mid_epoch_checkpoint() -> None:
    """State saved after 3 steps and restored: the epoch mean covers all 5 steps."""
    logged = {}
    module = types.SimpleNamespace(
        device=torch.device("cpu"),
        log=lambda name, value, **kw: logged.update({name: float(value)}),
    )

    def trainer_at(value: float) -> types.SimpleNamespace:
        return types.SimpleNamespace(
            callback_metrics={"train_loss": torch.tensor(value)}
        )

    values = [1.0, 2.0, 4.0, 8.0, 16.0]
    first = EpochMeanLoss()
    first.on_train_epoch_start(None, module)
    for v in values[:3]:
        first.on_train_batch_end(trainer_at(v), module, None, None, 0)
    state = first.state_dict()
    resumed = EpochMeanLoss()
    resumed.load_state_dict(state)  # a mid-epoch resume: no on_train_epoch_start
    for v in values[3:]:
        resumed.on_train_batch_end(trainer_at(v), module, None, None, 0)
    resumed.on_train_epoch_end(types.SimpleNamespace(callback_metrics={}), module)
    assert logged["train_loss_epoch"] == pytest.approx(sum(values) / len(values))
    assert (
        resumed.state_dict()["count"] == 0
    )  # an epoch-end checkpoint holds no partial sum


def test_the_old_import_path_warns_and_forwards() -> None:
    import lightly_derm.callbacks as callbacks
    import lightly_derm.jobs.callbacks as old

    with pytest.warns(FutureWarning, match="moved to lightly_derm.callbacks.StepLoss"):
        assert old.StepLoss is callbacks.StepLoss
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        old.nothing  # noqa: B018
