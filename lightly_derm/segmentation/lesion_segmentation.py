"""Lesion segmentation with a MONAI FlexibleUNet on an SSL-pretrained encoder.

Builds on MONAI (:class:`~monai.networks.nets.FlexibleUNet`,
:class:`~monai.losses.DiceCELoss`, the cumulative metric protocol) and PyTorch Lightning
(loggers, precision, DDP, checkpoints). The encoder starts from any SSL checkpoint that
:func:`~lightly_derm.segmentation.load_ssl_encoder` reads, or from random weights for the
baseline. Scores as the ISIC 2017 segmentation challenge (Dice, Jaccard and the
thresholded Jaccard; Codella et al., arXiv 1710.05006).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE
from monai.losses import DiceCELoss
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import Tensor
from torch.nn import functional as F

from lightly_derm.segmentation.metrics import (
    ISIC2017_JACCARD_THRESHOLD,
    LesionSegmentationMetric,
)
from lightly_derm.segmentation.overlays import render_overlays, save_overlays
from lightly_derm.segmentation.transfer import (
    EncoderTransferReport,
    load_ssl_encoder,
    resnet_stage_prefixes,
)
from lightly_derm.utils.fused import fused_optimizer
from lightly_derm.utils.scheduler import cosine_annealing, training_length


class LesionSegmentation(pl.LightningModule):
    """Fine-tunes a FlexibleUNet with an SSL-pretrained encoder to segment skin lesions.

    One output channel (lesion vs. skin), trained with ``DiceCELoss(sigmoid=True)``.
    Batches are dictionaries with ``image`` (B, C, H, W) and ``label`` (B, 1, H, W) in
    {0, 1} (what :func:`~lightly_derm.transforms.isic_segmentation_transforms` yields), or
    ``(image, label)`` tuples.

    Logged: ``train_loss``; ``val_loss``, ``val_dice``, ``val_jaccard``,
    ``val_jaccard_thresholded`` (the ISIC 2017 score) per validation epoch; the same with
    ``test_`` from ``Trainer.test``. Scores are computed at the resolution of the batches.
    After each validation epoch, overlays of the first validation images (image, ground
    truth in green, prediction in red) go to TensorBoard (``val_overlays``) when a
    ``TensorBoardLogger`` is used, else to ``<log_dir>/overlays/epoch=NNN.png``.

    The low-label regimes (1 %, 10 %, … of the training masks) are chosen where the data
    is: :class:`~lightly_derm.data.ISICSegmentationDataModule` ``label_fraction`` and
    ``seed``.

    Args:
        backbone: A FlexibleUNet backbone name: ``lightly-derm-resnet18``/``34``/``50``,
            any registered ``encoder`` plugin, or a MONAI backbone.
        pretrained: SSL weights for the encoder: a checkpoint path or state dict in any
            format :func:`~lightly_derm.segmentation.load_ssl_encoder` reads; ``None``
            for a random encoder. Not a hyperparameter: ``load_from_checkpoint`` needs
            no access to it; the source and the transfer report are stored in the
            checkpoint under ``"pretrained_encoder"``.
        strict: Passed to ``load_ssl_encoder``.
        random_stages: The first this many encoder stages are not transferred and keep
            their random initialisation (ResNet encoders: 1 the stem ``conv1``/``bn1``,
            2 also ``layer1``; see
            :func:`~lightly_derm.segmentation.transfer.resnet_stage_prefixes`). The
            decoder reads these highest-resolution stages directly, and SSL
            pretraining moves them most, towards the invariances of its views.
        lr: AdamW learning rate of the decoder and head.
        encoder_lr: Learning rate of the encoder (default: ``lr``); pretrained encoders
            often fine-tune better with a smaller one.
        weight_decay: AdamW weight decay.
        freeze_encoder_epochs: Train only decoder and head for this many epochs first:
            the encoder's parameters get no gradients and its batch-norm statistics stay
            as loaded. (Under DDP use ``strategy="ddp_find_unused_parameters_true"``.)
        scheduler: ``"cosine"`` (per step over the whole run) or ``"none"``.
        in_channels: Image channels.
        decoder_channels: FlexibleUNet decoder widths.
        jaccard_threshold: The per-image Jaccard threshold of the thresholded score.
        num_overlays: Validation images to draw after each validation epoch (0: none).
        image_mean: The normalisation mean of the images (to draw them).
        image_std: The normalisation standard deviation.

    Example:
        >>> import pytorch_lightning as pl
        >>> from lightly_derm.segmentation import LesionSegmentation
        >>> model = LesionSegmentation("lightly-derm-resnet18", freeze_encoder_epochs=1)
        >>> # pl.Trainer(max_epochs=20, precision="bf16-mixed").fit(model, datamodule=...)
    """

    def __init__(
        self,
        backbone: str = "lightly-derm-resnet50",
        pretrained: str | Path | Mapping[str, Any] | None = None,
        strict: bool = True,
        random_stages: int = 0,
        lr: float = 1e-3,
        encoder_lr: float | None = None,
        weight_decay: float = 1e-4,
        freeze_encoder_epochs: int = 0,
        scheduler: str = "cosine",
        in_channels: int = 3,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        jaccard_threshold: float = ISIC2017_JACCARD_THRESHOLD,
        num_overlays: int = 4,
        image_mean: Sequence[float] | None = tuple(IMAGENET_NORMALIZE["mean"]),
        image_std: Sequence[float] | None = tuple(IMAGENET_NORMALIZE["std"]),
    ) -> None:
        super().__init__()
        # The SSL weights end up in this module's own checkpoints, so `pretrained` is not
        # a hyperparameter: restoring needs no access to the SSL file. Where they came
        # from is recorded in the checkpoint ("pretrained_encoder").
        self.save_hyperparameters(ignore=["pretrained"])
        self._pretrained_source = (
            str(pretrained)
            if isinstance(pretrained, (str, Path))
            else (None if pretrained is None else "state dict")
        )
        if scheduler not in ("cosine", "none"):
            raise ValueError(f"scheduler must be 'cosine' or 'none', got {scheduler!r}")
        if not isinstance(freeze_encoder_epochs, int) or freeze_encoder_epochs < 0:
            raise ValueError(
                f"freeze_encoder_epochs must be an int >= 0, got {freeze_encoder_epochs!r}"
            )
        for name, value in (("lr", lr), ("encoder_lr", encoder_lr)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        excluded: tuple[str, ...] = ()
        if random_stages:
            if not backbone.startswith("lightly-derm-resnet"):
                raise ValueError(
                    f"random_stages is for the ResNet encoders (lightly-derm-resnet*), "
                    f"got backbone {backbone!r}"
                )
            excluded = resnet_stage_prefixes(random_stages)
        if backbone not in FLEXUNET_BACKBONE.register_dict:
            from lightly_derm.plugins.flexunet import register_flexunet_backbones

            register_flexunet_backbones()
        if backbone not in FLEXUNET_BACKBONE.register_dict:
            raise ValueError(
                f"backbone {backbone!r} is not a FlexibleUNet backbone; choose one of "
                f"{', '.join(sorted(FLEXUNET_BACKBONE.register_dict))}"
            )
        self._size_divisor = 2 ** int(
            FLEXUNET_BACKBONE.register_dict[backbone]["feature_number"]
        )
        self.net = FlexibleUNet(
            in_channels=in_channels,
            out_channels=1,
            backbone=backbone,
            decoder_channels=tuple(decoder_channels),
        )
        #: What :func:`load_ssl_encoder` copied (``None`` for a random encoder).
        self.transfer_report: EncoderTransferReport | None = None
        if pretrained is not None:
            self.transfer_report = load_ssl_encoder(
                self.net, pretrained, strict=strict, exclude=excluded
            )
        self.loss_fn = DiceCELoss(sigmoid=True)
        self.val_metric = LesionSegmentationMetric(jaccard_threshold)
        self.test_metric = LesionSegmentationMetric(jaccard_threshold)
        self._encoder_frozen = False
        self._overlay_batch: tuple[Tensor, Tensor, Tensor] | None = None

    # ---------------------------------------------------------------- model
    def forward(self, images: Tensor) -> Tensor:
        """Lesion logits (B, 1, H, W) of images (B, C, H, W) of any size.

        FlexibleUNet needs sides divisible by 2**(encoder levels) (32 for the ResNets);
        other sizes are zero-padded (the normalised mean colour) around the image and
        the logits cropped back.
        """
        height, width = images.shape[-2:]
        pad_h, pad_w = -height % self._size_divisor, -width % self._size_divisor
        if not (pad_h or pad_w):
            return self.net(images)
        top, left = pad_h // 2, pad_w // 2
        padded = F.pad(images, (left, pad_w - left, top, pad_h - top))
        return self.net(padded)[..., top : top + height, left : left + width]

    @property
    def encoder(self) -> torch.nn.Module:
        """The FlexibleUNet's encoder."""
        return self.net.encoder

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Stops (or restarts) training the encoder: no gradients, batch norm in eval mode."""
        self._encoder_frozen = frozen
        for parameter in self.net.encoder.parameters():
            parameter.requires_grad_(not frozen)
        if self.training:
            self.net.encoder.train(not frozen)

    def train(self, mode: bool = True) -> LesionSegmentation:
        """Sets training mode; a frozen encoder stays in eval mode."""
        super().train(mode)
        if mode and self._encoder_frozen:
            self.net.encoder.eval()
        return self

    # ---------------------------------------------------------------- steps
    def _unpack(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        if isinstance(batch, Mapping):
            if "image" not in batch:
                raise TypeError(
                    f"a batch dictionary needs an 'image' key; it has {sorted(batch)}"
                )
            images, labels = batch["image"], batch.get("label")
        elif (
            isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor)
        ):
            images = batch[0]
            labels = (
                batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
            )
        elif isinstance(batch, Tensor):
            images, labels = batch, None
        else:
            raise TypeError(
                "a batch must be a dict with 'image' and 'label', an (image, label) "
                f"tuple or an image tensor, got {type(batch).__name__}"
            )
        if images.ndim != 4 or images.shape[1] != self.hparams["in_channels"]:
            raise ValueError(
                f"images must be (B, {self.hparams['in_channels']}, H, W), got shape "
                f"{tuple(images.shape)}"
            )
        if labels is not None:
            if labels.ndim == 3:
                labels = labels.unsqueeze(1)
            if labels.shape != (images.shape[0], 1, *images.shape[2:]):
                raise ValueError(
                    f"labels must be (B, 1, H, W) = {(images.shape[0], 1, *images.shape[2:])} "
                    f"to match the images, got shape {tuple(labels.shape)}"
                )
            labels = labels.to(torch.float32)
        return images, labels

    def _loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        # In float32 also under bf16/fp16 autocast (sigmoid, sums over many pixels).
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.loss_fn(logits.float(), labels)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """One DiceCE step; logs ``train_loss``."""
        images, labels = self._unpack(batch)
        if labels is None:
            raise ValueError("training batches need a 'label' (the lesion masks)")
        loss = self._loss(self(images), labels)
        self.log(
            "train_loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=images.shape[0],
        )
        return loss

    def _evaluate(
        self, batch: Any, batch_idx: int, stage: str, metric: LesionSegmentationMetric
    ) -> Tensor:
        images, labels = self._unpack(batch)
        if labels is None:
            raise ValueError(f"{stage} batches need a 'label' (the lesion masks)")
        logits = self(images)
        loss = self._loss(logits, labels)
        self.log(
            f"{stage}_loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=stage == "val",
            batch_size=images.shape[0],
            sync_dist=True,
        )
        metric(logits.detach(), labels)
        if stage == "val" and batch_idx == 0 and self.hparams["num_overlays"] > 0:
            n = self.hparams["num_overlays"]
            self._overlay_batch = (
                images[:n].detach().float().cpu(),
                labels[:n].detach().cpu(),
                torch.sigmoid(logits[:n].detach().float()).cpu(),
            )
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Loss and scores of a validation batch."""
        return self._evaluate(batch, batch_idx, "val", self.val_metric)

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Loss and scores of a test batch."""
        return self._evaluate(batch, batch_idx, "test", self.test_metric)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        """Lesion probabilities and masks of a batch (labels, if any, are ignored).

        Returns:
            ``probability`` (B, 1, H, W) float32, ``mask`` (B, 1, H, W) bool
            (probability > 0.5), and ``id`` when the batch has ids.
        """
        images, _ = self._unpack(batch)
        probability = torch.sigmoid(self(images).float())
        out: dict[str, Any] = {"probability": probability, "mask": probability > 0.5}
        if isinstance(batch, Mapping) and "id" in batch:
            out["id"] = batch["id"]
        return out

    # ---------------------------------------------------------------- epochs
    def on_train_epoch_start(self) -> None:
        """Freezes the encoder during the first ``freeze_encoder_epochs`` epochs."""
        frozen = self.current_epoch < self.hparams["freeze_encoder_epochs"]
        if frozen != self._encoder_frozen:
            self.freeze_encoder(frozen)

    def _log_scores(self, stage: str, metric: LesionSegmentationMetric) -> None:
        scores = metric.per_image()  # gathered over DDP ranks already
        metric.reset()
        if scores["dice"].numel() == 0:
            return
        for name, values in scores.items():
            self.log(f"{stage}_{name}", values.nanmean(), prog_bar=name == "dice")

    def on_validation_epoch_end(self) -> None:
        """Logs the validation scores and the overlays."""
        self._log_scores("val", self.val_metric)
        overlay, self._overlay_batch = self._overlay_batch, None
        if overlay is not None and not self.trainer.sanity_checking:
            self._log_overlays(*overlay)

    def on_test_epoch_end(self) -> None:
        """Logs the test scores."""
        self._log_scores("test", self.test_metric)

    def _log_overlays(self, images: Tensor, labels: Tensor, probs: Tensor) -> None:
        if not self.trainer.is_global_zero or not self.loggers:
            return
        grid = render_overlays(
            images, labels, probs, self.hparams["image_mean"], self.hparams["image_std"]
        )
        from pytorch_lightning.loggers import TensorBoardLogger

        boards = [lg for lg in self.loggers if isinstance(lg, TensorBoardLogger)]
        for board in boards:
            board.experiment.add_image("val_overlays", grid, self.global_step)
        if not boards and self.trainer.log_dir is not None:
            save_overlays(
                grid,
                Path(self.trainer.log_dir)
                / "overlays"
                / f"epoch={self.current_epoch:03d}.png",
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Records where the encoder's initial weights came from."""
        checkpoint["pretrained_encoder"] = {
            "source": self._pretrained_source,
            "report": None
            if self.transfer_report is None
            else str(self.transfer_report),
        }

    # ---------------------------------------------------------------- optim
    def configure_optimizers(self) -> Any:
        """AdamW with the encoder and the rest in two groups; optional cosine decay.

        AdamW runs PyTorch's fused kernel where it exists (the same update, one
        kernel a step; :func:`~lightly_derm.utils.fused.fused_optimizer`).
        """
        encoder = list(self.net.encoder.parameters())
        ids = {id(p) for p in encoder}
        rest = [p for p in self.parameters() if id(p) not in ids]
        lr = self.hparams["lr"]
        encoder_lr = self.hparams["encoder_lr"] or lr
        optimizer = fused_optimizer(
            torch.optim.AdamW,
            [
                {"params": encoder, "lr": encoder_lr, "name": "encoder"},
                {"params": rest, "lr": lr, "name": "decoder"},
            ],
            trainer=self._trainer,
            weight_decay=self.hparams["weight_decay"],
        )
        if self.hparams["scheduler"] == "none":
            return optimizer
        return cosine_annealing(optimizer, training_length(self.trainer, "step"))
