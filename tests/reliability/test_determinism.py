"""One seed, one loss curve: every registered method, on the CPU, twice.

``pl.seed_everything(seed)`` seeds the weights, the shuffling and the augmentations;
``Trainer(deterministic=True)`` makes torch pick deterministic kernels. Two runs with
the same seed must log bit-identical losses; another seed must give other losses (so
the comparison can fail). The checkpoint each run writes must load with
``torch.load(weights_only=True)`` and ``load_from_checkpoint(..., weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lightly_derm import registry
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


def curve(
    name: str,
    seed: int,
    folder: Path | None = None,
    batches: int = 2,
    **loader_kwargs,
) -> list[float]:
    model = build(name, seed)  # seeds everything, then draws the weights
    dataset = ViewDataset(images(8), model.default_transform(input_size=32))
    collate = model.default_collate()
    if loader_kwargs:
        loader = ResumableDataLoader(
            dataset, batch_size=4, seed=seed, collate_fn=collate, **loader_kwargs
        )
    else:
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=4, shuffle=True, collate_fn=collate
        )
    losses = LossCurve()
    fit = trainer(max_epochs=1, limit_train_batches=batches, callbacks=[losses])
    fit.fit(model, loader)
    if folder is not None:
        fit.save_checkpoint(folder / f"{name}.ckpt")
    return losses.losses


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.slow
def test_same_seed_same_loss_curve(name: str, tmp_path: Path) -> None:
    first = curve(name, seed=0, folder=tmp_path)
    assert len(first) == 2
    assert curve(name, seed=0) == first
    assert curve(name, seed=1, batches=1)[0] != first[0]
    # The checkpoint loads without unpickling code, also through Lightning.
    path = tmp_path / f"{name}.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    cls = registry.info("method", name).load()
    assert checkpoint["lightly_derm"]["method"] == cls.__name__
    restored = cls.load_from_checkpoint(path, weights_only=True)
    assert isinstance(restored, pl.LightningModule)


@pytest.mark.slow
def test_resumable_loader_curve_does_not_depend_on_workers() -> None:
    """Per-sample seeds: 0 or 2 DataLoader workers give the same curve."""
    assert curve("gravis", 0, shuffle=True) == curve(
        "gravis", 0, shuffle=True, num_workers=2
    )
