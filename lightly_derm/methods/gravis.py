"""GraVIS pretraining as a Lightning module.

Builds on :class:`~lightly_derm.methods.SSLMethod` (Lightning), lightly's
:class:`~lightly.models.modules.heads.ProjectionHead`, and lightly-derm's
:class:`~lightly_derm.loss.GraVISLoss`, :class:`~lightly_derm.transforms.GraVISTransform`
and :class:`~lightly_derm.data.GroupedViewCollate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from lightly.models.modules.heads import ProjectionHead
from torch import Tensor, nn

from lightly_derm.data.grouped_view_collate import to_grouped_batch
from lightly_derm.loss.gravis_loss import GraVISLoss, Variant
from lightly_derm.methods._optim import (
    OptimizerName,
    check_optimizer,
    hparams_ignore,
    lr_groups,
    sgd_cosine,
)
from lightly_derm.methods.base import Augment, SSLMethod
from lightly_derm.methods.cross_rank_shuffle import cross_rank_shuffled
from lightly_derm.transforms.gravis_transform import GraVISTransform
from lightly_derm.utils.validation import check_positive

#: How BatchNorm sees the views under DDP: shuffled across ranks, synchronised, or per rank.
DDPBatchNorm = Literal["shuffle", "sync", "local"]
DDP_BATCHNORM: tuple[str, ...] = ("shuffle", "sync", "local")


class GraVISProjectionHead(ProjectionHead):
    """The GraVIS authors' head: Linear → ReLU → Linear, no batch norm.

    ``input_dim → hidden_dim → ReLU → output_dim`` (2048 → 2048 → 128 on ResNet-50),
    on lightly's :class:`~lightly.models.modules.heads.ProjectionHead`.

    Example:
        >>> import torch
        >>> from lightly_derm.methods.gravis import GraVISProjectionHead
        >>> GraVISProjectionHead(512)(torch.randn(4, 512)).shape
        torch.Size([4, 128])
    """

    def __init__(
        self, input_dim: int = 2048, hidden_dim: int = 2048, output_dim: int = 128
    ) -> None:
        super().__init__(
            [
                (input_dim, hidden_dim, None, nn.ReLU()),
                (hidden_dim, output_dim, None, None),
            ]
        )


class GraVIS(SSLMethod):
    """GraVIS: K views per image, all ranked above the views of other images.

    Zhou, Lu, Wang, Yu, "GraVIS: Grouping Augmented Views from Independent Sources for
    Dermatology Analysis", IEEE TMI 2023, arXiv:2301.04410. Every training step embeds
    the B·K views of a :class:`~lightly_derm.data.GroupedViewCollate` batch (or a lightly
    ``MultiViewCollate`` batch) with backbone and head and applies
    :class:`~lightly_derm.loss.GraVISLoss` with the views' group ids. Logs
    ``train_loss``.

    The defaults are the authors' recipe (ResNet-50 from scratch, head
    2048→2048→ReLU→128, SGD, momentum 0.9, no weight decay, cosine decay per epoch over
    ``trainer.max_epochs``), except cosine similarities at τ = 0.01 (``normalize=True``;
    the authors' raw dot products at 0.2 saturate as the embedding norms grow), K = 4
    views (see
    :class:`~lightly_derm.loss.GraVISLoss` and :class:`~lightly_derm.transforms.GraVISTransform`) and **lr 0.02 instead of the
    authors' 1e-3**. The Smooth-AP gradient is small: measured with
    ``benchmarks/backbone_movement.py`` (ISIC 2017 images, ResNet-18, 64 px, batch 32,
    20 steps), the authors' 1e-3 moved the backbone's convolutions by 0.1 % of their
    norm where lightly's BYOL at its default moved them by 2.1 % — over a run shorter
    than the authors' ~30,000 steps the encoder stays at its random initialisation,
    and "pretrained" weights are random weights. At 0.02 GraVIS moves the backbone as
    much as BYOL does. Pass ``lr=1e-3`` for the authors' value.
    Runs on CPU and under ``Trainer(accelerator="gpu", devices=N, strategy="ddp",
    precision="bf16-mixed")``; the loss computes its similarities in float32.

    **BatchNorm under DDP** (``ddp_batchnorm``). Each rank forwards its own B·K views
    and the loss gathers the other ranks' views as negatives, so without a remedy an
    image's positives always share a BatchNorm batch and the gathered negatives never
    do — a shortcut contrastive methods can learn (MoCo's shuffle-BN exists for it; the
    GraVIS authors shuffle views across DataParallel replicas). ``"shuffle"``
    (default): the views of all ranks are shuffled across ranks before the forward and
    the embeddings returned to their rank
    (:func:`~lightly_derm.methods.cross_rank_shuffle.cross_rank_shuffled`; one
    all-gather of the views per step). ``"sync"``: BatchNorm layers become
    :class:`torch.nn.SyncBatchNorm` when the run has more than one process (CUDA only,
    as SyncBatchNorm). ``"local"``: neither (per-rank statistics). No effect on one
    process.

    Args:
        backbone: A torchvision ResNet name or any module mapping images to features
            (see :class:`~lightly_derm.methods.SSLMethod`).
        backbone_weights: Local weights for a named ResNet (never downloaded).
        num_views: K, the views per image of :meth:`default_transform`.
        hidden_dim: Hidden width of the projection head.
        output_dim: Embedding width of the projection head.
        variant: Loss variant, ``"smooth_ap"`` (the authors') or ``"attention"``.
        temperature: Loss temperature; ``None`` takes the variant's default.
        attention_temperature: τ_w of the ``attention`` variant.
        normalize: L2-normalise the embeddings in the loss (``False``: the authors'
            raw dot products).
        exclude_self: Leave the anchor out of its own group in ``smooth_ap``
            (``False``: the authors').
        gather_distributed: Use the views of all processes as negatives under DDP
            (see :class:`~lightly_derm.loss.GraVISLoss`); no effect on one process.
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
        ddp_batchnorm: ``"shuffle"``, ``"sync"`` or ``"local"`` (see above).

    Example:
        >>> import pytorch_lightning as pl
        >>> from lightly_derm.methods import GraVIS
        >>> model = GraVIS(backbone="resnet18")
        >>> transform = model.default_transform(input_size=64)  # 4 views per image
        >>> collate_fn = model.default_collate()
        >>> # loader = DataLoader(LightlyDataset("images/", transform), batch_size=16,
        >>> #                     collate_fn=collate_fn, drop_last=True)
        >>> # pl.Trainer(max_epochs=240).fit(model, loader)
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        backbone_weights: str | Path | Mapping[str, Tensor] | None = None,
        num_views: int = 4,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        variant: Variant = "smooth_ap",
        temperature: float | None = None,
        attention_temperature: float = 0.1,
        normalize: bool = True,
        exclude_self: bool = False,
        gather_distributed: bool = True,
        lr: float = 0.02,
        backbone_lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        optimizer: OptimizerName = "sgd",
        augment: Augment = "cpu",
        ddp_batchnorm: DDPBatchNorm = "shuffle",
    ) -> None:
        if ddp_batchnorm not in DDP_BATCHNORM:
            raise ValueError(
                f"ddp_batchnorm must be one of {', '.join(DDP_BATCHNORM)}, got "
                f"{ddp_batchnorm!r}"
            )
        super().__init__(
            backbone=backbone, backbone_weights=backbone_weights, augment=augment
        )
        self.ddp_batchnorm = ddp_batchnorm
        self._shuffle_generator: torch.Generator | None = None
        if backbone_lr is not None:
            check_positive("backbone_lr", backbone_lr)
        check_optimizer(optimizer, weight_decay)
        self.save_hyperparameters(ignore=hparams_ignore(backbone))
        self.num_views = num_views
        self.projection_head = GraVISProjectionHead(
            self.feature_dim, hidden_dim, output_dim
        )
        self.criterion = GraVISLoss(
            variant=variant,
            temperature=temperature,
            attention_temperature=attention_temperature,
            normalize=normalize,
            exclude_self=exclude_self,
            gather_distributed=gather_distributed,
        )

    def forward_projection(self, images: Tensor) -> Tensor:
        """Head embeddings (B, ``output_dim``) of images (B, C, H, W)."""
        return self.projection_head(self.forward(images))

    def embed_views(
        self, views: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Head embeddings of a batch of views, shuffled across ranks with ``"shuffle"``.

        Args:
            views: (N, C, H, W), the same N on every process.
            generator: Generator of the cross-rank permutation (rank 0's is used);
                default one of the method, seeded from ``torch.initial_seed()``.
        """
        if self.ddp_batchnorm != "shuffle":
            return self.forward_projection(views)
        if generator is None and dist.is_available() and dist.is_initialized():
            generator = self._shuffle_generator
            if generator is None or generator.device != views.device:
                generator = torch.Generator(device=views.device)
                generator.manual_seed(torch.initial_seed() % 2**63)
                self._shuffle_generator = generator
        return cross_rank_shuffled(self.forward_projection, views, generator)

    def setup(self, stage: str) -> None:
        """With ``ddp_batchnorm="sync"`` and several processes: SyncBatchNorm layers."""
        trainer = self._trainer
        if (
            self.ddp_batchnorm == "sync"
            and trainer is not None
            and trainer.world_size > 1
        ):
            self.backbone = nn.SyncBatchNorm.convert_sync_batchnorm(self.backbone)
            self.projection_head = nn.SyncBatchNorm.convert_sync_batchnorm(
                self.projection_head
            )

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Loss of one batch of K-view samples; logs ``train_loss``."""
        batch = to_grouped_batch(batch)
        embeddings = self.embed_views(batch.views)
        # K views per image: the loss needs no host sync for the group sizes
        loss = self.criterion(embeddings, batch.group_ids, group_size=batch.num_views)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch.batch_size)
        return loss

    def configure_optimizers(self) -> Any:
        """SGD with cosine decay over the run (see the class arguments)."""
        return sgd_cosine(
            self,
            lr_groups(self, self.hparams["lr"], self.hparams.get("backbone_lr")),
            lr=self.hparams["lr"],
            momentum=self.hparams["momentum"],
            weight_decay=self.hparams["weight_decay"],
            optimizer=self.hparams["optimizer"],
        )

    def cpu_view_transform(self, input_size: int = 224) -> GraVISTransform:
        """:class:`~lightly_derm.transforms.GraVISTransform` with ``num_views`` views."""
        return GraVISTransform(num_views=self.num_views, input_size=input_size)
