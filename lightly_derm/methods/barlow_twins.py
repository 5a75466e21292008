"""Barlow Twins, the baseline that FG-SSL is compared against.

Builds on lightly's :class:`~lightly.models.modules.heads.BarlowTwinsProjectionHead`,
:class:`~lightly.loss.BarlowTwinsLoss` and :class:`~lightly.transforms.BYOLTransform`
(Barlow Twins uses BYOL's augmentations, as lightly's Barlow Twins example does), on
:class:`~lightly_derm.methods.SSLMethod`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightly.loss import BarlowTwinsLoss
from lightly.models.modules.heads import BarlowTwinsProjectionHead
from lightly.transforms.byol_transform import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
)
from torch import Tensor, nn

from lightly_derm.data.grouped_view_collate import to_grouped_batch
from lightly_derm.methods._optim import (
    OptimizerName,
    check_optimizer,
    hparams_ignore,
    lr_groups,
    make_optimizer,
)
from lightly_derm.methods.base import Augment, SSLMethod
from lightly_derm.transforms.rgb import RGBInput
from lightly_derm.utils.scheduler import cosine_annealing
from lightly_derm.utils.validation import check_positive

__all__ = ["BarlowTwins"]


class BarlowTwins(SSLMethod):
    """Barlow Twins: redundancy reduction between two views' projections.

    Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via
    Redundancy Reduction", ICML 2021, arXiv:2103.03230. Backbone → lightly's
    ``BarlowTwinsProjectionHead`` → lightly's ``BarlowTwinsLoss`` (computed in float32),
    with SGD and a per-epoch cosine schedule.

    Batches: two views per image, from :meth:`default_transform` (lightly's
    ``BYOLTransform``) and :meth:`default_collate`, or lightly's ``MultiViewCollate``.
    Logs ``train_loss``.

    Args:
        backbone: A torchvision ResNet name or a module mapping images to features.
        backbone_weights: Local weights for a named backbone (never downloaded).
        hidden_dim: Projection head hidden width (paper: 8192; 2048 here, for the small
            batches of dermatology data).
        output_dim: Projection width (paper: 8192).
        lambda_param: λ of the off-diagonal term (paper: 0.0051).
        lr, momentum, weight_decay: SGD (lr 0.06 as in lightly's Barlow Twins example).
        backbone_lr: Learning rate of the backbone (its own SGD group); ``None``:
            ``lr``. Smaller for continued pretraining from given weights.
        optimizer: ``"sgd"``, ``"lars"`` (lightly's LARS as in the Barlow Twins
            paper; needs ``weight_decay > 0``) or ``"adamw"`` (see
            :class:`~lightly_derm.methods.BYOL`).
        max_epochs: Length of the cosine schedule; default the trainer's.
        gather_distributed: Average the cross-correlation over processes (lightly's option).
        augment: Where the views are made, ``"cpu"`` (DataLoader workers) or ``"gpu"``
            (on the device, see :class:`~lightly_derm.methods.SSLMethod`).

    Example:
        >>> import torch
        >>> from lightly_derm.methods import BarlowTwins
        >>> model = BarlowTwins(backbone="resnet18", hidden_dim=256, output_dim=256)
        >>> model.project(torch.randn(4, 3, 64, 64)).shape
        torch.Size([4, 256])
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        backbone_weights: str | Path | Mapping[str, Tensor] | None = None,
        hidden_dim: int = 2048,
        output_dim: int = 2048,
        lambda_param: float = 0.0051,
        lr: float = 0.06,
        backbone_lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerName = "sgd",
        max_epochs: int | None = None,
        gather_distributed: bool = False,
        augment: Augment = "cpu",
    ) -> None:
        super().__init__(
            backbone=backbone, backbone_weights=backbone_weights, augment=augment
        )
        if backbone_lr is not None:
            check_positive("backbone_lr", backbone_lr)
        check_optimizer(optimizer, weight_decay)
        self.save_hyperparameters(ignore=hparams_ignore(backbone))
        self.projection_head = BarlowTwinsProjectionHead(
            self.feature_dim, hidden_dim, output_dim
        )
        self.criterion = BarlowTwinsLoss(
            lambda_param=lambda_param, gather_distributed=gather_distributed
        )

    def project(self, images: Tensor) -> Tensor:
        """Projections (B, output_dim) of images (B, C, H, W)."""
        projection: Tensor = self.projection_head(self(images))
        return projection

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Barlow Twins loss of the two views of every image."""
        grouped = to_grouped_batch(batch)
        if grouped.num_views != 2:
            raise ValueError(
                f"BarlowTwins expects 2 views per image, got {grouped.num_views}"
            )
        z_a, z_b = (self.project(v) for v in grouped.split_views())
        with torch.autocast(device_type=z_a.device.type, enabled=False):
            loss: Tensor = self.criterion(z_a.float(), z_b.float())
        self.log("train_loss", loss, prog_bar=True, batch_size=grouped.batch_size)
        return loss

    def configure_optimizers(self) -> Any:
        """SGD (or LARS) with a cosine schedule per epoch over ``max_epochs``."""
        hp = self.hparams
        optimizer = make_optimizer(
            self,
            hp["optimizer"],
            lr_groups(self, hp["lr"], hp.get("backbone_lr")),
            lr=hp["lr"],
            momentum=hp["momentum"],
            weight_decay=hp["weight_decay"],
        )
        epochs = hp["max_epochs"]
        if epochs is None and self._trainer is not None:
            epochs = self.trainer.max_epochs
        if epochs is None or epochs < 1:
            return optimizer
        return cosine_annealing(optimizer, (epochs, "epoch"))

    def cpu_view_transform(self, input_size: int = 224) -> RGBInput:
        """The two-view ``BYOLTransform`` of lightly at ``input_size``.

        Wrapped in :class:`~lightly_derm.transforms.RGBInput`, so that grayscale,
        16-bit, RGBA and CMYK images and tensors work as they do for the other methods.
        """
        return RGBInput(
            BYOLTransform(
                view_1_transform=BYOLView1Transform(input_size=input_size),
                view_2_transform=BYOLView2Transform(input_size=input_size),
            )
        )
