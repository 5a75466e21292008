"""FG-SSL pretraining: Barlow Twins between hierarchical jigsaws of view a and view b.

Builds on :class:`~lightly_derm.methods.pmg.PMGMethod` (HierarchicalBlocks, progressive
schedule, optimiser), :class:`lightly.loss.BarlowTwinsLoss`,
:func:`~lightly_derm.transforms.jigsaw_shuffle` and
:class:`~lightly_derm.transforms.FGSSLTransform`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightly.loss import BarlowTwinsLoss
from torch import Tensor, nn

from lightly_derm.data.grouped_view_collate import to_grouped_batch
from lightly_derm.loss.barlow_twins_frobenius_loss import BarlowTwinsFrobeniusLoss
from lightly_derm.methods.base import Augment
from lightly_derm.methods.pmg import PMGMethod
from lightly_derm.transforms.fgssl_transform import FGSSLTransform, check_input_size
from lightly_derm.transforms.gpu import GPUMultiViewTransform, GPUViewTransform

__all__ = ["FGSSL", "LOSSES"]

#: FG-SSL's pair losses: Barlow Twins (lightly) and the authors' λ²‖C − I‖² form.
LOSSES: tuple[str, ...] = ("barlow_twins", "authors")

#: The step names, as in the logged ``train_loss_<part>``.
PARTS: tuple[str, ...] = ("block1", "block2", "block3", "concat")


class FGSSL(PMGMethod):
    """FG-SSL: fine-grained self-supervised learning with hierarchical jigsaw puzzles.

    Park and Ryu, "Fine-Grained Self-Supervised Learning with Jigsaw Puzzles for Medical
    Image Classification", Computers in Biology and Medicine 174, 2024,
    arXiv:2308.05770. With views a = T1(x) and b = T2(x), jigsaws J_n (tiles of an
    n × n grid shuffled per sample) and the embeddings e_k of
    :class:`~lightly_derm.models.HierarchicalBlocks`, each batch takes PMG's four steps::

        step k = 1, 2, 3:  L_k = L_BT(e_k(J_{n_k}(a)), e_k(b))
        step 4:            L_4 = concat_weight · L_BT(e_c(a), e_c(b))

    with one optimizer step after each (``schedule="progressive"``, the authors'), or
    one step on L_1 + L_2 + L_3 + L_4 (``schedule="joint"``, ours: cheaper, since b
    is embedded once and one backward pass is taken). Both branches get gradients. The blocks run the
    backbone only as deep as they need (layer2 for block 1), which changes nothing in
    the gradients but skips work the authors' code does.

    **Batches.** View a and b come from :class:`~lightly_derm.transforms.FGSSLTransform`
    through :class:`~lightly_derm.data.GroupedViewCollate` (K = 2, view order
    ``[a, b]``); the jigsaws of a are made on the batch's device with
    :func:`~lightly_derm.transforms.jigsaw_shuffle` (one pass per grid). When the
    transform made them on the CPU (``FGSSLTransform(cpu_jigsaw=True)``, K = 5, view
    order ``[a, b, J_{n_1}(a), J_{n_2}(a), J_{n_3}(a)]``) they are taken from the
    batch. lightly's ``MultiViewCollate`` output is accepted as well.

    **Loss.** ``loss="barlow_twins"``: :class:`lightly.loss.BarlowTwinsLoss` with
    λ = 0.0051 (Barlow Twins' value); ``loss="authors"``:
    :class:`~lightly_derm.loss.BarlowTwinsFrobeniusLoss`, λ²‖C − I‖² with λ = 5e-3 as in
    the authors' code. Always computed in float32, also under mixed precision.

    **Logging.** ``train_loss`` (the sum of the step losses, as weighted) and
    ``train_loss_block1``, ``train_loss_block2``, ``train_loss_block3``,
    ``train_loss_concat``.

    **Distributed.** ``gather_distributed=True`` averages the cross-correlation over
    processes (lightly's way). The progressive steps leave most parameters unused
    (step 1 touches layer1, layer2 and block 1 only), so under DDP use
    ``strategy="ddp_find_unused_parameters_true"``; the joint schedule works with
    ``"ddp"``.

    Args:
        backbone: A torchvision ResNet name or module (authors: ImageNet-pretrained
            ResNet-50, given here by ``backbone_weights``).
        backbone_weights: Local checkpoint or state dict of the backbone.
        grids: Jigsaw grids of blocks 1, 2, 3, finest first (authors' ISIC: (16, 8, 4);
            APTOS (32, 16, 8)). Must divide the views' sides.
        embedding_dim: F, width of the embeddings (authors: 512).
        block_dim: D, channels of the blocks' 3×3 convolutions; default half of
            layer4's channels (the authors' 1024 for ResNet-50).
        schedule: ``"progressive"`` or ``"joint"``.
        loss: ``"barlow_twins"`` or ``"authors"``.
        lambda_param: λ of the loss; default 0.0051 or 5e-3 as above.
        concat_weight: Weight of step 4 (PMG: 2).
        lr: Learning rate of the new layers (authors: 0.002).
        backbone_lr: Learning rate of the backbone (authors: 0.0002).
        momentum: SGD momentum (0.9).
        weight_decay: SGD weight decay (5e-4).
        max_epochs: Length of the cosine schedule; default the trainer's.
        exclude_identity: Never feed an unshuffled jigsaw.
        gather_distributed: See above.
        augment: Where the views are made, ``"cpu"`` (DataLoader workers) or ``"gpu"``
            (on the device, see :class:`~lightly_derm.methods.SSLMethod`).

    Example:
        >>> import pytorch_lightning as pl
        >>> from lightly_derm.methods import FGSSL
        >>> model = FGSSL(backbone="resnet18", grids=(16, 8, 4))
        >>> transform = model.default_transform(input_size=64)  # [a, b] per image
        >>> collate = model.default_collate()
        >>> # trainer = pl.Trainer(max_epochs=100, precision="bf16-mixed")
        >>> # trainer.fit(model, DataLoader(dataset, collate_fn=collate, ...))
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        backbone_weights: str | Path | Mapping[str, Tensor] | None = None,
        grids: Sequence[int] = (16, 8, 4),
        embedding_dim: int = 512,
        block_dim: int | None = None,
        schedule: str = "progressive",
        loss: str = "barlow_twins",
        lambda_param: float | None = None,
        concat_weight: float = 2.0,
        lr: float = 0.002,
        backbone_lr: float = 0.0002,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        max_epochs: int | None = None,
        exclude_identity: bool = False,
        gather_distributed: bool = False,
        augment: Augment = "cpu",
    ) -> None:
        super().__init__(
            backbone=backbone,
            backbone_weights=backbone_weights,
            grids=grids,
            embedding_dim=embedding_dim,
            block_dim=block_dim,
            num_classes=None,
            schedule=schedule,
            concat_weight=concat_weight,
            lr=lr,
            backbone_lr=backbone_lr,
            momentum=momentum,
            weight_decay=weight_decay,
            max_epochs=max_epochs,
            exclude_identity=exclude_identity,
            augment=augment,
        )
        self.save_hyperparameters(
            ignore=self._hparams_ignore(backbone, backbone_weights)
        )
        if loss == "barlow_twins":
            self.criterion: nn.Module = BarlowTwinsLoss(
                lambda_param=0.0051 if lambda_param is None else lambda_param,
                gather_distributed=gather_distributed,
            )
        elif loss == "authors":
            self.criterion = BarlowTwinsFrobeniusLoss(
                lambda_param=5e-3 if lambda_param is None else lambda_param,
                gather_distributed=gather_distributed,
            )
        else:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")

    def pair_loss(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """The Barlow Twins loss of two embedding batches, in float32 with autocast off."""
        with torch.autocast(device_type=z_a.device.type, enabled=False):
            loss: Tensor = self.criterion(z_a.float(), z_b.float())
        return loss

    def split_batch(self, batch: Any) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Returns ``(a, b, [J_{n_1}(a), J_{n_2}(a), J_{n_3}(a)])`` of a batch.

        Raises:
            ValueError: The batch has neither 2 nor 2 + len(grids) views per image, or a
                grid does not divide the views' sides.
        """
        grouped = to_grouped_batch(batch)
        num_views = grouped.num_views
        views = grouped.split_views()
        if num_views == 2:
            a, b = views
            self.check_input(a)
            return a, b, self.jigsaws(a)
        if num_views == 2 + len(self.grids):
            self.check_input(views[0])
            return views[0], views[1], views[2:]
        raise ValueError(
            f"FGSSL expects 2 views per image ([a, b]) or {2 + len(self.grids)} "
            f"([a, b] and the jigsaws of a for grids {self.grids}), got {num_views}"
        )

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Runs the four FG-SSL steps on a batch; returns the summed (detached) loss."""
        a, b, jigsaws = self.split_batch(batch)
        blocks = self.blocks

        def block_loss(k: int) -> Tensor:
            return self.pair_loss(
                blocks.forward_block(jigsaws[k], k)[0], blocks.forward_block(b, k)[0]
            )

        def concat_loss() -> Tensor:
            return self.concat_weight * self.pair_loss(
                blocks.forward_block(a, 3)[0], blocks.forward_block(b, 3)[0]
            )

        def joint() -> list[Tensor]:
            e_b = blocks(b).embeddings
            parts = [
                self.pair_loss(blocks.forward_block(jigsaws[k], k)[0], e_b[k])
                for k in range(3)
            ]
            parts.append(
                self.concat_weight
                * self.pair_loss(blocks.forward_block(a, 3)[0], e_b[3])
            )
            return parts

        losses = self.run_schedule(
            [
                lambda: block_loss(0),
                lambda: block_loss(1),
                lambda: block_loss(2),
                concat_loss,
            ],
            joint,
        )
        total = torch.stack(losses).sum()
        batch_size = a.shape[0]
        self.log("train_loss", total, prog_bar=True, batch_size=batch_size)
        for part, value in zip(PARTS, losses, strict=True):
            self.log(f"train_loss_{part}", value, batch_size=batch_size)
        return total

    def cpu_view_transform(self, input_size: int = 224) -> FGSSLTransform:
        """:class:`~lightly_derm.transforms.FGSSLTransform` with this method's grids."""
        return FGSSLTransform(input_size=input_size, grids=self.grids)

    def gpu_view_transform(self, input_size: int = 224) -> GPUMultiViewTransform:
        """FG-SSL's views a = T1(x), b = T2(x) on the device (the jigsaws follow in the step).

        As :class:`~lightly_derm.transforms.FGSSLView1Transform` /
        :class:`~lightly_derm.transforms.FGSSLView2Transform`: the whole image resized
        to a square; T1: flip 0.5, grayscale 0.2, blur always; T2: grayscale 0.2, blur
        0.1, solarisation 0.2 (σ 0.1–2, no colour jitter).
        """
        check_input_size(input_size, self.grids)
        common = {"input_size": input_size, "crop": "resize", "cj_prob": 0.0}
        return GPUMultiViewTransform(
            [
                GPUViewTransform(**common, hf_prob=0.5, gaussian_blur=1.0),
                GPUViewTransform(
                    **common, hf_prob=0.0, gaussian_blur=0.1, solarization_prob=0.2
                ),
            ]
        )
