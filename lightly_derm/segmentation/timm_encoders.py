"""timm CNNs as MONAI FlexibleUNet encoders ``timm-<model>``, with timm key names.

Builds on timm's uniform feature interface (``feature_info``,
``forward_intermediates``, ``prune_intermediate_layers``; timm ≥ 1.0, ``pip install
lightly-derm[timm]``) and MONAI's :class:`~monai.networks.blocks.BaseEncoder`. The
encoder holds the timm model as ``model``, built exactly as the lightly-derm backbone
``"timm:<model>"`` (:func:`~lightly_derm.models.timm_backbone`), with the layers after
its last feature map pruned (EfficientNet's ``conv_head``/``bn2``, ConvNeXt's head
norm). So the ``backbone.*`` weights of an SSL checkpoint load without renaming
(:func:`~lightly_derm.segmentation.load_ssl_encoder`); the pruned layers are reported
as unused, not missing.

FlexibleUNet needs five feature maps at strides 2 … 32. EfficientNets, RegNets and
MobileNets have them. ConvNeXt starts at stride 4 (its stem is a 4 × 4 patchify
convolution); its first map, upsampled 2× (nearest), stands in for the stride-2 map,
so that the decoder still ends at full resolution.

Registered as ``encoder`` plugins and, when ``lightly_derm`` is imported, as MONAI
FlexibleUNet backbones ``timm-efficientnet_b0``, ``timm-tf_efficientnet_lite0``,
``timm-convnext_tiny``, … (:data:`TIMM_ENCODER_CHANNELS`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from monai.networks.blocks import BaseEncoder
from torch import Tensor, nn
from torch.nn import functional as F

from lightly_derm.models.timm_backbones import timm_backbone
from lightly_derm.plugins.builtin import TIMM_ENCODER_MODELS, timm_encoder_class_name
from lightly_derm.segmentation.encoder_args import check_encoder_args

__all__ = ["TIMM_ENCODER_CHANNELS", "TimmEncoder"]

#: Channels of the five feature maps (strides 2, 4, 8, 16, 32) of each registered model
#: (ConvNeXt: the stride-4 map twice, see the module docstring).
TIMM_ENCODER_CHANNELS: dict[str, tuple[int, ...]] = {
    "efficientnet_b0": (16, 24, 40, 112, 320),
    "efficientnet_b1": (16, 24, 40, 112, 320),
    "efficientnet_b2": (16, 24, 48, 120, 352),
    "efficientnet_b3": (24, 32, 48, 136, 384),
    "tf_efficientnet_lite0": (16, 24, 40, 112, 320),
    "convnext_atto": (40, 40, 80, 160, 320),
    "convnext_nano": (80, 80, 160, 320, 640),
    "convnext_tiny": (96, 96, 192, 384, 768),
    "convnext_small": (96, 96, 192, 384, 768),
    "regnety_016": (32, 48, 120, 336, 888),
    "mobilenetv3_large_100": (16, 24, 40, 112, 960),
}
#: Prefix of the FlexibleUNet backbone names of these encoders.
BACKBONE_PREFIX = "timm-"


class TimmEncoder(nn.Module, BaseEncoder):
    """A timm CNN that gives MONAI's FlexibleUNet its five feature maps.

    Use a subclass with a fixed model (``TimmEfficientnetB0Encoder``,
    ``TimmTfEfficientnetLite0Encoder``, ``TimmConvnextTinyEncoder``, …: one per
    :data:`TIMM_ENCODER_CHANNELS` key), or this class with ``model_name``.

    Args:
        model_name: A key of :data:`TIMM_ENCODER_CHANNELS`; fixed by the subclasses.
        spatial_dims: Must be 2.
        in_channels: Input channels (timm's ``in_chans``; other than 3, the stem is new
            and RGB checkpoints do not fit it).
        pretrained: ``False``, or local weights to load with
            :func:`~lightly_derm.segmentation.load_ssl_encoder` (strict): a checkpoint
            path or named weights such as ``"imagenet:efficientnet-lite0"``. Nothing is
            downloaded, so ``True`` is an error.

    Attributes:
        model: The timm model (key names of the backbone ``"timm:<model_name>"``).
        unused_backbone_keys: The backbone's keys that the encoder pruned (after its
            last feature map).

    Example:
        >>> import torch
        >>> from lightly_derm.segmentation import TimmEncoder
        >>> encoder = TimmEncoder("efficientnet_b0")
        >>> [tuple(f.shape) for f in encoder(torch.randn(1, 3, 64, 64))]
        [(1, 16, 32, 32), (1, 24, 16, 16), (1, 40, 8, 8), (1, 112, 4, 4), (1, 320, 2, 2)]
    """

    backbone_names: ClassVar[tuple[str, ...]] = tuple(TIMM_ENCODER_CHANNELS)
    #: Where the encoder holds the backbone's tensors (for load_ssl_encoder).
    backbone_prefix: ClassVar[str] = "model."

    def __init__(
        self,
        model_name: str | None = None,
        spatial_dims: int = 2,
        in_channels: int = 3,
        pretrained: bool | str | Path = False,
    ) -> None:
        super().__init__()
        model_name = check_encoder_args(
            type(self).__name__,
            self.backbone_names,
            model_name,
            spatial_dims,
            in_channels,
            pretrained,
            not_2d="timm encoders are 2-D",
            weights="a local checkpoint path or 'imagenet:efficientnet-lite0'",
        )
        self.model_name = model_name
        self.in_channels = in_channels
        self.feature_channels = TIMM_ENCODER_CHANNELS[model_name]
        # timm models: attributes typed loosely by nn.Module's __getattr__
        model: Any = timm_backbone(model_name, in_chans=in_channels)
        full = set(model.state_dict())
        info: Any = model.feature_info
        self._indices = list(range(len(info)))
        self._upsample_first = int(info[0]["reduction"]) == 4
        model.prune_intermediate_layers(self._indices, prune_norm=True, prune_head=True)
        self.model = model
        self.unused_backbone_keys = frozenset(full - set(model.state_dict()))
        if pretrained and pretrained is not True:  # True was refused above
            from lightly_derm.segmentation.transfer import load_ssl_encoder

            load_ssl_encoder(self, pretrained, strict=True)

    def forward(self, x: Tensor) -> list[Tensor]:
        """The five feature maps of images ``x`` (B, in_channels, H, W), largest first."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects images (B, {self.in_channels}, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        model: Any = self.model
        features = list(
            model.forward_intermediates(
                x, indices=self._indices, intermediates_only=True
            )
        )
        if self._upsample_first:
            features.insert(0, F.interpolate(features[0], scale_factor=2.0))
        return features

    # ------------------------------------------------------------ MONAI BaseEncoder
    @classmethod
    def get_encoder_names(cls) -> list[str]:
        """The FlexibleUNet backbone names, ``timm-<timm model name>``."""
        return [f"{BACKBONE_PREFIX}{name}" for name in cls.backbone_names]

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        """The constructor arguments for each name (FlexibleUNet sets the last three)."""
        return [
            {
                "model_name": name,
                "spatial_dims": 2,
                "in_channels": 3,
                "pretrained": False,
            }
            for name in cls.backbone_names
        ]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        """The channels of the five feature maps, for each name."""
        return [TIMM_ENCODER_CHANNELS[name] for name in cls.backbone_names]

    @classmethod
    def num_outputs(cls) -> list[int]:
        """Five feature maps for every name."""
        return [5] * len(cls.backbone_names)


def _subclass(model: str) -> type[TimmEncoder]:
    name = timm_encoder_class_name(model)
    doc = (
        f"timm ``{model}`` as the FlexibleUNet backbone ``timm-{model}``.\n\n"
        f"Feature channels {TIMM_ENCODER_CHANNELS[model]}. See :class:`TimmEncoder`."
    )
    return type(
        name,
        (TimmEncoder,),
        {"backbone_names": (model,), "__doc__": doc, "__module__": __name__},
    )


if set(TIMM_ENCODER_MODELS) != set(TIMM_ENCODER_CHANNELS):  # pragma: no cover
    raise RuntimeError("TIMM_ENCODER_MODELS and TIMM_ENCODER_CHANNELS disagree")
#: The encoder class of each registered timm model.
TIMM_ENCODERS: dict[str, type[TimmEncoder]] = {
    model: _subclass(model) for model in TIMM_ENCODER_MODELS
}
globals().update({cls.__name__: cls for cls in TIMM_ENCODERS.values()})
__all__ += ["TIMM_ENCODERS", *(cls.__name__ for cls in TIMM_ENCODERS.values())]
