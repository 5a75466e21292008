"""Step-time calibration shared by the real-data benchmarks (dermamnist.py, isic_segmentation.py).

Before a run fits its epochs to a time budget (``--epochs auto``,
``--pretrain-epochs auto``), it measures what one step costs: the CPU seconds per image
of a method's view transform (:func:`transform_cost`) and the device seconds of a
training step on ready-made views (:func:`step_time`, a short Lightning fit with
:class:`StepClock`, synchronised on CUDA, the first steps not counted).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


def sync(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def transform_cost(transform: Any, images: list[Any], repeats: int = 1) -> float:
    """CPU seconds per image of a transform (one thread, after a warm-up)."""
    for image in images[:4]:
        transform(image)
    start = time.process_time()
    for _ in range(repeats):
        for image in images:
            transform(image)
    return (time.process_time() - start) / (repeats * len(images))


class RepeatedSamples(torch.utils.data.Dataset):
    """``repeats`` passes over a fixed list of ready-made samples (no augmentation cost)."""

    def __init__(self, samples: list[Any], repeats: int) -> None:
        self.samples, self.repeats = samples, repeats

    def __len__(self) -> int:
        return len(self.samples) * self.repeats

    def __getitem__(self, index: int) -> Any:
        return self.samples[index % len(self.samples)]


class StepClock(pl.Callback):
    """Synchronised seconds of each training step after the first ``skip``."""

    def __init__(self, device: torch.device, skip: int = 2) -> None:
        self.device, self.skip, self.times, self.start = device, skip, [], 0.0

    def on_train_batch_start(
        self, trainer: Any, module: Any, batch: Any, index: int
    ) -> None:
        sync(self.device)
        self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Any, module: Any, outputs: Any, batch: Any, index: int
    ) -> None:
        sync(self.device)
        if index >= self.skip:
            self.times.append(time.perf_counter() - self.start)


def step_time(
    model: pl.LightningModule,
    samples: list[Any],
    steps: int,
    device: torch.device,
    trainer_kwargs: dict[str, Any],
    collate_fn: Any = None,
    skip: int = 2,
) -> float:
    """Median seconds of a training step on one batch of ready-made ``samples``.

    Runs ``skip + steps`` steps of a Lightning fit (the first ``skip`` warm up cuDNN and
    the allocator and are not counted). The model is trained: pass a throw-away one.
    """
    from torch.utils.data import DataLoader

    clock = StepClock(device, skip=skip)
    loader = DataLoader(
        RepeatedSamples(samples, skip + steps),
        batch_size=len(samples),
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
    )
    pl.Trainer(max_epochs=1, callbacks=[clock], **trainer_kwargs).fit(model, loader)
    return float(np.median(clock.times))
