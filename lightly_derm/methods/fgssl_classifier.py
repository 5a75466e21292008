"""FG-SSL / PMG supervised fine-tuning: progressive cross-entropy on jigsaws, summed heads.

Builds on :class:`~lightly_derm.methods.pmg.PMGMethod` (HierarchicalBlocks, progressive
schedule, optimiser), :func:`torch.nn.functional.cross_entropy`, lightly's
``MultiViewTransform`` and ``IMAGENET_NORMALIZE``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightly.transforms.multi_view_transform import MultiViewTransform
from lightly.transforms.torchvision_v2_compatibility import torchvision_transforms as T
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torch import Tensor, nn

from lightly_derm.data.grouped_view_collate import GroupedBatch, to_grouped_batch
from lightly_derm.methods.base import Augment
from lightly_derm.methods.fgssl import PARTS
from lightly_derm.methods.pmg import PMGMethod
from lightly_derm.models.checkpoints import load_checkpoint_file
from lightly_derm.transforms.fgssl_transform import _ToRGB, check_input_size
from lightly_derm.transforms.gpu import GPUMultiViewTransform, GPUViewTransform

__all__ = ["EVAL_RESIZE_RATIO", "FGSSLClassifier"]

#: Resize side / crop side of the evaluation views: the authors' Resize(256) +
#: CenterCrop(224), kept in proportion at other input sizes.
EVAL_RESIZE_RATIO = 256 / 224


class FGSSLClassifier(PMGMethod):
    """Fine-tunes HierarchicalBlocks for classification with PMG's progressive steps.

    The supervised stage of FG-SSL (Park and Ryu, arXiv:2308.05770), which is PMG's
    training (Du et al., ECCV 2020, arXiv:2003.03836): with classifiers y_k of
    :class:`~lightly_derm.models.HierarchicalBlocks` and jigsaws J_n, each batch takes::

        step k = 1, 2, 3:  L_k = CE(y_k(J_{n_k}(x)), t)
        step 4:            L_4 = concat_weight · CE(y_c(x), t)

    one optimizer step after each (``schedule="progressive"``) or one on their sum
    (``schedule="joint"``). The prediction is argmax(y_1 + y_2 + y_3 + y_c) of the
    unshuffled image (:meth:`predict_logits`; ``validation_step`` and ``test_step`` log
    ``val_loss``/``val_acc``/``val_acc_concat`` and the ``test_`` equivalents).
    Targets of -1 (unlabelled, as :class:`~lightly_derm.data.GroupedViewCollate` marks
    them) are ignored by the loss.

    **Views (the authors' ISIC recipe).** Training (:meth:`cpu_view_transform`):
    ``RandomResizedCrop(input_size)``, horizontal and vertical flips, torchvision's
    ``AugMix``, ImageNet normalisation. Evaluation (:meth:`eval_transform`):
    ``Resize(round(input_size · 256/224))`` of the shorter side, then
    ``CenterCrop(input_size)`` — Resize(256) + CenterCrop(224) at 224 px. The GPU path
    (``augment="gpu"``) is derived from :meth:`cpu_view_transform` without AugMix
    (:attr:`gpu_view_ignore`; AugMix has no batched form): the random resized crop and
    flips; it evaluates on the whole image resized to a square
    (:meth:`gpu_eval_view_transform`).

    **Batches.** ``(images (B, C, H, W), targets[, filenames])`` as torch's default
    collate makes them, or a :class:`~lightly_derm.data.GroupedBatch` (its first view is
    used) as :meth:`default_transform` with :meth:`default_collate` makes them.

    **Initialisation.** ``backbone_weights`` loads an SSL backbone (e.g. a GraVIS or
    FG-SSL checkpoint's ``backbone.*``); ``blocks_weights`` loads the whole
    HierarchicalBlocks of an :class:`~lightly_derm.methods.FGSSL` checkpoint (backbone
    and blocks; the classifiers stay new), FG-SSL's pretrain-then-fine-tune pipeline.

    Args:
        backbone: A torchvision ResNet name or module.
        backbone_weights: Local checkpoint or state dict of the backbone.
        num_classes: Classes; default 7, the diagnoses of ISIC 2018 Task 3 / HAM10000
            and DermaMNIST.
        grids: Jigsaw grids of blocks 1, 2, 3, finest first.
        embedding_dim, block_dim: See :class:`~lightly_derm.models.HierarchicalBlocks`.
        schedule: ``"progressive"`` or ``"joint"``.
        concat_weight: Weight of step 4 (PMG: 2).
        lr, backbone_lr, momentum, weight_decay, max_epochs: The optimiser (authors:
            0.002, 0.0002, 0.9, 5e-4, cosine per epoch). ``backbone_lr=None``: ``lr``
            / 10 when ``backbone_weights`` or ``blocks_weights`` are given (the authors'
            split for a pretrained backbone), ``lr`` from scratch.
        exclude_identity: Never feed an unshuffled jigsaw (only matters with
            ``permutations="uniform"``).
        label_smoothing: Of the cross-entropy.
        blocks_weights: Path or state dict of an FGSSL checkpoint (``blocks.*`` keys) or
            of a HierarchicalBlocks.
        augment: Where the views are made, ``"cpu"`` (DataLoader workers) or ``"gpu"``
            (on the device, see :class:`~lightly_derm.methods.SSLMethod`).
        permutations: The jigsaws' permutations: ``"cycle"`` (PMG's, the default),
            ``"derangement"`` or ``"uniform"``.
        set_grads_to_none: ``False`` (PMG's loop): every parameter takes all 4 steps
            of a batch; see :class:`~lightly_derm.methods.pmg.PMGMethod`.

    Example:
        >>> import torch
        >>> from lightly_derm.methods import FGSSLClassifier
        >>> model = FGSSLClassifier(backbone="resnet18", num_classes=7)
        >>> model.predict_logits(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 7])
    """

    #: AugMix has no GPU form; the device views leave it out (see the class docstring).
    gpu_view_ignore: tuple[type, ...] = (T.AugMix,)

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        backbone_weights: str | Path | Mapping[str, Tensor] | None = None,
        num_classes: int = 7,
        grids: Sequence[int] = (16, 8, 4),
        embedding_dim: int = 512,
        block_dim: int | None = None,
        schedule: str = "progressive",
        concat_weight: float = 2.0,
        lr: float = 0.002,
        backbone_lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        max_epochs: int | None = None,
        exclude_identity: bool = False,
        label_smoothing: float = 0.0,
        blocks_weights: str | Path | Mapping[str, Tensor] | None = None,
        augment: Augment = "cpu",
        permutations: str = "cycle",
        set_grads_to_none: bool = False,
    ) -> None:
        if (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, int)
            or num_classes < 2
        ):
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        super().__init__(
            backbone=backbone,
            backbone_weights=backbone_weights,
            grids=grids,
            embedding_dim=embedding_dim,
            block_dim=block_dim,
            num_classes=num_classes,
            schedule=schedule,
            concat_weight=concat_weight,
            lr=lr,
            backbone_lr=backbone_lr,
            momentum=momentum,
            weight_decay=weight_decay,
            max_epochs=max_epochs,
            exclude_identity=exclude_identity,
            augment=augment,
            permutations=permutations,
            set_grads_to_none=set_grads_to_none,
            pretrained=(
                True
                if blocks_weights is not None or backbone_weights is not None
                else (False if isinstance(backbone, str) else None)
            ),
        )
        self.save_hyperparameters(
            ignore=self._hparams_ignore(backbone, backbone_weights) + ["blocks_weights"]
        )
        # the rates in use, so that a checkpoint reloads with them (the weights that
        # chose the backbone's rate are not saved)
        self.hparams.update(lr=self.lr, backbone_lr=self.backbone_lr)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        if blocks_weights is not None:
            self.load_blocks_weights(blocks_weights)

    def load_blocks_weights(self, weights: str | Path | Mapping[str, Any]) -> None:
        """Loads backbone and blocks from an FGSSL checkpoint or a HierarchicalBlocks state dict.

        The classifiers are not loaded (they are new, or of another number of classes).

        Raises:
            ValueError: The weights lack blocks or backbone keys, or do not fit.
        """
        obj = (
            load_checkpoint_file(weights)
            if isinstance(weights, (str, Path))
            else weights
        )
        state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
        if not isinstance(state, Mapping):
            raise TypeError(
                f"blocks_weights must be a path or a mapping, got {type(obj).__name__}"
            )
        for wrapper in ("module.", "_orig_mod."):
            if state and all(k.startswith(wrapper) for k in state):
                state = {k[len(wrapper) :]: v for k, v in state.items()}
        if any(k.startswith("blocks.") for k in state):
            state = {
                k[len("blocks.") :]: v
                for k, v in state.items()
                if k.startswith("blocks.")
            }
        state = {k: v for k, v in state.items() if not k.startswith("classifiers.")}
        own = {
            k: v
            for k, v in self.blocks.state_dict().items()
            if not k.startswith("classifiers.")
        }
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        mismatched = [
            f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
            for k, v in own.items()
            if k in state and tuple(state[k].shape) != tuple(v.shape)
        ]
        if missing or unexpected or mismatched:
            raise ValueError(
                "blocks_weights do not fit the HierarchicalBlocks: "
                f"{len(missing)} missing keys {missing[:4]}, {len(unexpected)} unexpected "
                f"keys {unexpected[:4]}, shape mismatches {mismatched[:4]}"
            )
        self.blocks.load_state_dict(state, strict=False)

    def labelled_batch(self, batch: Any) -> tuple[Tensor, Tensor]:
        """``(images, targets)`` of a supervised or a grouped batch."""
        if (
            isinstance(batch, (tuple, list))
            and not isinstance(batch, GroupedBatch)
            and len(batch) in (2, 3)
            and isinstance(batch[0], Tensor)
            and batch[0].ndim == 4
        ):
            images, targets = batch[0], batch[1]
            if not isinstance(targets, Tensor):
                targets = torch.as_tensor(targets, device=images.device)
        else:
            grouped = to_grouped_batch(batch)
            images, targets = grouped.view(0), grouped.targets
        if targets.ndim != 1 or targets.shape[0] != images.shape[0]:
            raise ValueError(
                f"targets must be class indices (B,) for the {images.shape[0]} images, got "
                f"shape {tuple(targets.shape)}"
            )
        self.check_input(images)
        return images, targets.long()

    def _ce(self, logits: Tensor | None, targets: Tensor) -> Tensor:
        assert logits is not None
        return F.cross_entropy(
            logits.float(),
            targets,
            ignore_index=-1,
            label_smoothing=self.label_smoothing,
        )

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Runs the four PMG steps on a labelled batch; returns the summed (detached) loss."""
        images, targets = self.labelled_batch(batch)
        jigsaws = self.jigsaws(images)
        blocks = self.blocks

        def block_loss(k: int) -> Tensor:
            return self._ce(blocks.forward_block(jigsaws[k], k)[1], targets)

        def concat_loss() -> Tensor:
            return self.concat_weight * self._ce(
                blocks.forward_block(images, 3)[1], targets
            )

        def joint() -> list[Tensor]:
            return [block_loss(0), block_loss(1), block_loss(2), concat_loss()]

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
        self.log("train_loss", total, prog_bar=True, batch_size=images.shape[0])
        for part, value in zip(PARTS, losses, strict=True):
            self.log(f"train_loss_{part}", value, batch_size=images.shape[0])
        return total

    def predict_logits(self, images: Tensor) -> Tensor:
        """y_1 + y_2 + y_3 + y_c of unshuffled ``images`` (B, C, H, W): (B, num_classes)."""
        return self.blocks(images).summed_logits

    def _evaluate(self, batch: Any, prefix: str) -> None:
        images, targets = self.labelled_batch(batch)
        out = self.blocks(images)
        assert out.logits is not None
        logits = out.summed_logits.float()
        labelled = targets >= 0
        count = labelled.sum().clamp(min=1)
        acc = ((logits.argmax(1) == targets) & labelled).sum() / count
        acc_concat = ((out.logits[3].argmax(1) == targets) & labelled).sum() / count
        batch_size = images.shape[0]
        self.log(
            f"{prefix}_loss",
            F.cross_entropy(logits, targets, ignore_index=-1),
            batch_size=batch_size,
            prog_bar=True,
        )
        self.log(f"{prefix}_acc", acc, batch_size=batch_size, prog_bar=True)
        self.log(f"{prefix}_acc_concat", acc_concat, batch_size=batch_size)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Logs ``val_loss`` (CE of the summed logits), ``val_acc`` and ``val_acc_concat``."""
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Logs ``test_loss``, ``test_acc`` and ``test_acc_concat``."""
        self._evaluate(batch, "test")

    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """Summed logits (B, num_classes) of a batch of images or of ``(images, …)``."""
        images = batch if isinstance(batch, Tensor) else self.labelled_batch(batch)[0]
        return self.predict_logits(images)

    def gpu_eval_view_transform(self, input_size: int = 224) -> GPUMultiViewTransform:
        """Evaluation views on the device: the image resized to a square, normalised."""
        check_input_size(input_size, self.grids)
        return GPUMultiViewTransform(
            [
                GPUViewTransform(
                    input_size=input_size,
                    crop="resize",
                    hf_prob=0.0,
                    cj_prob=0.0,
                    random_gray_scale=0.0,
                    gaussian_blur=0.0,
                )
            ]
        )

    def cpu_view_transform(self, input_size: int = 224) -> MultiViewTransform:
        """One training view per image, the authors' recipe.

        RGB, ``RandomResizedCrop(input_size)``, horizontal and vertical flips,
        torchvision's ``AugMix`` (default severity 3, width 3), ``ToTensor`` and
        ImageNet normalisation. Returns a list with one view (lightly's multi-view
        contract), for :meth:`default_collate`. ``input_size`` must be divisible by
        every grid.
        """
        check_input_size(input_size, self.grids)
        return MultiViewTransform(
            [
                T.Compose(
                    [
                        _ToRGB(),
                        T.RandomResizedCrop(input_size),
                        T.RandomHorizontalFlip(),
                        T.RandomVerticalFlip(),
                        T.AugMix(),
                        T.ToTensor(),
                        T.Normalize(
                            mean=IMAGENET_NORMALIZE["mean"],
                            std=IMAGENET_NORMALIZE["std"],
                        ),
                    ]
                )
            ]
        )

    def eval_transform(self, input_size: int = 224) -> MultiViewTransform:
        """One evaluation view per image: the authors' Resize(256) + CenterCrop(224), scaled.

        RGB, ``Resize(round(input_size · 256/224))`` of the shorter side,
        ``CenterCrop(input_size)``, ``ToTensor``, ImageNet normalisation; a one-view
        list like :meth:`cpu_view_transform`, for :meth:`default_collate`.

        Example:
            >>> from PIL import Image
            >>> from lightly_derm.methods import FGSSLClassifier
            >>> model = FGSSLClassifier(backbone="resnet18", grids=(8, 4, 2))
            >>> [tuple(v.shape) for v in model.eval_transform(64)(Image.new("RGB", (90, 70)))]
            [(3, 64, 64)]
        """
        check_input_size(input_size, self.grids)
        return MultiViewTransform(
            [
                T.Compose(
                    [
                        _ToRGB(),
                        T.Resize(round(input_size * EVAL_RESIZE_RATIO)),
                        T.CenterCrop(input_size),
                        T.ToTensor(),
                        T.Normalize(
                            mean=IMAGENET_NORMALIZE["mean"],
                            std=IMAGENET_NORMALIZE["std"],
                        ),
                    ]
                )
            ]
        )
