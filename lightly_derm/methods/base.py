"""The interface every lightly-derm pretraining method offers.

Builds on :class:`pytorch_lightning.LightningModule`. The command line, evaluation and
the segmentation transfer rely on these members only, so any ``method`` plugin that
subclasses :class:`SSLMethod` works with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch import Tensor, nn

from lightly_derm.data.grouped_view_collate import GroupedViewCollate
from lightly_derm.models.backbones import feature_dim, resnet


class SSLMethod(pl.LightningModule):
    """Base class of the pretraining methods: a backbone plus what feeds it.

    Conventions every method follows:

    - ``self.backbone`` is the encoder being trained, mapping (B, C, H, W) images to
      (B, ``feature_dim``) features; for ResNets its state-dict keys are torchvision's
      (``conv1``, ``bn1``, ``layer1`` … ``layer4``), so the checkpoint's ``backbone.*``
      weights move into MONAI encoders and torchvision models.
    - :meth:`default_transform` gives the view transform of the method's data, and
      :meth:`default_collate` the collate function; ``training_step`` accepts its
      output and lightly's ``MultiViewCollate`` output (see
      :func:`~lightly_derm.data.to_grouped_batch`).
    - The total training loss is logged as ``train_loss``; parts as ``train_loss_<part>``.

    Args:
        backbone: A torchvision ResNet name (see :data:`~lightly_derm.models.RESNETS`) or
            any module mapping images to features.
        backbone_weights: Local checkpoint path or state dict to initialise a named
            ResNet from (never downloaded).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        backbone_weights: str | Path | Mapping[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(backbone, str):
            self.backbone: nn.Module = resnet(backbone, weights=backbone_weights)
        elif isinstance(backbone, nn.Module):
            if backbone_weights is not None:
                raise ValueError(
                    "backbone_weights is for a backbone given by name; load weights into "
                    "your module before passing it"
                )
            self.backbone = backbone
        else:
            raise TypeError(
                f"backbone must be a ResNet name or an nn.Module, got {type(backbone).__name__}"
            )
        self.feature_dim = feature_dim(self.backbone)

    def forward(self, images: Tensor) -> Tensor:
        """Backbone features (B, ``feature_dim``) of images (B, C, H, W)."""
        return self.backbone(images).flatten(1)

    def default_transform(self, input_size: int = 224) -> Callable[[Any], Any]:
        """The view transform this method's data needs (image → list of views)."""
        raise NotImplementedError(
            f"{type(self).__name__} does not define default_transform"
        )

    def default_collate(self) -> Callable[[list[Any]], Any]:
        """The collate function for batches of :meth:`default_transform` samples."""
        return GroupedViewCollate()
