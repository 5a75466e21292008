"""The cosine learning-rate decay of every lightly-derm module, and the run length it spans.

Builds on :class:`torch.optim.lr_scheduler.CosineAnnealingLR` (the learning rate falls
from its initial value to 0 over ``T_max`` intervals, as SGDR without restarts,
Loshchilov & Hutter, ICLR 2017) and Lightning's ``configure_optimizers`` contract. The
methods and :class:`~lightly_derm.segmentation.LesionSegmentation` differ only in the
run length they span (epochs, steps, or their own ``max_epochs``), so one function
finds the length (:func:`training_length`) and one builds the result
(:func:`cosine_annealing`). lightly's ``CosineWarmupScheduler`` is not used: its
``cosine_schedule`` reaches the final value one step early (``max_steps - 1``) and
would change the published schedules.

Example:
    >>> import torch
    >>> from lightly_derm.utils.scheduler import cosine_annealing
    >>> optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    >>> config = cosine_annealing(optimizer, (4, "epoch"))
    >>> config["lr_scheduler"]["interval"]
    'epoch'
    >>> for _ in range(2):
    ...     optimizer.step()
    ...     config["lr_scheduler"]["scheduler"].step()
    >>> round(optimizer.param_groups[0]["lr"], 6)  # halfway: (1 + cos(pi / 2)) / 2
    0.5
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch.optim import Optimizer

#: How often a schedule steps: once per epoch or once per optimiser step.
Interval = Literal["epoch", "step"]


def training_length(
    trainer: Any, unit: Literal["epoch", "step", "auto"] = "auto"
) -> tuple[int, Interval] | None:
    """The number of epochs or optimiser steps a Lightning ``Trainer`` will run.

    Args:
        trainer: A ``pytorch_lightning.Trainer`` (``None``: no run, returns ``None``).
        unit: ``"epoch"``: ``trainer.max_epochs``. ``"step"``:
            ``trainer.estimated_stepping_batches`` (optimiser steps over all epochs,
            after gradient accumulation; needs the training data, so call it from
            ``configure_optimizers``). ``"auto"``: ``max_epochs`` when bounded, else
            ``max_steps``.

    Returns:
        ``(length, interval)``, or ``None`` when the run has no finite length.

    Example:
        >>> import pytorch_lightning as pl
        >>> training_length(pl.Trainer(max_epochs=-1, max_steps=30, logger=False))
        (30, 'step')
    """
    if unit not in ("epoch", "step", "auto"):
        raise ValueError(f"unit must be 'epoch', 'step' or 'auto', got {unit!r}")
    if trainer is None:
        return None
    if unit in ("epoch", "auto"):
        epochs = trainer.max_epochs
        if epochs is not None and epochs > 0:
            return int(epochs), "epoch"
        if unit == "auto" and trainer.max_steps is not None and trainer.max_steps > 0:
            return int(trainer.max_steps), "step"
        return None
    steps = trainer.estimated_stepping_batches
    return (max(int(steps), 1), "step") if math.isfinite(steps) else None


def cosine_annealing(
    optimizer: Optimizer, length: tuple[int, Interval] | None
) -> Optimizer | dict[str, Any]:
    """``optimizer`` with a cosine decay to 0, as a ``configure_optimizers`` result.

    The learning rate of every parameter group after ``t`` of the ``T`` intervals is
    ``lr_0 · (1 + cos(π t / T)) / 2``.

    Args:
        optimizer: The optimiser (its groups' ``lr`` are the starting values).
        length: ``(T, interval)``, as :func:`training_length` returns it; ``None``:
            no schedule, the learning rate stays constant.

    Returns:
        ``{"optimizer": ..., "lr_scheduler": {"scheduler": ..., "interval": ...}}``,
        or ``optimizer`` itself when ``length`` is ``None``.

    Raises:
        ValueError: ``length`` is not a positive count with ``"epoch"`` or ``"step"``.
    """
    if length is None:
        return optimizer
    total, interval = length
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ValueError(f"the schedule length must be an integer >= 1, got {total!r}")
    if interval not in ("epoch", "step"):
        raise ValueError(f"interval must be 'epoch' or 'step', got {interval!r}")
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": interval},
    }
