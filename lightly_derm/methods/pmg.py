"""The base of methods that train :class:`~lightly_derm.models.HierarchicalBlocks` block by block.

Builds on Lightning's manual optimisation (``self.automatic_optimization = False``,
:meth:`~pytorch_lightning.core.LightningModule.manual_backward` and the wrapped
optimizer's ``step``, which handle gradient scaling under ``"16-mixed"``, autocast under
``"bf16-mixed"`` and DDP), :class:`torch.optim.SGD` and
:class:`torch.optim.lr_scheduler.CosineAnnealingLR`. What it adds: PMG's progressive
schedule (Du et al., ECCV 2020, arXiv:2003.03836) — several optimizer steps per batch,
one per granularity and one for the concatenation block — as FG-SSL (Park and Ryu,
arXiv:2308.05770) uses it, with the authors' parameter groups and cosine schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from lightly_derm.methods._optim import OptimizerName, check_optimizer, make_optimizer
from lightly_derm.methods.base import Augment, SSLMethod
from lightly_derm.models.backbones import feature_dim
from lightly_derm.models.hierarchical_blocks import HierarchicalBlocks
from lightly_derm.transforms.fgssl_transform import check_input_size
from lightly_derm.transforms.jigsaw import (
    _check_grids,
    check_grid,
    check_permutations,
    jigsaw_shuffle,
)
from lightly_derm.utils.scheduler import cosine_annealing

__all__ = ["PMGMethod", "SCHEDULES", "backbone_learning_rate"]

#: The training schedules: PMG's progressive one and the cheaper joint one.
SCHEDULES: tuple[str, ...] = ("progressive", "joint")

#: backbone_lr / lr when the backbone starts from given weights (the FG-SSL authors'
#: 0.0002 / 0.002 on ImageNet weights).
PRETRAINED_BACKBONE_LR_RATIO = 0.1


def backbone_learning_rate(
    lr: float, backbone_lr: float | None, pretrained: bool | None, owner: str
) -> float:
    """The backbone's learning rate: ``backbone_lr``, or chosen by where the backbone starts.

    Given weights (``pretrained``): ``lr`` × 0.1, the FG-SSL authors' split (their
    ImageNet-initialised backbone learns 10× slower than the new layers). From scratch
    (``pretrained=False``): ``lr`` — a randomly initialised backbone is as new as the
    blocks, and slowing it down is not the authors' method. Unknown (a module was
    passed, ``pretrained=None``): ``lr``, with a warning that says how to get the split.
    """
    if backbone_lr is not None:
        return backbone_lr
    if pretrained is None:
        rank_zero_warn(
            f"{owner}: the backbone is a module, so whether it is pretrained is unknown; "
            f"backbone_lr defaults to lr = {lr:g} (from-scratch training). For a "
            f"pretrained module pass backbone_lr={lr * PRETRAINED_BACKBONE_LR_RATIO:g} "
            "(the authors' 10x smaller backbone rate)."
        )
    if pretrained:
        return lr * PRETRAINED_BACKBONE_LR_RATIO
    return lr


class PMGMethod(SSLMethod):
    """Base class: HierarchicalBlocks, jigsaws of the batch, progressive or joint steps.

    Subclasses (:class:`~lightly_derm.methods.FGSSL`,
    :class:`~lightly_derm.methods.FGSSLClassifier`) compute the losses of the four
    steps. ``schedule="progressive"`` takes one optimizer step per loss (4 per batch,
    so ``trainer.global_step`` — which counts optimizer steps — grows by 4 per batch,
    and ``max_steps`` counts those); ``schedule="joint"`` takes one step on the sum.

    Optimiser (the FG-SSL authors' defaults): SGD with momentum 0.9 and weight decay
    5e-4 on two parameter groups, the new layers at ``lr`` and the backbone at
    ``backbone_lr``, each annealed per epoch by a cosine over ``max_epochs`` (by
    default the trainer's ``max_epochs``; constant when that is unbounded). The
    authors start from ImageNet weights with ``backbone_lr`` = ``lr`` / 10; by
    default (``backbone_lr=None``) that split is taken only when the backbone starts
    from given weights, and from scratch the backbone learns at ``lr`` (see
    :func:`backbone_learning_rate`). The rates in use are ``self.lr`` and
    ``self.backbone_lr``.

    Args:
        backbone: A torchvision ResNet name or module.
        backbone_weights: Local weights for a named backbone (never downloaded).
        grids: Jigsaw grids of blocks 1, 2, 3 (layer2, layer3, layer4), finest first.
        embedding_dim: Width F of the blocks' embeddings.
        block_dim: Channels D of the blocks' 3×3 convolutions (default: half of
            layer4's channels, the authors' 1024 for ResNet-50).
        num_classes: Classifiers of the blocks (``None``: none).
        schedule: ``"progressive"`` or ``"joint"``.
        concat_weight: Weight of the concatenation block's loss (PMG: 2).
        lr, backbone_lr, momentum, weight_decay, max_epochs: The optimiser (above);
            ``backbone_lr=None`` chooses it by ``pretrained``.
        optimizer: ``"sgd"`` (the authors'), ``"lars"`` (lightly's LARS; needs
            ``weight_decay > 0``) or ``"adamw"`` (see :class:`~lightly_derm.methods.BYOL`).
        exclude_identity: Never feed an unshuffled jigsaw (only matters with
            ``permutations="uniform"``).
        augment: Where the views are made, ``"cpu"`` (DataLoader workers) or ``"gpu"``
            (on the device, see :class:`~lightly_derm.methods.SSLMethod`).
        permutations: How the jigsaws' tile permutations are drawn: ``"cycle"`` (PMG's
            and the FG-SSL authors': one grid²-cycle per image, no tile in place),
            ``"derangement"`` or ``"uniform"``; see
            :func:`~lightly_derm.transforms.random_tile_permutations`.
        set_grads_to_none: How the progressive schedule clears gradients between its
            steps. ``False`` (PMG's loop: ``zero_grad()`` with zeros): every parameter
            takes all 4 optimizer steps of a batch — a parameter the step's loss does
            not reach still gets its momentum and weight-decay update, as in PMG (whose
            loop does so from its second batch on; here from the first, which also
            keeps a resumed run exact).
            ``True``: such parameters are skipped by SGD in that step (cheaper, not
            PMG's dynamics).
        pretrained: Whether the backbone starts from trained weights, for
            ``backbone_lr=None``; default: whether ``backbone_weights`` was given
            (unknown for a module backbone).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        backbone_weights: str | Path | Mapping[str, Tensor] | None = None,
        grids: Sequence[int] = (16, 8, 4),
        embedding_dim: int = 512,
        block_dim: int | None = None,
        num_classes: int | None = None,
        schedule: str = "progressive",
        concat_weight: float = 2.0,
        lr: float = 0.002,
        backbone_lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerName = "sgd",
        max_epochs: int | None = None,
        exclude_identity: bool = False,
        augment: Augment = "cpu",
        permutations: str = "cycle",
        set_grads_to_none: bool = False,
        pretrained: bool | None = None,
    ) -> None:
        super().__init__(
            backbone=backbone, backbone_weights=backbone_weights, augment=augment
        )
        grids = _check_grids(grids)
        if len(grids) != 3:
            raise ValueError(
                f"grids must hold 3 grids, one per block (layer2, layer3, layer4), got {grids}"
            )
        if exclude_identity and 1 in grids:
            raise ValueError(
                f"exclude_identity needs every grid >= 2, got grids {grids}"
            )
        if schedule not in SCHEDULES:
            raise ValueError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}"
            )
        if max_epochs is not None and max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1 or None, got {max_epochs}")
        self.grids = grids
        self.schedule = schedule
        self.concat_weight = concat_weight
        if pretrained is None and isinstance(backbone, str):
            pretrained = backbone_weights is not None
        self.lr = lr
        self.backbone_lr = backbone_learning_rate(
            lr, backbone_lr, pretrained, type(self).__name__
        )
        self.momentum = momentum
        self.weight_decay = weight_decay
        check_optimizer(optimizer, weight_decay)
        self.optimizer_name = optimizer
        self.max_epochs = max_epochs
        self.exclude_identity = exclude_identity
        self.permutations = check_permutations(permutations, grids)
        self.set_grads_to_none = set_grads_to_none
        self.blocks = HierarchicalBlocks(
            self.backbone,
            feature_dim=embedding_dim,
            num_classes=num_classes,
            block_dim=block_dim,
        )
        # HierarchicalBlocks drops the classifier of a torchvision ResNet module
        self.feature_dim = feature_dim(self.backbone)
        self.automatic_optimization = False
        # Each progressive step trains a part of the blocks: DDP must expect parameters
        # without gradient (tested in tests/reliability/test_distributed.py).
        self.ddp_find_unused_parameters = schedule == "progressive"

    def _hparams_ignore(self, backbone: Any, backbone_weights: Any) -> list[str]:
        """Arguments to leave out of ``save_hyperparameters``: modules and weights."""
        return ["backbone_weights"] + (
            [] if isinstance(backbone, str) else ["backbone"]
        )

    def default_transform(self, input_size: int = 224) -> Callable[[Any], Any]:
        """As :meth:`SSLMethod.default_transform`; ``input_size`` must fit every grid.

        Raises:
            ValueError: A grid does not divide ``input_size``.
        """
        check_input_size(input_size, self.grids)
        return super().default_transform(input_size)

    def jigsaws(self, images: Tensor) -> list[Tensor]:
        """J_n(images) for every grid n, each shuffled in one pass on the batch's device."""
        return [
            jigsaw_shuffle(
                images,
                grid,
                exclude_identity=self.exclude_identity,
                permutations=self.permutations,
            )[0]
            for grid in self.grids
        ]

    def check_input(self, images: Tensor) -> None:
        """Raises ValueError when a grid does not divide the images' sides."""
        if images.ndim != 4:
            raise ValueError(
                f"{type(self).__name__} expects image batches (B, C, H, W), got shape "
                f"{tuple(images.shape)}"
            )
        for grid in self.grids:
            check_grid(grid, images.shape[-2], images.shape[-1])

    def run_schedule(
        self,
        step_losses: Sequence[Callable[[], Tensor]],
        joint_loss: Callable[[], list[Tensor]],
    ) -> list[Tensor]:
        """Runs the schedule and returns the (detached) loss of every step.

        Args:
            step_losses: One function per progressive step, each computing its loss
                (already weighted) with the current weights.
            joint_loss: For the joint schedule: computes all step losses at once (so
                that shared forward passes run once).
        """
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)
        losses: list[Tensor] = []
        to_none = self.set_grads_to_none
        if not to_none:
            # Every parameter holds a gradient from the first step on (PMG's loop gets
            # there after its first batch), so each takes all steps of every batch, and a
            # resumed run (gradients are not checkpointed) continues exactly.
            for group in optimizer.param_groups:
                for parameter in group["params"]:
                    if parameter.grad is None and parameter.requires_grad:
                        parameter.grad = torch.zeros_like(parameter)
        if self.schedule == "progressive":
            for step_loss in step_losses:
                optimizer.zero_grad(set_to_none=to_none)
                loss = step_loss()
                self.manual_backward(loss)
                optimizer.step()
                losses.append(loss.detach())
        else:
            optimizer.zero_grad(set_to_none=to_none)
            parts = joint_loss()
            self.manual_backward(torch.stack(parts).sum())
            optimizer.step()
            losses = [p.detach() for p in parts]
        return losses

    def configure_optimizers(self) -> Any:
        """SGD or LARS: new layers at ``lr``, backbone at ``backbone_lr``; cosine per epoch."""
        backbone_params = list(self.backbone.parameters())
        backbone_ids = {id(p) for p in backbone_params}
        head_params = [p for p in self.parameters() if id(p) not in backbone_ids]
        optimizer = make_optimizer(
            self,
            self.optimizer_name,
            [
                {"params": head_params, "lr": self.lr, "name": "head"},
                {"params": backbone_params, "lr": self.backbone_lr, "name": "backbone"},
            ],
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )
        epochs = self.max_epochs
        if epochs is None and self._trainer is not None:
            epochs = self.trainer.max_epochs
        if epochs is None or epochs < 1:
            return optimizer
        return cosine_annealing(optimizer, (epochs, "epoch"))

    def on_train_epoch_end(self) -> None:
        """Steps the cosine schedule (manual optimisation steps no scheduler itself)."""
        scheduler = self.lr_schedulers()
        if scheduler is not None and not isinstance(scheduler, list):
            scheduler.step()  # type: ignore[call-arg]
