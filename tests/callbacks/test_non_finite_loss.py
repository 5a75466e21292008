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
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(8, 3, device="cuda")).sum().backward()

    def step(i: int) -> None:
        guard.on_before_optimizer_step(trainer, model, optimizer)
        guard.on_train_batch_end(trainer, model, {"loss": losses[i]}, None, i)

    step(0)  # allocates
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(1, 50):
            step(i)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    guard._check(trainer)  # finite: no error


class _Explode(torch.optim.Optimizer):
    """Multiplies every parameter by ``factor``: float32 overflows in two steps."""

    def __init__(self, params, factor: float = 1e30) -> None:
        super().__init__(params, {"factor": factor})

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            with torch.enable_grad():
                closure()
        for group in self.param_groups:
            for p in group["params"]:
                p.mul_(group["factor"])


class _Saturating(pl.LightningModule):
    """A loss that stays finite while its weights overflow (tanh saturates).

    ``kind="parameters"``: the optimizer multiplies the weight by 1e30 per step, so it
    is inf after the second step while loss and gradients stay finite.
    ``kind="gradients"``: loss sqrt(|w - x|) is finite but its gradient is inf where
    x == w (batch ``bad``); SGD then makes w NaN.
    """

    def __init__(self, kind: str, bad: int = 1) -> None:
        super().__init__()
        self.kind = kind
        self.bad = bad
        self.w = nn.Parameter(torch.full((1,), 0.5))
        self.register_buffer("running", torch.zeros(1))

    def training_step(self, batch, batch_idx):
        if self.kind == "parameters":
            return torch.tanh(self.w * batch.abs().add(1)).mean()
        target = self.w.detach().expand_as(batch) if batch_idx == self.bad else batch
        return (self.w - target).abs().sqrt().mean()

    def configure_optimizers(self):
        if self.kind == "parameters":
            return _Explode(self.parameters())
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit_saturating(kind: str, guard: NonFiniteLossGuard) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[guard],
    )
    data = torch.randn(12, 1) + 3.0
    trainer.fit(_Saturating(kind), torch.utils.data.DataLoader(data, batch_size=2))
    return trainer


def test_parameters_that_overflow_stop_the_run_although_the_loss_is_finite() -> None:
    # before: a run whose weights reached inf (or 1e26) with a finite loss exited 0
    guard = NonFiniteLossGuard(check_every_n_steps=4)
    with pytest.raises(NonFiniteLossError) as info:
        _fit_saturating("parameters", guard)
    error = info.value
    assert (error.what, error.global_step, error.batch_idx) == ("parameters", 2, 1)
    assert error.value is None
    assert str(error).startswith(
        "the model's parameters became non-finite (NaN or inf) with a finite loss at "
        "global step 2 (epoch 0, batch 1)"
    )
    # the negative control: without the parameter check the run ends "successfully"
    _fit_saturating("parameters", NonFiniteLossGuard(check_parameters=False))


def test_infinite_gradients_stop_the_run_at_their_step() -> None:
    with pytest.raises(NonFiniteLossError) as info:
        _fit_saturating("gradients", NonFiniteLossGuard(check_every_n_steps=3))
    assert (info.value.what, info.value.batch_idx) == ("gradients", 1)
    assert "the model's gradients became non-finite" in str(info.value)
    # without the gradient check the NaN parameters it leads to are caught instead
    with pytest.raises(NonFiniteLossError) as info:
        _fit_saturating("gradients", NonFiniteLossGuard(check_gradients=False))
    assert (info.value.what, info.value.batch_idx) == ("parameters", 1)
    # with the loss check alone the run goes on one batch longer, on NaN weights
    with pytest.raises(NonFiniteLossError) as info:
        _fit_saturating(
            "gradients",
            NonFiniteLossGuard(check_gradients=False, check_parameters=False),
        )
    assert (info.value.what, info.value.batch_idx) == ("loss", 2)


def test_no_host_sync_between_read_backs_with_parameter_and_gradient_checks() -> None:
    from lightly_derm.utils.host_sync import record_host_syncs

    guard = NonFiniteLossGuard(check_every_n_steps=10)
    trainer = SimpleNamespace(
        global_step=0, current_epoch=0, world_size=1, checkpoint_callbacks=[]
    )
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.randn(8, 3)
    with _HostReads() as mode, record_host_syncs(factories=True) as recorder:
        for step in range(9):
            optimizer.zero_grad()
            loss = model(data).pow(2).mean()
            loss.backward()
            if step == 4:
                model[0].weight.grad[0, 0] = float("nan")
            guard.on_before_optimizer_step(trainer, model, optimizer)
            optimizer.step()
            trainer.global_step = step + 1
            guard.on_train_batch_end(trainer, model, {"loss": loss}, None, step)
    assert mode.reads == [], f"per-step host reads: {mode.reads}"
    assert not recorder.syncs(), recorder.summary()
    with pytest.raises(NonFiniteLossError, match="gradients .* global step 5 ") as info:
        guard._check(trainer)
    assert info.value.what == "gradients"


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_finiteness_check_of_many_tensors(device: str) -> None:
    from lightly_derm.callbacks.non_finite_loss import _all_finite

    if device == "meta":  # the get_total_norm path: any non-CPU device
        tensors = [torch.ones(3, device="meta")]
        assert _all_finite(tensors).device.type == "meta"
        return
    tensors = [torch.ones(3), torch.ones(2, 2).double(), torch.ones(4).bfloat16()]
    assert _all_finite(tensors) and _all_finite([]) is None
    for value in (math.nan, math.inf, -math.inf):
        for k in range(3):
            bad = [t.clone() for t in tensors]
            bad[k].view(-1)[1] = value
            assert not _all_finite(bad)
    huge = [t.clone() for t in tensors]
    huge[1][0, 0] = 1e300  # finite in float64, inf in float32: still finite
    assert _all_finite(huge)


def test_advice_is_the_callers() -> None:
    trainer = SimpleNamespace(global_step=3, checkpoint_callbacks=[])
    default = NonFiniteLossGuard()._error(trainer, 3, 0, 2, math.nan)
    assert str(default).endswith(
        "No checkpoint was saved before it. Lower the learning rate and train again, "
        "or look at the data of that batch."
    )
    own = NonFiniteLossGuard(advice="Run: tool pretrain --lr 0.01 --out new/")
    assert str(own._error(trainer, 3, 0, 2, math.nan)).endswith(
        "before it. Run: tool pretrain --lr 0.01 --out new/"
    )
