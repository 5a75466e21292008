"""Lesion segmentation in MONAI from SSL-pretrained encoders.

- :class:`ResNet18Encoder`, :class:`ResNet34Encoder`, :class:`ResNet50Encoder`: torchvision
  ResNets as MONAI FlexibleUNet backbones ``lightly-derm-resnet18/34/50`` (registered,
  with every registered ``encoder`` plugin, when this package is imported; see
  :mod:`lightly_derm.plugins.flexunet`);
  :class:`ResNet18CifarEncoder` … : the same with the small-image stem,
  ``lightly-derm-resnet18/34/50-cifar``;
- :class:`TimmEncoder` and its subclasses: timm CNNs as FlexibleUNet backbones
  ``timm-<model>`` (``timm-efficientnet_b0``, ``timm-tf_efficientnet_lite0``,
  ``timm-convnext_tiny``, …);
- MONAI's own ``efficientnet-b0`` … ``b8`` encoders take ``"monai:efficientnet-bN"``
  backbones; :func:`flexunet_backbone` names the encoder of any backbone;
- :func:`load_ssl_encoder`: SSL checkpoint → FlexibleUNet encoder, with a report;
- :class:`LesionSegmentation`: the Lightning module; :class:`LesionSegmentationMetric`:
  Dice, Jaccard and the ISIC 2017 thresholded Jaccard.

Example:
    >>> import lightly_derm.segmentation
    >>> from monai.networks.nets import FlexibleUNet
    >>> net = FlexibleUNet(in_channels=3, out_channels=1, backbone="lightly-derm-resnet18")
"""

from lightly_derm.plugins.flexunet import register_flexunet_backbones
from lightly_derm.segmentation.encoder_names import flexunet_backbone
from lightly_derm.segmentation.encoders import (
    RESNET_FEATURE_CHANNELS,
    CifarResNetEncoder,
    ResNet18CifarEncoder,
    ResNet18Encoder,
    ResNet34CifarEncoder,
    ResNet34Encoder,
    ResNet50CifarEncoder,
    ResNet50Encoder,
    TorchvisionResNetEncoder,
)
from lightly_derm.segmentation.lesion_segmentation import LesionSegmentation
from lightly_derm.segmentation.metrics import (
    ISIC2017_JACCARD_THRESHOLD,
    LesionSegmentationMetric,
    binary_dice_jaccard,
    thresholded_jaccard,
)
from lightly_derm.segmentation.overlays import (
    plot_encoder_comparison,
    render_overlays,
    save_overlays,
)
from lightly_derm.segmentation.timm_encoders import (
    TIMM_ENCODER_CHANNELS,
    TIMM_ENCODERS,
    TimmEncoder,
)
from lightly_derm.segmentation.transfer import (
    EncoderTransferReport,
    describe_resnet,
    load_ssl_encoder,
)

# The encoders are used here: make them (and every registered encoder plugin) MONAI
# FlexibleUNet backbones now, as timm registers its models on import.
register_flexunet_backbones()

__all__ = [
    "ISIC2017_JACCARD_THRESHOLD",
    "RESNET_FEATURE_CHANNELS",
    "TIMM_ENCODERS",
    "TIMM_ENCODER_CHANNELS",
    "CifarResNetEncoder",
    "EncoderTransferReport",
    "LesionSegmentation",
    "LesionSegmentationMetric",
    "ResNet18CifarEncoder",
    "ResNet18Encoder",
    "ResNet34CifarEncoder",
    "ResNet34Encoder",
    "ResNet50CifarEncoder",
    "ResNet50Encoder",
    "TimmEncoder",
    "TorchvisionResNetEncoder",
    "binary_dice_jaccard",
    "describe_resnet",
    "flexunet_backbone",
    "load_ssl_encoder",
    "plot_encoder_comparison",
    "register_flexunet_backbones",
    "render_overlays",
    "save_overlays",
    "thresholded_jaccard",
]
