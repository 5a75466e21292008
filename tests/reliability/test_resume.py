"""A run killed mid-epoch and resumed from its last checkpoint equals an uninterrupted one.

Lightning 2.6 restores weights, optimiser, schedulers and loop counters from a
mid-epoch checkpoint, but restarts an ordinary DataLoader from the top of the epoch
(replaying its first batches in a new order, with new augmentations) and keeps no
random states. With :class:`~lightly_derm.data.ResumableDataLoader` (position and
per-sample augmentation seeds in the checkpoint) and
:class:`~lightly_derm.callbacks.ExactResume` (the generators that
``training_step`` draws from) the resumed run ends with bit-identical weights on the
CPU. The negative controls show that the comparison can fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lightly_derm.callbacks import AtomicCheckpointIO, ExactResume
from lightly_derm.data import ResumableDataLoader
from tests.reliability.runs import (
    METHODS,
    LossCurve,
    ViewDataset,
    build,
    images,
    trainer,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BATCH_SIZE, EPOCHS, KILL_AT = 3, 2, 6  # 12 images: 4 batches per epoch, 8 in all


class Killed(Exception):
    """Stands for SIGKILL: raised before the checkpoint of the batch is written."""


class Kill(pl.Callback):
    def __init__(self, at_batch: int) -> None:
        self.at_batch = at_batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.fit_loop.total_batch_idx + 1 == self.at_batch:
            raise Killed


def run(
    name: str,
    folder: Path,
    kill_at: int | None = None,
    resume: bool = False,
    resumable: bool = True,
    exact_resume: bool = True,
) -> tuple[pl.LightningModule, list[float]]:
    model = build(name)
    dataset = ViewDataset(images(12), model.default_transform(input_size=32))
    collate = model.default_collate()
    if resumable:
        loader = ResumableDataLoader(
            dataset, batch_size=BATCH_SIZE, seed=0, collate_fn=collate
        )
    else:
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=BATCH_SIZE, shuffle=True, collate_fn=collate
        )
    curve = LossCurve()
    callbacks = [
        curve,
        ModelCheckpoint(folder, every_n_train_steps=1, save_top_k=0, save_last=True),
    ]
    if exact_resume:
        callbacks.append(ExactResume())
    if kill_at is not None:
        callbacks.append(Kill(kill_at))
    fit = trainer(
        max_epochs=EPOCHS,
        enable_checkpointing=True,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
    )
    ckpt = folder / "last.ckpt" if resume else None
    try:
        fit.fit(model, loader, ckpt_path=ckpt)
    except Killed:
        pass
    return model, curve.losses


def interrupted_and_resumed(name: str, tmp_path: Path, **kwargs):
    _, before = run(name, tmp_path / "run", kill_at=KILL_AT, **kwargs)
    last = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    progress = last["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    # Written after batch 5 (the first of epoch 1), before the kill after batch 6.
    assert progress["total"]["processed"] == KILL_AT - 1 and last["epoch"] == 1
    assert progress["current"]["processed"] == 1  # mid-epoch
    model, after = run(name, tmp_path / "run", resume=True, **kwargs)
    return model, before[: KILL_AT - 1] + after


def equal_weights(a: pl.LightningModule, b: pl.LightningModule) -> list[str]:
    theirs = b.state_dict()
    return [k for k, v in a.state_dict().items() if not torch.equal(v, theirs[k])]


FAST = {"gravis", "fgssl"}  # automatic and manual optimisation; the others: slow


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=() if n in FAST else pytest.mark.slow, id=n)
        for n in METHODS
    ],
)
def test_resumed_run_equals_uninterrupted_run(name: str, tmp_path: Path) -> None:
    reference, curve = run(name, tmp_path / "reference")
    assert len(curve) == 8
    resumed, resumed_curve = interrupted_and_resumed(name, tmp_path)
    assert equal_weights(reference, resumed) == []
    assert resumed_curve == curve


@pytest.mark.slow
def test_ordinary_dataloader_does_not_resume_exactly(tmp_path: Path) -> None:
    """Negative control: Lightning's default mid-epoch resume replays other batches."""
    reference, _ = run("gravis", tmp_path / "reference", resumable=False)
    resumed, _ = interrupted_and_resumed("gravis", tmp_path, resumable=False)
    assert equal_weights(reference, resumed) != []


@pytest.mark.slow
def test_without_random_states_fgssl_jigsaws_differ(tmp_path: Path) -> None:
    """Negative control: FG-SSL draws its jigsaws in training_step."""
    reference, _ = run("fgssl", tmp_path / "reference", exact_resume=False)
    resumed, _ = interrupted_and_resumed("fgssl", tmp_path, exact_resume=False)
    assert equal_weights(reference, resumed) != []
