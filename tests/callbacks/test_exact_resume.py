from __future__ import annotations

import random

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lightly_derm.callbacks import ExactResume, get_rng_states, set_rng_states

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def draw() -> tuple[float, float, float, float]:
    return (
        torch.rand(()).item(),
        float(np.random.rand()),
        float(np.random.randn()),  # NumPy's cached Gaussian is part of the state
        random.gauss(0, 1),
    )


def test_round_trip_through_a_weights_only_file(tmp_path) -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    draw()
    torch.save({"rng": get_rng_states()}, tmp_path / "states.pt")
    expected = [draw() for _ in range(3)]
    set_rng_states(torch.load(tmp_path / "states.pt", weights_only=True)["rng"])
    assert [draw() for _ in range(3)] == expected


class _Sampler(pl.LightningModule):
    """Draws random numbers in training_step, as FG-SSL's jigsaws or dropout do."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.draws: list[tuple] = []

    def training_step(self, batch, batch_idx):
        self.draws.append(draw())
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, callbacks, ckpt_path=None, max_steps=6) -> _Sampler:
    pl.seed_everything(0, verbose=False)
    model = _Sampler()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            *callbacks,
            ModelCheckpoint(tmp_path, "{step}", every_n_train_steps=3, save_top_k=-1),
        ],
    )
    loader = torch.utils.data.DataLoader(torch.randn(16, 2), batch_size=2)
    trainer.fit(model, loader, ckpt_path=ckpt_path, weights_only=True)
    return model


@pytest.mark.parametrize("restore", [True, False])
def test_resumed_run_draws_the_same_numbers(tmp_path, restore) -> None:
    callbacks = [ExactResume()] if restore else []
    full = _fit(tmp_path / "a", callbacks)
    _fit(tmp_path / "b", callbacks, max_steps=3)
    resumed = _fit(tmp_path / "c", callbacks, ckpt_path=tmp_path / "b" / "step=3.ckpt")
    assert len(resumed.draws) == 3
    # Without the callback the resumed run draws other numbers: the test can fail.
    assert (resumed.draws == full.draws[3:]) is restore


def test_other_world_size_starts_from_process_0(tmp_path) -> None:
    callback = ExactResume()
    states = [get_rng_states(), get_rng_states()]
    with pytest.warns(
        UserWarning, match="random states of 2 processes, this run has 1"
    ):
        callback.load_state_dict({"per_rank": states})
    assert callback._pending is states[0]


class _SizedSchedule(_Sampler):
    """Sizes its schedule from estimated_stepping_batches, as BYOL does: Lightning
    then loads the train DataLoader before restoring the checkpoint's loop state."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch.clone())
        return super().training_step(batch, batch_idx)

    def configure_optimizers(self):
        optimizer = super().configure_optimizers()
        total = self.trainer.estimated_stepping_batches
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, total)]


@pytest.mark.parametrize("exact", [True, False])
def test_data_position_is_restored_when_lightning_loads_data_early(tmp_path, exact):
    from lightly_derm.data import ResumableDataLoader

    def fit(folder, max_steps=-1, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        model = _SizedSchedule()
        pl.Trainer(
            accelerator="cpu",
            max_epochs=1,  # with max_epochs the estimate reads the DataLoader
            max_steps=max_steps,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[ExactResume()] * exact
            + [ModelCheckpoint(folder, "{step}", every_n_train_steps=3, save_top_k=-1)],
        ).fit(
            model,
            ResumableDataLoader(torch.randn(16, 2), batch_size=2, seed=0),
            ckpt_path=ckpt_path,
        )
        return model

    full = fit(tmp_path / "a")
    fit(tmp_path / "b", max_steps=3)
    resumed = fit(tmp_path / "c", ckpt_path=tmp_path / "b" / "step=3.ckpt")
    assert len(full.seen) == 8 and len(resumed.seen) == 5
    same = all(
        torch.equal(a, b) for a, b in zip(resumed.seen, full.seen[3:], strict=True)
    )
    assert same is exact  # without ExactResume the epoch restarts at its first batch
