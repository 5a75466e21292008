"""FG-SSL's hierarchical blocks on a backbone's last three stages (PMG's heads).

Builds on :func:`lightly_derm.models.build_backbone` (torchvision ResNets, MONAI
EfficientNets, timm models; key names kept so ``backbone.*`` weights move into MONAI),
:func:`lightly_derm.models.hierarchical_stages` (which finds the stages: ``layer2`` …
``layer4`` of a ResNet, the stride-8/16/32 stacks of an EfficientNet, the last three
``feature_info`` entries of a timm model) and
:class:`torchvision.ops.Conv2dNormActivation`. What it adds: the three per-stage blocks
and the concatenation block of PMG (Du et al., ECCV 2020, arXiv:2003.03836) as used by
FG-SSL (Park and Ryu, arXiv:2308.05770), with a forward that runs the backbone only as
deep as the requested block needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

from lightly_derm.models.backbones import build_backbone
from lightly_derm.models.stages import RESNET_STAGES, hierarchical_stages
from lightly_derm.utils.validation import check_int

__all__ = ["HierarchicalBlocks", "HierarchicalOutput", "stage_channels"]

#: The ResNet stages the three blocks read, shallowest first (other backbones: the
#: last three stages, see :func:`~lightly_derm.models.hierarchical_stages`).
STAGES: tuple[str, ...] = RESNET_STAGES


class HierarchicalOutput(NamedTuple):
    """What :class:`HierarchicalBlocks` returns for a batch: embeddings and logits."""

    #: ``(e_1, e_2, e_3, e_c)``, each (B, feature_dim): the blocks on layer2, layer3,
    #: layer4 and the concatenation block.
    embeddings: tuple[Tensor, Tensor, Tensor, Tensor]
    #: ``(y_1, y_2, y_3, y_c)``, each (B, num_classes), or ``None`` without classifiers.
    logits: tuple[Tensor, Tensor, Tensor, Tensor] | None

    @property
    def summed_logits(self) -> Tensor:
        """y_1 + y_2 + y_3 + y_c, PMG's combined prediction (B, num_classes)."""
        if self.logits is None:
            raise ValueError("this model has no classifiers (num_classes=None)")
        return self.logits[0] + self.logits[1] + self.logits[2] + self.logits[3]


def stage_channels(model: nn.Module) -> tuple[int, int, int]:
    """Output channels of the last three stages of a backbone, shallowest first.

    ResNet-18/34 give (128, 256, 512) (``layer2`` … ``layer4``), ResNet-50 and wider
    (512, 1024, 2048), EfficientNet-B0 and -Lite0 (40, 112, 320), ConvNeXt-T
    (192, 384, 768). See :func:`~lightly_derm.models.hierarchical_stages`.

    Raises:
        TypeError: ``model`` exposes no three stages lightly-derm can read.
    """
    return hierarchical_stages(model).channels


def _embedding_block(in_dim: int, feature_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm1d(in_dim),
        nn.Linear(in_dim, feature_dim),
        nn.BatchNorm1d(feature_dim),
        nn.ELU(),
    )


class HierarchicalBlocks(nn.Module):
    """The FG-SSL / PMG model: a ResNet with one block per stage and a concatenation block.

    For the outputs of stages k = 1, 2, 3 (the backbone's last three, at strides 8, 16
    and 32: ``layer2``, ``layer3``, ``layer4`` of a ResNet; with C_k channels) and F = ``feature_dim``, D = ``block_dim``::

        h_k = GlobalMaxPool(ConvBNReLU3x3(F→D)(ConvBNReLU1x1(C_k→F)(stage_k)))
        e_k = ELU(BN(Linear_{D→F}(BN(h_k))))           y_k = Linear_{F→C}(e_k)
        e_c = ELU(BN(Linear_{3D→F}(BN([h_1; h_2; h_3])))) y_c = Linear_{F→C}(e_c)

    e_k are the SSL embeddings of FG-SSL (Park and Ryu, arXiv:2308.05770), y_k the
    classifiers of PMG (Du et al., arXiv:2003.03836). The finest jigsaw goes to block 1.
    Differences from the authors' code (github.com/kalelpark/FG-SSL, ``models/fgvc/
    pmg.py``): blocks 2 and 3 read h_2 and h_3 (the authors feed h_1 to all three
    embedding blocks, a bug); the global max pool is adaptive, so any input size works
    (the authors' fixed 28/14/7 kernels are global only at 224 px); D is a parameter,
    by default half of the last stage's channels as the authors' ``num_ftrs // 2`` is
    for ResNet-50 (1024), so that other backbones get blocks in proportion. As in PMG, the
    conv blocks' BatchNorms have momentum 0.01.

    Args:
        backbone: A backbone name (:func:`~lightly_derm.models.build_backbone`:
            ``"resnet50"``, ``"monai:efficientnet-b0"``, ``"timm:convnext_tiny"``,
            ``"efficientnet-lite0"``, ...) or a module whose last three stages
            :func:`~lightly_derm.models.hierarchical_stages` can read (a torchvision
            ResNet's ``fc`` is replaced by ``nn.Identity``; other modules are used as
            they are, so a shared backbone stays shared).
        feature_dim: F, the width of every embedding (authors: 512).
        num_classes: Adds the four classifiers y_k when set.
        block_dim: D, the channels of the conv blocks' 3×3 layer; default half the
            channels of the last stage, which is the authors' 1024 for ResNet-50
            (their ``num_ftrs // 2``) and 256 for ResNet-18/34.
        backbone_weights: Local checkpoint, state dict or named weights
            (``"imagenet:efficientnet-lite0"``) for a backbone given by name (never
            downloaded).

    Attributes:
        backbone: The backbone (its own key names kept).
        conv_blocks, embedding_blocks: The three per-stage blocks.
        concat_block: The concatenation block.
        classifiers: The four linear classifiers, or ``None``.

    Example:
        >>> import torch
        >>> from lightly_derm.models import HierarchicalBlocks
        >>> model = HierarchicalBlocks("resnet18", feature_dim=64, num_classes=7)
        >>> out = model(torch.randn(4, 3, 64, 64))
        >>> [tuple(e.shape) for e in out.embeddings], tuple(out.summed_logits.shape)
        ([(4, 64), (4, 64), (4, 64), (4, 64)], (4, 7))
        >>> embedding, logits = model.forward_block(torch.randn(4, 3, 64, 64), 0)
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        feature_dim: int = 512,
        num_classes: int | None = None,
        block_dim: int | None = None,
        backbone_weights: str | Path | Mapping[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        check_int("feature_dim", feature_dim)
        if block_dim is not None:
            check_int("block_dim", block_dim)
        if num_classes is not None:
            check_int("num_classes", num_classes)
        if isinstance(backbone, str):
            self.backbone: nn.Module = build_backbone(
                backbone, weights=backbone_weights
            )
        elif isinstance(backbone, nn.Module):
            if backbone_weights is not None:
                raise ValueError(
                    "backbone_weights is for a backbone given by name; load weights into "
                    "your module before passing it"
                )
            if isinstance(backbone, torchvision.models.ResNet) and not isinstance(
                backbone.fc, nn.Identity
            ):
                backbone.fc = nn.Identity()
            self.backbone = backbone
        else:
            raise TypeError(
                f"backbone must be a backbone name or an nn.Module, got "
                f"{type(backbone).__name__}"
            )
        self._stages = hierarchical_stages(self.backbone)
        self.stage_channels = self._stages.channels
        if block_dim is None:
            block_dim = max(1, self.stage_channels[-1] // 2)
        self.feature_dim = feature_dim
        self.block_dim = block_dim
        self.num_classes = num_classes
        norm = partial(nn.BatchNorm2d, momentum=0.01)
        self.conv_blocks = nn.ModuleList(
            nn.Sequential(
                Conv2dNormActivation(c, feature_dim, kernel_size=1, norm_layer=norm),
                Conv2dNormActivation(
                    feature_dim, block_dim, kernel_size=3, norm_layer=norm
                ),
            )
            for c in self.stage_channels
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.embedding_blocks = nn.ModuleList(
            _embedding_block(block_dim, feature_dim) for _ in STAGES
        )
        self.concat_block = _embedding_block(len(STAGES) * block_dim, feature_dim)
        self.classifiers: nn.ModuleList | None = (
            nn.ModuleList(nn.Linear(feature_dim, num_classes) for _ in range(4))
            if num_classes is not None
            else None
        )

    def stage_features(self, images: Tensor, depth: int = 3) -> list[Tensor]:
        """The outputs of the first ``depth`` of the last three stages (stops there)."""
        if images.ndim != 4:
            raise ValueError(
                f"images must be a batch (B, C, H, W), got shape {tuple(images.shape)}"
            )
        return self._stages.read(self.backbone, images, depth)

    def _h(self, k: int, feature: Tensor) -> Tensor:
        return self.pool(self.conv_blocks[k](feature)).flatten(1)

    def _logits(self, k: int, embedding: Tensor) -> Tensor | None:
        return self.classifiers[k](embedding) if self.classifiers is not None else None

    def forward(self, images: Tensor) -> HierarchicalOutput:
        """All four embeddings (and logits) of ``images`` (B, C, H, W)."""
        features = self.stage_features(images, 3)
        hs = [self._h(k, f) for k, f in enumerate(features)]
        embeddings = [self.embedding_blocks[k](h) for k, h in enumerate(hs)]
        embeddings.append(self.concat_block(torch.cat(hs, dim=1)))
        logits = None
        if self.classifiers is not None:
            logits = tuple(
                head(e) for head, e in zip(self.classifiers, embeddings, strict=True)
            )
        return HierarchicalOutput(tuple(embeddings), logits)  # type: ignore[arg-type]

    def forward_block(self, images: Tensor, index: int) -> tuple[Tensor, Tensor | None]:
        """The embedding (and logits) of one block, running the backbone only as deep as needed.

        Args:
            images: (B, C, H, W).
            index: 0, 1, 2 for the blocks on layer2, layer3, layer4 (e_1, e_2, e_3), 3 for
                the concatenation block (e_c) — the position in
                :attr:`HierarchicalOutput.embeddings`.

        Returns:
            ``(embedding (B, feature_dim), logits (B, num_classes) or None)``.
        """
        if index not in (0, 1, 2, 3):
            raise ValueError(
                f"index must be 0, 1, 2 (blocks on layer2..4) or 3 (concat), got {index!r}"
            )
        if index == 3:
            features = self.stage_features(images, 3)
            h = torch.cat([self._h(k, f) for k, f in enumerate(features)], dim=1)
            embedding = self.concat_block(h)
        else:
            feature = self.stage_features(images, index + 1)[index]
            embedding = self.embedding_blocks[index](self._h(index, feature))
        return embedding, self._logits(index, embedding)

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters of everything but the backbone (the new layers)."""
        backbone = {id(p) for p in self.backbone.parameters()}
        for p in self.parameters():
            if id(p) not in backbone:
                yield p
