"""The methods' optimisers (SGD, LARS or AdamW) and cosine schedule over the run.

Builds on :class:`torch.optim.SGD`, lightly's :class:`~lightly.utils.lars.LARS`,
:class:`torch.optim.AdamW` (with its fused kernel,
:func:`lightly_derm.utils.fused.fused_optimizer`) and
:func:`~lightly.models.utils.get_weight_decay_parameters`, and
:func:`lightly_derm.utils.scheduler.cosine_annealing`; reads the run length from the
Lightning trainer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from lightly.models.utils import get_weight_decay_parameters
from lightly.utils.lars import LARS
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from lightly_derm.errors import ConfigError
from lightly_derm.utils.fused import fused_optimizer
from lightly_derm.utils.scheduler import cosine_annealing, training_length
from lightly_derm.utils.validation import check_choice

#: The optimisers a method's ``optimizer`` argument names.
OptimizerName = Literal["sgd", "lars", "adamw"]
OPTIMIZERS: tuple[str, ...] = ("sgd", "lars", "adamw")


def check_optimizer(name: Any, weight_decay: float) -> None:
    """Raises a one-line :class:`~lightly_derm.errors.ConfigError` for a bad optimizer.

    Bad: an unknown name, or LARS without weight decay (lightly's LARS scales only
    weight-decayed parameters, so it would silently be SGD).
    """
    check_choice("optimizer", name, OPTIMIZERS)
    if name == "lars" and not weight_decay > 0:
        raise ConfigError(
            f"optimizer='lars' needs weight_decay > 0, got {weight_decay!r} (lightly's "
            "LARS scales only the weight-decayed parameters); set it, e.g. "
            "weight_decay=1e-6 as in the SimCLR paper"
        )


def make_optimizer(
    module: nn.Module,
    name: str,
    parameters: Iterable[Any],
    lr: float,
    momentum: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    """SGD, LARS or AdamW over ``parameters`` (parameters or parameter groups).

    ``"sgd"``: :class:`torch.optim.SGD` with momentum and weight decay on every
    parameter (lightly's examples).
    ``"lars"``: lightly's :class:`~lightly.utils.lars.LARS` as in the BYOL and SimCLR
    papers: every weight's step is scaled to ``trust_coefficient`` (0.001) times its
    own norm over its gradient's, so that every layer moves by the same fraction of
    its size per step; normalisation layers' parameters and biases
    (:func:`~lightly.models.utils.get_weight_decay_parameters` of ``module``) get
    neither the scaling nor weight decay. With SGD, a ResNet's stem moves tens of
    times further, relative to its size, than its last stage, which over a few
    hundred steps on a small data set leaves the deep stages near their random
    initialisation. lightly's LARS tests each norm on the host (a synchronisation per
    parameter and step on a GPU); SGD has none.
    ``"adamw"``: :class:`torch.optim.AdamW` with ``betas=(momentum, 0.999)`` and
    decoupled weight decay on the weights only (normalisation layers and biases, as
    for LARS, get none). Adam's steps are about ``lr`` per weight whatever the
    gradient's size, so every stage's filters turn at a similar rate; LARS's trust
    ratio caps a step at ``lr * 0.001`` of the weight's norm, which over a few hundred
    steps turns the filters by a few degrees, and its weight decay mostly shrinks them.

    AdamW uses PyTorch's fused kernel where it exists (same update, one kernel per
    step; not under fp16 mixed precision, see
    :func:`~lightly_derm.utils.fused.fused_optimizer`). SGD stays PyTorch's default:
    its fused kernel fails when parameters get their first gradient at different
    steps (FG-SSL's progressive steps), and on the CPU ``foreach`` is slower than the
    default.
    """
    check_optimizer(name, weight_decay)
    groups = list(parameters)
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    _, no_decay = get_weight_decay_parameters([module])
    plain = {id(p) for p in no_decay}
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    split = []
    for group in groups:
        params = list(group["params"])
        split.append({**group, "params": [p for p in params if id(p) not in plain]})
        split.append(
            {
                **group,
                "params": [p for p in params if id(p) in plain],
                "weight_decay": 0.0,  # LARS leaves weight-decay-free groups unscaled
            }
        )
    split = [g for g in split if g["params"]]
    if name == "adamw":
        return fused_optimizer(
            torch.optim.AdamW,
            split,
            trainer=getattr(module, "_trainer", None),
            lr=lr,
            betas=(momentum, 0.999),
            weight_decay=weight_decay,
        )
    return LARS(split, lr=lr, momentum=momentum, weight_decay=weight_decay)


def sgd_cosine(
    module: pl.LightningModule,
    parameters: Iterable[Any],
    lr: float,
    momentum: float,
    weight_decay: float,
    optimizer: str = "sgd",
) -> Any:
    """SGD, LARS or AdamW and a cosine decay to 0 over the run.

    ``optimizer``: see :func:`make_optimizer`.

    The schedule steps once per epoch over ``trainer.max_epochs``; when that is
    unbounded (``-1``, e.g. ``Trainer(max_epochs=None, max_steps=N)``) it steps per
    optimiser step over ``trainer.max_steps``; when both are unbounded the learning
    rate stays constant (with a warning).
    """
    built = make_optimizer(module, optimizer, parameters, lr, momentum, weight_decay)
    # module._trainer is None outside a Trainer: no schedule to size
    length = training_length(module._trainer, "auto")
    if length is None:
        rank_zero_warn(
            f"{type(module).__name__}: the run has no max_epochs or max_steps, so the "
            "learning rate stays constant (no cosine schedule)"
        )
    return cosine_annealing(built, length)


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
