"""Tiny training runs of any registered method, for the reliability tests.

Every method of the registry is built as a user would (``registry.create("method",
name, backbone="resnet18")``) and fed through its own ``default_transform(32)`` and
``default_collate()``; only the sizes are small.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image

from lightly_derm import registry

INPUT_SIZE = 32
METHODS = [info.name for info in registry.list("method")]


def images(count: int = 12, size: int = 40, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")
        for _ in range(count)
    ]


class ViewDataset(torch.utils.data.Dataset):
    """``(transform(image), label, filename)``: augmented in ``__getitem__``, as a
    real image folder is (so augmentations draw random numbers while loading)."""

    def __init__(self, pictures: Sequence[Image.Image], transform: Any) -> None:
        self.pictures = list(pictures)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pictures)

    def __getitem__(self, index: int) -> tuple[Any, int, str]:
        return self.transform(self.pictures[index]), index % 2, f"{index}.png"


def build(name: str, seed: int = 0) -> pl.LightningModule:
    """The registered method ``name`` on a ResNet-18, its weights drawn from ``seed``."""
    pl.seed_everything(seed, verbose=False)
    return registry.create("method", name, backbone="resnet18")


def trainer(**kwargs: Any) -> pl.Trainer:
    defaults: dict[str, Any] = dict(
        accelerator="cpu",
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


class LossCurve(pl.Callback):
    """The loss of every training batch, as Python floats."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))
