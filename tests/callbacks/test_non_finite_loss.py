from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.overrides import TorchFunctionMode

from lightly_derm.callbacks import NonFiniteLossError, NonFiniteLossGuard
from lightly_derm.methods import FGSSL, GraVIS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def tiny_backbone() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()
    )
    net.feature_dim = 16  # type: ignore[assignment]
    return net


def samples(count: int, bad: int | None, views: int = 2, size: int = 16) -> list:
    """``count`` K-view samples; every view of sample ``bad`` is NaN."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(count):
        v = [torch.randn(3, size, size, generator=gen) for _ in range(views)]
        if i == bad:
            v = [torch.full_like(x, float("nan")) for x in v]
        out.append((v, 0, f"{i}.png"))
    return out


def fit(model, data, batch_size: int, tmp_path: Path, guard, every: int, **kwargs):
    loader = torch.utils.data.DataLoader(
        data, batch_size=batch_size, collate_fn=model.default_collate()
    )
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path, filename="{step}", every_n_train_steps=every, save_top_k=-1
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[guard, checkpoint],
        **kwargs,
    )
    trainer.fit(model, loader)
    return trainer


@pytest.mark.parametrize("check_every", [5, 1])
def test_nan_loss_stops_with_step_and_last_good_checkpoint(tmp_path, check_every):
    """GraVIS; the NaN sample is in batch 6 (global step 7); checkpoints every 2 steps."""
    model = GraVIS(backbone=tiny_backbone(), hidden_dim=8, output_dim=4)
    guard = NonFiniteLossGuard(check_every_n_steps=check_every)
    with pytest.raises(NonFiniteLossError) as info:
        fit(model, samples(20, bad=12), 2, tmp_path, guard, every=2, max_steps=10)
    error = info.value
    assert (error.global_step, error.epoch, error.batch_idx) == (7, 0, 6)
    assert math.isnan(error.value)
    good = str(tmp_path / "step=6.ckpt")
    assert error.last_good_checkpoint == good
    message = str(error)
    assert "NaN at global step 7 (epoch 0, batch 6)" in message
    assert f"last good checkpoint is {good} (global step 6)" in message
    # Read back at batch 5 (every 5 batches) or at the bad batch itself; the checkpoint
    # of step 8 is refused before it is written, so the run stops at step 8 or 7.
    assert f"stopped at global step {8 if check_every == 5 else 7}" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step=2.ckpt",
        "step=4.ckpt",
        "step=6.ckpt",
    ]
    state = torch.load(good, weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())


def test_manual_optimisation_fgssl(tmp_path):
    """FG-SSL's progressive schedule: 4 optimizer steps per batch, NaN in batch 2."""
    model = FGSSL(backbone="resnet18", grids=(2, 2, 1), embedding_dim=8, block_dim=8)
    guard = NonFiniteLossGuard(check_every_n_steps=10)
    with pytest.raises(NonFiniteLossError) as info:
        fit(model, samples(8, bad=5), 2, tmp_path, guard, every=4, max_epochs=1)
    error = info.value
    assert (error.epoch, error.batch_idx, error.global_step) == (0, 2, 12)
    assert error.last_good_checkpoint == str(tmp_path / "step=8.ckpt")
    assert "global step 12 (epoch 0, batch 2)" in str(error)
    assert "step=12.ckpt" not in {p.name for p in tmp_path.iterdir()}


class _ReturnsNothing(pl.LightningModule):
    """Manual optimisation that only logs its loss (training_step returns None)."""

    def __init__(self, bad_batch: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.layer = nn.Linear(2, 1)
        self.bad_batch = bad_batch

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch).pow(2).mean()
        if batch_idx == self.bad_batch:
            loss = loss * float("inf")
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.log("train_loss", loss, prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_logged_loss_is_checked_when_training_step_returns_nothing(tmp_path):
    guard = NonFiniteLossGuard(check_every_n_steps=3)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[guard],
    )
    loader = torch.utils.data.DataLoader(torch.randn(10, 2), batch_size=2)
    with pytest.raises(NonFiniteLossError, match=r"\+inf at global step 2 .*batch 1"):
        trainer.fit(_ReturnsNothing(bad_batch=1), loader)
    assert "No checkpoint was saved before it" in str(
        guard._error(trainer, 2, 0, 1, float("inf"))
    )


def test_finite_run_passes_and_reads_back_rarely(tmp_path):
    model = GraVIS(backbone=tiny_backbone(), hidden_dim=8, output_dim=4)
    guard = NonFiniteLossGuard(check_every_n_steps=4)
    fit(model, samples(20, bad=None), 2, tmp_path, guard, every=100, max_epochs=1)
    # 10 batches: read back after batches 4 and 8, and at the end of the epoch; the
    # end-of-training check has nothing left to read.
    assert guard.num_syncs == 3


class _HostReads(TorchFunctionMode):
    """Records tensor → Python conversions (each one is a device sync on a GPU)."""

    NAMES = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu"}

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.NAMES:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


def test_no_host_sync_between_read_backs() -> None:
    guard = NonFiniteLossGuard(check_every_n_steps=10)
    trainer = SimpleNamespace(
        global_step=0, current_epoch=0, world_size=1, checkpoint_callbacks=[]
    )
    losses = [torch.tensor(1.0), torch.tensor(float("nan"))] + [torch.tensor(2.0)] * 8
    with _HostReads() as mode:
        for step, loss in enumerate(losses[:9]):
            trainer.global_step = step + 1
            guard.on_train_batch_end(trainer, None, {"loss": loss}, None, step)
    assert mode.reads == [], f"per-step host reads: {mode.reads}"
    trainer.global_step = 10
    with _HostReads() as mode, pytest.raises(NonFiniteLossError, match="step 2 "):
        guard.on_train_batch_end(trainer, None, {"loss": losses[9]}, None, 9)
    assert 1 <= len(mode.reads) <= 3  # the read-back itself


def test_bad_arguments() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="check_every_n_steps"):
            NonFiniteLossGuard(check_every_n_steps=bad)


@pytest.mark.gpu
def test_gpu_steps_never_synchronise() -> None:
    """On CUDA, torch's sync debug mode raises on any synchronising call."""
    guard = NonFiniteLossGuard(check_every_n_steps=1000)
    trainer = SimpleNamespace(
        global_step=0, current_epoch=0, world_size=1, checkpoint_callbacks=[]
    )
    losses = torch.rand(50, device="cuda")
    guard.on_train_batch_end(trainer, None, {"loss": losses[0]}, None, 0)  # allocates
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 50):
            guard.on_train_batch_end(trainer, None, {"loss": losses[step]}, None, step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    guard._check(trainer)  # finite: no error
