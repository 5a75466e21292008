"""An example pretraining method for the plugin template: GPU views without extra code."""

from __future__ import annotations

from typing import Any

import torch
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from torch import Tensor

from lightly_derm.data import to_grouped_batch
from lightly_derm.methods import SSLMethod
from lightly_derm_plugin_template.loss import GroupCenterLoss


class GroupCenterMethod(SSLMethod):
    """Two SimCLR views per image, pulled towards their mean by :class:`GroupCenterLoss`.

    The method only says which CPU views it wants (:meth:`cpu_view_transform`,
    lightly's ``SimCLRTransform``); ``augment="gpu"`` works without writing a GPU
    pipeline, because :class:`~lightly_derm.methods.SSLMethod` derives it from the
    CPU transform. (A real method would add a predictor or negatives: this loss
    alone can collapse.)

    Example:
        >>> method = GroupCenterMethod(backbone="resnet18", augment="gpu")
        >>> method.gpu_view_transform(64).num_views
        2
    """

    def __init__(
        self,
        backbone: Any = "resnet50",
        backbone_weights: Any = None,
        augment: str = "cpu",
        lr: float = 0.05,
    ) -> None:
        super().__init__(backbone, backbone_weights, augment)  # type: ignore[arg-type]
        self.save_hyperparameters(ignore=["backbone", "backbone_weights"])
        self.projection_head = SimCLRProjectionHead(self.feature_dim, 512, 128)
        self.criterion = GroupCenterLoss()

    def cpu_view_transform(self, input_size: int = 224) -> SimCLRTransform:
        """lightly's two-view ``SimCLRTransform``, with small rotations added."""
        return SimCLRTransform(input_size=input_size, rr_prob=0.5, rr_degrees=15.0)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Group-centre loss of the views; logs ``train_loss``."""
        batch = to_grouped_batch(batch)
        z = self.projection_head(self.forward(batch.views))
        loss = self.criterion(z, batch.group_ids)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch.batch_size)
        return loss

    def configure_optimizers(self) -> Any:
        """SGD at ``lr``."""
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=0.9)
