"""BYOL as a lightly-derm method: the baseline that AP-BYOL extends.

Builds on lightly's BYOL building blocks — :class:`~lightly.models.modules.BYOLProjectionHead`,
:class:`~lightly.models.modules.BYOLPredictionHead`,
:func:`~lightly.models.utils.update_momentum`,
:func:`~lightly.models.utils.deactivate_requires_grad`,
:func:`~lightly.utils.scheduler.cosine_schedule` and
:class:`~lightly.transforms.BYOLTransform` — assembled as in lightly's BYOL example,
on :class:`~lightly_derm.methods.SSLMethod`. The loss is lightly's
``NegativeCosineSimilarity`` form, computed per sample by
:class:`~lightly_derm.loss.AdditionalPositiveLoss` (same value).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn

from lightly_derm.data.grouped_view_collate import GroupedBatch, to_grouped_batch
from lightly_derm.loss.additional_positive_loss import AdditionalPositiveLoss
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


class BYOL(SSLMethod):
    """Bootstrap Your Own Latent on lightly's BYOL heads.

    Grill et al., "Bootstrap your own latent: A new approach to self-supervised
    learning", NeurIPS 2020, arXiv:2006.07733. Online network f → g → q (backbone,
    :class:`~lightly.models.modules.BYOLProjectionHead`,
    :class:`~lightly.models.modules.BYOLPredictionHead`), target network f' → g', an
    exponential moving average of f, g with momentum τ rising from ``ema_start`` to
    ``ema_end`` on lightly's ``cosine_schedule`` over the training steps.

    Loss (lightly's BYOL example): L = 0.5 · (ncs(p¹, z²) + ncs(p², z¹)) with ncs
    lightly's :class:`~lightly.loss.NegativeCosineSimilarity` and z the target
    projections; for K > 2 views, the mean over all ordered pairs of different views.
    It lies in [−1, 1]; the paper's ‖p̄ − z̄‖² form equals 4 L + 4 for two views. Each
    view is forwarded as its own batch (BatchNorm statistics per view), as in lightly's
    example and the paper.

    Logs ``train_loss`` and ``train_loss_byol`` (equal here) and ``train_ema_momentum``.

    Args:
        backbone: A torchvision ResNet name or a module mapping images to features.
        backbone_weights: Local weights for a named ResNet.
        projection_hidden_dim: Hidden width of the projector (paper: 4096).
        projection_dim: Output width of projector and predictor (paper: 256).
        prediction_hidden_dim: Hidden width of the predictor (paper: 4096).
        lr: SGD learning rate (lightly's example: 0.06), decayed with a cosine over
            the training steps.
        backbone_lr: Learning rate of the backbone (its own SGD group); ``None``:
            ``lr``. Smaller for continued pretraining from given weights, so that the
            backbone keeps more of them while the new heads learn at ``lr``.
        momentum: SGD momentum (AdamW's first beta).
        weight_decay: Weight decay.
        optimizer: ``"sgd"`` (lightly's example), ``"lars"`` (the paper's, lightly's
            :class:`~lightly.utils.lars.LARS`: every weight moves by the same fraction
            of its size per step; normalisation layers and biases plain SGD without
            weight decay; needs ``weight_decay > 0``) or ``"adamw"``
            (:class:`torch.optim.AdamW`, ``betas=(momentum, 0.999)``, weight decay on
            the weights only).
        ema_start: Target-network momentum at the first step (paper: 0.996).
        ema_end: Target-network momentum at the last step (paper: 1.0).
        augment: Where the views are made, ``"cpu"`` (DataLoader workers) or ``"gpu"``
            (on the device, see :class:`~lightly_derm.methods.SSLMethod`).

    Example:
        >>> import pytorch_lightning as pl
        >>> from lightly_derm.methods import BYOL
        >>> model = BYOL(backbone="resnet18", projection_hidden_dim=1024)
        >>> transform = model.default_transform(input_size=64)   # lightly's BYOLTransform
        >>> collate = model.default_collate()
        >>> # loader = DataLoader(LightlyDataset(folder, transform=transform),
        >>> #                     batch_size=64, collate_fn=collate, drop_last=True)
        >>> # pl.Trainer(max_epochs=100).fit(model, loader)
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        backbone_weights: str | Path | Mapping[str, Tensor] | None = None,
        projection_hidden_dim: int = 4096,
        projection_dim: int = 256,
        prediction_hidden_dim: int = 4096,
        lr: float = 0.06,
        backbone_lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerName = "sgd",
        ema_start: float = 0.996,
        ema_end: float = 1.0,
        augment: Augment = "cpu",
    ) -> None:
        super().__init__(
            backbone=backbone, backbone_weights=backbone_weights, augment=augment
        )
        if not 0.0 <= ema_start <= ema_end <= 1.0:
            raise ValueError(
                f"need 0 <= ema_start <= ema_end <= 1, got ema_start={ema_start}, "
                f"ema_end={ema_end}"
            )
        if backbone_lr is not None:
            check_positive("backbone_lr", backbone_lr)
        check_optimizer(optimizer, weight_decay)
        # backbone_weights is never a hyperparameter: a Path in it would make the
        # checkpoint unloadable with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=hparams_ignore(backbone))
        self.projection_head = BYOLProjectionHead(
            self.feature_dim, projection_hidden_dim, projection_dim
        )
        self.prediction_head = BYOLPredictionHead(
            projection_dim, prediction_hidden_dim, projection_dim
        )
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = AdditionalPositiveLoss()

    # ------------------------------------------------------------------ networks
    def forward_online(self, images: Tensor) -> Tensor:
        """Online predictions q(g(f(x))), (B, ``projection_dim``)."""
        return self.prediction_head(self.projection_head(self.forward(images)))

    @torch.no_grad()
    def forward_momentum(self, images: Tensor) -> Tensor:
        """Target projections g'(f'(x)) without gradient, (B, ``projection_dim``)."""
        features = self.backbone_momentum(images).flatten(1)
        return self.projection_head_momentum(features).detach()

    def total_steps(self) -> int | None:
        """The number of optimizer steps of the fit, or ``None`` without a finite one."""
        trainer = self._trainer
        if trainer is None:
            return None
        steps = trainer.estimated_stepping_batches
        return int(steps) if math.isfinite(steps) else None

    def ema_momentum(self) -> float:
        """The target-network momentum τ at the current step (cosine schedule)."""
        hp = self.hparams
        total = self.total_steps()
        if total is None or hp["ema_start"] == hp["ema_end"]:
            return float(hp["ema_start"])
        return float(
            cosine_schedule(
                min(self.global_step, total), total, hp["ema_start"], hp["ema_end"]
            )
        )

    @torch.no_grad()
    def update_target(self) -> float:
        """Moves the target network towards the online one; returns τ."""
        tau = self.ema_momentum()
        update_momentum(self.backbone, self.backbone_momentum, m=tau)
        update_momentum(self.projection_head, self.projection_head_momentum, m=tau)
        return tau

    # ------------------------------------------------------------------ training
    @staticmethod
    def batch_views(batch: GroupedBatch) -> list[Tensor]:
        """The K ≥ 2 views of a batch as (B, C, H, W) tensors."""
        if batch.num_views < 2:
            raise ValueError(
                f"BYOL needs at least 2 views per image, the batch has {batch.num_views}; "
                "use default_transform() (lightly's BYOLTransform)"
            )
        return batch.split_views()

    def forward_views(
        self, views: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Online predictions and target projections of every view (one batch per view)."""
        predictions = [self.forward_online(x) for x in views]
        targets = [self.forward_momentum(x) for x in views]
        return predictions, targets

    def training_loss(
        self,
        batch: GroupedBatch,
        predictions: list[Tensor],
        targets: list[Tensor],
        loss_per_sample: Tensor,
    ) -> Tensor:
        """The loss to optimise from BYOL's per-sample loss (subclasses add terms)."""
        return loss_per_sample.mean()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """One BYOL step: EMA update, forward of every view, loss."""
        batch = to_grouped_batch(batch)
        views = self.batch_views(batch)
        tau = self.update_target()
        predictions, targets = self.forward_views(views)
        loss_per_sample = self.criterion(predictions, targets, reduction="none")
        loss = self.training_loss(batch, predictions, targets, loss_per_sample)
        size = batch.batch_size
        self.log("train_loss", loss, prog_bar=True, batch_size=size)
        self.log("train_loss_byol", loss_per_sample.mean().detach(), batch_size=size)
        # A device tensor: self.log() of a Python float copies it to the device with a
        # host synchronisation every step.
        self.log(
            "train_ema_momentum",
            torch.full((), tau, device=loss.device),
            batch_size=size,
        )
        return loss

    def configure_optimizers(self) -> Any:
        """SGD (or LARS) with momentum and a per-step cosine learning-rate decay."""
        hp = self.hparams
        optimizer = make_optimizer(
            self,
            hp["optimizer"],
            lr_groups(self, hp["lr"], hp.get("backbone_lr")),
            lr=hp["lr"],
            momentum=hp["momentum"],
            weight_decay=hp["weight_decay"],
        )
        total = self.total_steps()
        return cosine_annealing(
            optimizer, None if total is None else (max(total, 1), "step")
        )

    # ------------------------------------------------------------------ data
    def cpu_view_transform(self, input_size: int = 224) -> Callable[[Any], Any]:
        """The view transform: lightly's :class:`~lightly.transforms.BYOLTransform`.

        Wrapped in :class:`~lightly_derm.transforms.RGBInput`, so that grayscale,
        16-bit, RGBA and CMYK images and tensors work as they do for the other methods.
        """
        return RGBInput(
            BYOLTransform(
                view_1_transform=BYOLView1Transform(input_size=input_size),
                view_2_transform=BYOLView2Transform(input_size=input_size),
            )
        )
