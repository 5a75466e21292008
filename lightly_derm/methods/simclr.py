"""A plain SimCLR baseline, built from lightly's parts.

Builds on :class:`~lightly_derm.methods.SSLMethod` and lightly's
:class:`~lightly.models.modules.heads.SimCLRProjectionHead`,
:class:`~lightly.loss.NTXentLoss` and :class:`~lightly.transforms.SimCLRTransform`;
nothing SimCLR-specific is written here. It exists so that lightly-derm's command line
and benchmarks compare the dermatology methods with SimCLR under the same conventions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from torch import Tensor, nn

from lightly_derm.data.grouped_view_collate import to_grouped_batch
from lightly_derm.methods._optim import (
    OptimizerName,
    check_optimizer,
    hparams_ignore,
    lr_groups,
    sgd_cosine,
)
from lightly_derm.methods.base import Augment, SSLMethod
from lightly_derm.transforms.rgb import RGBInput
from lightly_derm.utils.validation import check_positive


class SimCLR(SSLMethod):
    """SimCLR (Chen et al., ICML 2020, arXiv:2002.05709) with lightly's head and loss.

    Two views per image (lightly's ``SimCLRTransform``), ``SimCLRProjectionHead`` and
    ``NTXentLoss``. Both views go through the backbone in one batch. The optimiser
    defaults equal :class:`~lightly_derm.methods.GraVIS`'s (SGD, cosine decay over the
    run), so that a comparison changes only the views and the loss. Logs ``train_loss``.

    Args:
        backbone: A torchvision ResNet name or any module mapping images to features.
        backbone_weights: Local weights for a named ResNet (never downloaded).
        hidden_dim: Hidden width of the projection head.
        output_dim: Embedding width of the projection head.
        temperature: NT-Xent temperature.
        gather_distributed: Use the views of all processes as negatives under DDP.
        lr: SGD learning rate.
        backbone_lr: Learning rate of the backbone (its own SGD group); ``None``:
            ``lr``. Smaller for continued pretraining from given weights, so that the
            backbone keeps more of them while the new heads learn at ``lr``.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        optimizer: ``"sgd"``, ``"lars"`` (lightly's LARS as in the SimCLR paper;
            needs ``weight_decay > 0``) or ``"adamw"`` (see
            :class:`~lightly_derm.methods.BYOL`).
        augment: Where the views are made, ``"cpu"`` (DataLoader workers) or ``"gpu"``
            (on the device, see :class:`~lightly_derm.methods.SSLMethod`).

    Example:
        >>> from lightly_derm.methods import SimCLR
        >>> model = SimCLR(backbone="resnet18")
        >>> transform = model.default_transform(input_size=64)  # 2 views per image
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        backbone_weights: str | Path | Mapping[str, Tensor] | None = None,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        temperature: float = 0.5,
        gather_distributed: bool = True,
        lr: float = 1e-3,
        backbone_lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        optimizer: OptimizerName = "sgd",
        augment: Augment = "cpu",
    ) -> None:
        super().__init__(
            backbone=backbone, backbone_weights=backbone_weights, augment=augment
        )
        if backbone_lr is not None:
            check_positive("backbone_lr", backbone_lr)
        check_optimizer(optimizer, weight_decay)
        self.save_hyperparameters(ignore=hparams_ignore(backbone))
        self.projection_head = SimCLRProjectionHead(
            self.feature_dim, hidden_dim, output_dim
        )
        self.criterion = NTXentLoss(
            temperature=temperature, gather_distributed=gather_distributed
        )

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """NT-Xent loss of a batch of 2-view samples; logs ``train_loss``."""
        batch = to_grouped_batch(batch)
        if batch.num_views != 2:
            raise ValueError(
                f"SimCLR needs 2 views per image, got {batch.num_views} "
                f"(views {tuple(batch.views.shape)} for {batch.batch_size} images)"
            )
        z = self.projection_head(self.forward(batch.views))
        z = z.unflatten(0, (batch.batch_size, 2))
        loss = self.criterion(z[:, 0], z[:, 1])
        self.log("train_loss", loss, prog_bar=True, batch_size=batch.batch_size)
        return loss

    def configure_optimizers(self) -> Any:
        """SGD with cosine decay over the run."""
        return sgd_cosine(
            self,
            lr_groups(self, self.hparams["lr"], self.hparams.get("backbone_lr")),
            lr=self.hparams["lr"],
            momentum=self.hparams["momentum"],
            weight_decay=self.hparams["weight_decay"],
            optimizer=self.hparams["optimizer"],
        )

    def cpu_view_transform(self, input_size: int = 224) -> RGBInput:
        """The two-view ``SimCLRTransform`` of lightly, accepting any image mode."""
        return RGBInput(SimCLRTransform(input_size=input_size))
