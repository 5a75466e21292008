"""lightly's Lightning examples (BYOL, SimCLR, Barlow Twins) as plain modules: the
baselines the benchmarks compare with, in one place.

Written as in lightly's ``examples/pytorch_lightning/{byol,simclr,barlowtwins}.py``, with
the training step kept and the Trainer plumbing left out.
"""

from __future__ import annotations

import copy
from typing import Any

from lightly.loss import BarlowTwinsLoss, NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules import (
    BarlowTwinsProjectionHead,
    BYOLPredictionHead,
    BYOLProjectionHead,
    SimCLRProjectionHead,
)
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn

__all__ = ["LightlyBYOL", "LightlyBarlowTwins", "LightlySimCLR"]


class LightlyBYOL(nn.Module):
    """lightly's examples/pytorch_lightning/byol.py as a plain module (heads 4096/256)."""

    def __init__(
        self, backbone: nn.Module, feature_dim: int, hidden: int = 4096, out: int = 256
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(feature_dim, hidden, out)
        self.prediction_head = BYOLPredictionHead(out, hidden, out)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()
        self.current_epoch = 0

    def forward(self, x: Tensor) -> Tensor:
        y = self.backbone(x).flatten(start_dim=1)
        z = self.projection_head(y)
        return self.prediction_head(z)

    def forward_momentum(self, x: Tensor) -> Tensor:
        y = self.backbone_momentum(x).flatten(start_dim=1)
        return self.projection_head_momentum(y).detach()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        momentum = cosine_schedule(self.current_epoch, 10, 0.996, 1)
        update_momentum(self.backbone, self.backbone_momentum, m=momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, m=momentum)
        x0, x1 = batch[0]
        p0 = self.forward(x0)
        z0 = self.forward_momentum(x0)
        p1 = self.forward(x1)
        z1 = self.forward_momentum(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))


class LightlySimCLR(nn.Module):
    """lightly's examples/pytorch_lightning/simclr.py as a plain module."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(feature_dim, 2048, 2048)
        self.criterion = NTXentLoss()

    def forward(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x0, x1 = batch[0]
        return self.criterion(self.forward(x0), self.forward(x1))


class LightlyBarlowTwins(nn.Module):
    """lightly's examples/pytorch_lightning/barlowtwins.py as a plain module."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = BarlowTwinsProjectionHead(feature_dim, 2048, 2048)
        self.criterion = BarlowTwinsLoss()

    def forward(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x0, x1 = batch[0]
        return self.criterion(self.forward(x0), self.forward(x1))
