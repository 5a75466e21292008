"""MONAI's EfficientNets as lightly-derm backbones (``backbone="monai:efficientnet-b0"``).

Builds on :class:`monai.networks.nets.EfficientNetBN` (Tan and Le, "EfficientNet:
Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019,
arXiv:1905.11946), created with ``pretrained=False`` (nothing is downloaded). Its
classifier ``_fc`` and the dropout before it become ``nn.Identity``, so the model maps
images to the pooled features of ``_conv_head``; every other key is the one of MONAI's
FlexibleUNet encoder of the same name (:class:`monai.networks.nets.EfficientNetEncoder`),
so an SSL checkpoint moves into ``FlexibleUNet(backbone="efficientnet-b0")``
(:func:`~lightly_derm.segmentation.load_ssl_encoder`).
"""

from __future__ import annotations

from torch import nn

__all__ = ["MONAI_EFFICIENTNETS", "monai_backbone"]

#: The MONAI EfficientNet names lightly-derm accepts (MONAI's ``efficientnet_params``).
MONAI_EFFICIENTNETS: tuple[str, ...] = (
    *(f"efficientnet-b{i}" for i in range(9)),
    "efficientnet-l2",
)


def monai_backbone(name: str, in_channels: int = 3) -> nn.Module:
    """Creates MONAI's ``EfficientNetBN`` ``name`` without classifier.

    Args:
        name: One of :data:`MONAI_EFFICIENTNETS`.
        in_channels: Image channels.

    Returns:
        The EfficientNet; it maps (B, in_channels, H, W) to (B, ``model.feature_dim``)
        features (1280 for efficientnet-b0).

    Raises:
        ValueError: ``name`` is not a MONAI EfficientNet.

    Example:
        >>> import torch
        >>> from lightly_derm.models import monai_backbone
        >>> model = monai_backbone("efficientnet-b0")
        >>> model(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 1280])
    """
    if name not in MONAI_EFFICIENTNETS:
        raise ValueError(
            f"backbone 'monai:{name}' is not a MONAI EfficientNet; choose one of "
            f"{', '.join(MONAI_EFFICIENTNETS)}"
        )
    from monai.networks.nets import EfficientNetBN

    model = EfficientNetBN(
        name, pretrained=False, spatial_dims=2, in_channels=in_channels
    )
    width = model._fc.in_features
    # MONAI annotates these as Dropout and Linear; any module fits where they are called
    model._dropout = nn.Identity()  # type: ignore[assignment]
    model._fc = nn.Identity()  # type: ignore[assignment]
    model.feature_dim = int(width)  # type: ignore[assignment]
    return model
