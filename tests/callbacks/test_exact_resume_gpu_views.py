"""Exact resume with ``augment="gpu"``: the GPU views' generator is in the checkpoint.

The same kill-and-resume run as tests/reliability/test_resume.py, with the views made
on the device from canvases: the resumed run must end with the uninterrupted run's
weights and loss curve, bit for bit. The negative control drops the generator state on
loading (the views start over from the seed) and must differ.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lightly_derm import registry
from lightly_derm.callbacks import AtomicCheckpointIO, ExactResume
from lightly_derm.data import ResumableDataLoader
from lightly_derm.methods import SSLMethod
from lightly_derm.methods.base import CHECKPOINT_KEY, VIEW_GENERATOR_KEY
from tests.reliability.runs import LossCurve, ViewDataset, images, trainer
from tests.reliability.test_resume import Kill, Killed, equal_weights

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BATCH_SIZE, EPOCHS, KILL_AT = 3, 2, 6  # 12 images: 4 batches per epoch, 8 in all


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(
    folder: Path, kill_at: int | None = None, resume: bool = False
) -> tuple[pl.LightningModule, list[float]]:
    pl.seed_everything(0, verbose=False)
    model = registry.create("method", "gravis", backbone="resnet18", augment="gpu")
    dataset = ViewDataset(images(12), model.default_transform(input_size=32))
    loader = ResumableDataLoader(
        dataset, batch_size=BATCH_SIZE, seed=0, collate_fn=model.default_collate()
    )
    curve = LossCurve()
    callbacks = [
        curve,
        ModelCheckpoint(folder, every_n_train_steps=1, save_top_k=0, save_last=True),
        ExactResume(),
    ]
    if kill_at is not None:
        callbacks.append(Kill(kill_at))
    fit = trainer(
        max_epochs=EPOCHS,
        enable_checkpointing=True,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
    )
    try:
        fit.fit(model, loader, ckpt_path=folder / "last.ckpt" if resume else None)
    except Killed:
        pass
    return model, curve.losses


def interrupted_and_resumed(tmp_path: Path) -> tuple[pl.LightningModule, list[float]]:
    _, before = run(tmp_path / "run", kill_at=KILL_AT)
    last = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    saved = last[CHECKPOINT_KEY][VIEW_GENERATOR_KEY]
    assert saved["device"] == ["cpu"] and isinstance(saved["per_rank"][0], torch.Tensor)
    model, after = run(tmp_path / "run", resume=True)
    return model, before[: KILL_AT - 1] + after


@pytest.mark.slow
def test_resumed_gpu_view_run_equals_uninterrupted_run(tmp_path: Path) -> None:
    reference, curve = run(tmp_path / "reference")
    assert len(curve) == EPOCHS * 4
    resumed, resumed_curve = interrupted_and_resumed(tmp_path)
    assert equal_weights(reference, resumed) == []
    assert resumed_curve == curve


@pytest.mark.slow
def test_without_the_generator_state_the_views_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: views drawn afresh after resuming change the run."""
    reference, curve = run(tmp_path / "reference")
    monkeypatch.setattr(SSLMethod, "_restore_view_generator", lambda self, states: None)
    resumed, resumed_curve = interrupted_and_resumed(tmp_path)
    assert equal_weights(reference, resumed) != []
    assert resumed_curve[: KILL_AT - 1] == curve[: KILL_AT - 1]
    assert resumed_curve[KILL_AT - 1 :] != curve[KILL_AT - 1 :]


def test_generator_state_round_trip_and_other_world_size() -> None:
    """The saved state continues the stream; a checkpoint of 2 ranks is not used by 1."""
    model = registry.create("method", "gravis", backbone="resnet18", augment="gpu")
    generator = model.augment_generator(torch.device("cpu"))
    torch.rand(5, generator=generator)
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    expected = torch.rand(7, generator=generator)
    fresh = registry.create("method", "gravis", backbone="resnet18", augment="gpu")
    fresh.on_load_checkpoint(checkpoint)
    again = fresh.augment_generator(torch.device("cpu"))
    assert torch.equal(torch.rand(7, generator=again), expected)
    states = checkpoint[CHECKPOINT_KEY][VIEW_GENERATOR_KEY]
    two = {"device": states["device"] * 2, "per_rank": states["per_rank"] * 2}
    other = registry.create("method", "gravis", backbone="resnet18", augment="gpu")
    with pytest.warns(UserWarning, match="2 processes"):
        other._restore_view_generator(two)
    assert other._pending_view_state is None
    cpu = registry.create("method", "gravis", backbone="resnet18")
    cpu.on_save_checkpoint(checkpoint := {})
    assert VIEW_GENERATOR_KEY not in checkpoint[CHECKPOINT_KEY]
