"""SGD with a cosine learning-rate schedule over the trainer's run, shared by methods.

Builds on :class:`torch.optim.SGD` and :func:`lightly_derm.utils.scheduler.cosine_annealing`;
reads the run length from the Lightning trainer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from lightly_derm.utils.scheduler import cosine_annealing, training_length


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
    # module._trainer is None outside a Trainer: no schedule to size
    length = training_length(module._trainer, "auto")
    if length is None:
        rank_zero_warn(
            f"{type(module).__name__}: the run has no max_epochs or max_steps, so the "
            "learning rate stays constant (no cosine schedule)"
        )
    return cosine_annealing(optimizer, length)


def lr_groups(module: nn.Module, lr: float, backbone_lr: float | None) -> Any:
    """The trainable parameters of a method, for SGD, with the backbone at its own rate.

    ``backbone_lr`` is ``None`` or equal to ``lr``: one group of every trainable
    parameter (as before the option existed, so optimiser states of older checkpoints
    still load).
    Otherwise two groups: ``module.backbone``'s trainable parameters at ``backbone_lr``
    and every other trainable parameter at ``lr`` (a cosine schedule scales both).
    Continued pretraining from ImageNet weights is the use: a slower backbone keeps
    more of what the weights knew while the new heads learn at the full rate (the
    FG-SSL authors' split, there 1:10).
    """
    if backbone_lr is None or backbone_lr == lr:
        return [p for p in module.parameters() if p.requires_grad]
    backbone_module = module.backbone
    assert isinstance(backbone_module, nn.Module), "a method's backbone is a module"
    backbone = [p for p in backbone_module.parameters() if p.requires_grad]
    in_backbone = {id(p) for p in backbone}
    rest = [
        p for p in module.parameters() if p.requires_grad and id(p) not in in_backbone
    ]
    groups = [{"params": backbone, "lr": backbone_lr}, {"params": rest, "lr": lr}]
    return [g for g in groups if g["params"]]


def hparams_ignore(backbone: Any) -> list[str]:
    """Constructor arguments to leave out of ``save_hyperparameters``.

    ``backbone_weights`` always: a checkpoint holds the trained weights, and reloading
    it must not need the initial weights file. ``backbone`` when it is a module.
    """
    return ["backbone_weights"] + ([] if isinstance(backbone, str) else ["backbone"])
