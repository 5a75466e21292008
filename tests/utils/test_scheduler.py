from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from lightly_derm.utils.scheduler import cosine_annealing, training_length


def _reference(lr0: float, t: int, total: int) -> float:
    """SGDR's cosine without restarts, written out in float64."""
    return lr0 * (1.0 + math.cos(math.pi * t / total)) / 2.0


@pytest.mark.parametrize("total", [1, 3, 10, 37])
@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_cosine_annealing_matches_a_loop(total: int, interval: str) -> None:
    generator = torch.Generator().manual_seed(total)
    lrs0 = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
    layers = [torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)]
    optimizer = torch.optim.SGD(
        [
            {"params": layer.parameters(), "lr": lr}
            for layer, lr in zip(layers, lrs0, strict=True)
        ],
        lr=1.0,
    )
    config = cosine_annealing(optimizer, (total, interval))
    assert isinstance(config, dict) and config["optimizer"] is optimizer
    assert config["lr_scheduler"]["interval"] == interval
    scheduler = config["lr_scheduler"]["scheduler"]
    for t in range(total + 1):
        for group, lr0 in zip(optimizer.param_groups, lrs0, strict=True):
            assert group["lr"] == pytest.approx(_reference(lr0, t, total), abs=1e-12)
        optimizer.step()
        scheduler.step()


def test_no_length_keeps_the_learning_rate() -> None:
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    assert cosine_annealing(optimizer, None) is optimizer


@pytest.mark.parametrize(
    "length, match",
    [
        ((0, "epoch"), "integer >= 1"),
        ((2.5, "step"), "integer >= 1"),
        ((3, "x"), "interval"),
    ],
)
def test_bad_lengths(length, match) -> None:
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=match):
        cosine_annealing(optimizer, length)


def _trainer(**limits) -> pl.Trainer:
    return pl.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, **limits
    )


@pytest.mark.parametrize(
    "limits, unit, expected",
    [
        ({"max_epochs": 7}, "auto", (7, "epoch")),
        ({"max_epochs": 7}, "epoch", (7, "epoch")),
        ({"max_epochs": -1, "max_steps": 50}, "auto", (50, "step")),
        ({"max_epochs": -1, "max_steps": 50}, "epoch", None),
        ({"max_epochs": -1}, "auto", None),
    ],
)
def test_training_length(limits, unit, expected) -> None:
    assert training_length(_trainer(**limits), unit) == expected


def test_training_length_without_a_trainer_or_with_a_bad_unit() -> None:
    assert training_length(None) is None
    with pytest.raises(ValueError, match="unit"):
        training_length(None, "epochs")  # type: ignore[arg-type]


def test_training_length_in_steps_counts_optimiser_steps() -> None:
    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)
            self.length: tuple[int, str] | None = None

        def training_step(self, batch, batch_idx):
            return self.layer(batch).sum()

        def configure_optimizers(self):
            self.length = training_length(self.trainer, "step")
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Tiny()
    loader = torch.utils.data.DataLoader(torch.randn(10, 2), batch_size=2)
    _trainer(max_epochs=3, accumulate_grad_batches=2).fit(model, loader)
    assert model.length == (9, "step")  # 5 batches -> 3 optimiser steps per epoch
