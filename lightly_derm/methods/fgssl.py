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
from lightly_derm.methods._optim import OptimizerName
from lightly_derm.methods.base import Augment
from lightly_derm.methods.pmg import PMGMethod
from lightly_derm.transforms.fgssl_transform import FGSSLTransform

__all__ = ["FGSSL", "LEARNING_RATES", "LOSSES"]

#: FG-SSL's pair losses: Barlow Twins (lightly) and the authors' λ²‖C − I‖² form.
LOSSES: tuple[str, ...] = ("barlow_twins", "authors")

#: The new layers' learning rate of each loss's preset (``FGSSL(lr=None)``). The two
#: losses' gradients differ by about 2·10⁴ (the authors' λ² = 2.5e-5 weights the
#: diagonal, λ = 5e-3 less than Barlow Twins' the off-diagonal), so each needs its own
#: rate: ``"authors"`` — the FG-SSL authors' 0.002, tuned for their loss;
#: ``"barlow_twins"`` — measured (``benchmarks/fgssl_learning_rates.py``, results in
#: ``benchmarks/results/fgssl_learning_rates_cpu.md``): half the largest rate at which
#: the first batches train stably on ISIC images.
LEARNING_RATES: dict[str, float] = {"authors": 0.002, "barlow_twins": 1e-4}

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

    **Loss and learning rates: two presets.** ``loss`` picks the loss and, unless
    ``lr`` is given, its learning rate (:data:`LEARNING_RATES`):

    - ``loss="authors"`` (default; the FG-SSL authors' preset):
      :class:`~lightly_derm.loss.BarlowTwinsFrobeniusLoss`, λ²‖C − I‖² with λ = 5e-3,
      at their ``lr`` 0.002.
    - ``loss="barlow_twins"`` (standard Barlow Twins): :class:`lightly.loss.BarlowTwinsLoss`
      with λ = 0.0051, at ``lr`` 1e-4, chosen by measurement. Its gradient is about
      2·10⁴ times the authors' loss's, so the authors' 0.002 moves the weights by
      several times their norm within a few batches.

    The backbone's rate is ``lr`` / 10 when ``backbone_weights`` are given (the
    authors start from ImageNet weights), and ``lr`` from scratch (see
    :class:`~lightly_derm.methods.pmg.PMGMethod`). The loss is always computed in
    float32, also under mixed precision.

    **Jigsaws.** By default the authors' permutations (``permutations="cycle"``, from
    PMG: one grid²-cycle per image, so no tile stays in place); ``"derangement"`` and
    ``"uniform"`` are the alternatives.

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
        backbone_weights: Local checkpoint or state dict of the backbone, e.g. the
            file of torchvision's ``ResNet50_Weights.IMAGENET1K_V1`` (nothing is
            downloaded).
        grids: Jigsaw grids of blocks 1, 2, 3, finest first (authors' ISIC: (16, 8, 4);
            APTOS (32, 16, 8)). Must divide the views' sides.
        embedding_dim: F, width of the embeddings (authors: 512).
        block_dim: D, channels of the blocks' 3×3 convolutions; default half of
            layer4's channels (the authors' 1024 for ResNet-50).
        schedule: ``"progressive"`` or ``"joint"``.
        loss: ``"authors"`` or ``"barlow_twins"`` (the presets above).
        lambda_param: λ of the loss; default 5e-3 or 0.0051 as above.
        concat_weight: Weight of step 4 (PMG: 2).
        lr: Learning rate of the new layers; default the loss's preset.
        backbone_lr: Learning rate of the backbone; default ``lr`` / 10 with
            ``backbone_weights``, ``lr`` from scratch.
        momentum: SGD momentum (0.9).
        weight_decay: SGD weight decay (5e-4).
        optimizer: ``"sgd"`` (the authors'), ``"lars"`` (lightly's LARS) or
            ``"adamw"`` (see :class:`~lightly_derm.methods.BYOL`).
        max_epochs: Length of the cosine schedule; default the trainer's.
        exclude_identity: Never feed an unshuffled jigsaw (only matters with
            ``permutations="uniform"``).
        gather_distributed: See above.
        augment: Where the views are made, ``"cpu"`` (DataLoader workers) or ``"gpu"``
            (on the device, see :class:`~lightly_derm.methods.SSLMethod`).
        permutations: The jigsaws' permutations (above).
        set_grads_to_none: ``False`` (PMG's loop): every parameter takes all 4 steps
            of a batch, momentum and weight decay included; see
            :class:`~lightly_derm.methods.pmg.PMGMethod`.

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
        loss: str = "authors",
        lambda_param: float | None = None,
        concat_weight: float = 2.0,
        lr: float | None = None,
        backbone_lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerName = "sgd",
        max_epochs: int | None = None,
        exclude_identity: bool = False,
        gather_distributed: bool = False,
        augment: Augment = "cpu",
        permutations: str = "cycle",
        set_grads_to_none: bool = False,
    ) -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        super().__init__(
            backbone=backbone,
            backbone_weights=backbone_weights,
            grids=grids,
            embedding_dim=embedding_dim,
            block_dim=block_dim,
            num_classes=None,
            schedule=schedule,
            concat_weight=concat_weight,
            lr=LEARNING_RATES[loss] if lr is None else lr,
            backbone_lr=backbone_lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer=optimizer,
            max_epochs=max_epochs,
            exclude_identity=exclude_identity,
            augment=augment,
            permutations=permutations,
            set_grads_to_none=set_grads_to_none,
        )
        self.save_hyperparameters(
            ignore=self._hparams_ignore(backbone, backbone_weights)
        )
        # the rates in use, so that a checkpoint reloads with them (the weights that
        # chose the backbone's rate are not saved)
        self.hparams.update(lr=self.lr, backbone_lr=self.backbone_lr)
        if loss == "barlow_twins":
            self.criterion: nn.Module = BarlowTwinsLoss(
                lambda_param=0.0051 if lambda_param is None else lambda_param,
                gather_distributed=gather_distributed,
            )
        else:
            self.criterion = BarlowTwinsFrobeniusLoss(
                lambda_param=5e-3 if lambda_param is None else lambda_param,
                gather_distributed=gather_distributed,
            )

    def pair_loss(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """The Barlow Twins loss of two embedding batches, in float32 (or float64) with autocast off."""
        with torch.autocast(device_type=z_a.device.type, enabled=False):
            loss: Tensor = self.criterion(
                _at_least_float32(z_a), _at_least_float32(z_b)
            )
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
        return FGSSLTransform(
            input_size=input_size, grids=self.grids, permutations=self.permutations
        )


def _at_least_float32(z: Tensor) -> Tensor:
    """Half-precision embeddings as float32; float32 and float64 as they are."""
    return z if z.dtype in (torch.float32, torch.float64) else z.float()
