"""SGD with a cosine learning-rate schedule over the trainer's run, shared by methods.

Builds on :class:`torch.optim.SGD` and :class:`torch.optim.lr_scheduler.CosineAnnealingLR`;
reads the run length from the Lightning trainer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn


def sgd_cosine(
    module: pl.LightningModule,
    parameters: Iterable[Any],
    lr: float,
    momentum: float,
    weight_decay: float,
) -> Any:
    """SGD and a cosine decay to 0 over the run, as a ``configure_optimizers`` result.

    The schedule steps once per epoch over ``trainer.max_epochs``; when that is
    unbounded (``-1``, e.g. ``Trainer(max_epochs=None, max_steps=N)``) it steps per
    optimiser step over ``trainer.max_steps``; when both are unbounded the learning
    rate stays constant (with a warning).
    """
    optimizer = torch.optim.SGD(
        parameters, lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    trainer = module._trainer  # None outside a Trainer: no schedule to size
    max_epochs = trainer.max_epochs if trainer is not None else None
    max_steps = trainer.max_steps if trainer is not None else -1
    if max_epochs is not None and max_epochs > 0:
        total, interval = max_epochs, "epoch"
    elif max_steps is not None and max_steps > 0:
        total, interval = max_steps, "step"
    else:
        rank_zero_warn(
            f"{type(module).__name__}: the run has no max_epochs or max_steps, so the "
            "learning rate stays constant (no cosine schedule)"
        )
        return optimizer
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": interval},
    }


def hparams_ignore(backbone: Any) -> list[str]:
    """Constructor arguments to leave out of ``save_hyperparameters``.

    ``backbone_weights`` always: a checkpoint holds the trained weights, and reloading
    it must not need the initial weights file. ``backbone`` when it is a module.
    """
    return ["backbone_weights"] + ([] if isinstance(backbone, str) else ["backbone"])
