"""Which MONAI FlexibleUNet encoder takes the weights of which lightly-derm backbone.

Builds on :func:`lightly_derm.models.split_backbone_name` and MONAI's
:data:`~monai.networks.nets.flexible_unet.FLEXUNET_BACKBONE` registry. The encoder of a
backbone has the backbone's key names, so
:func:`~lightly_derm.segmentation.load_ssl_encoder` moves an SSL checkpoint into it
tensor by tensor:

=============================  ==============================
backbone                       FlexibleUNet backbone
=============================  ==============================
``resnet18/34/50``             ``lightly-derm-resnet18/34/50``
``resnet18/34/50-cifar``       ``lightly-derm-resnet18/34/50-cifar``
``monai:efficientnet-bN``      ``efficientnet-bN`` (MONAI's)
``timm:<model>``               ``timm-<model>``
``efficientnet-lite0``         ``timm-tf_efficientnet_lite0``
=============================  ==============================
"""

from __future__ import annotations

from lightly_derm.models.backbones import (
    RESNETS,
    split_backbone_name,
    split_resnet_stem,
)

__all__ = ["flexunet_backbone"]


def flexunet_backbone(backbone: str) -> str:
    """The FlexibleUNet backbone name whose encoder takes the weights of ``backbone``.

    A FlexibleUNet backbone name (``"lightly-derm-resnet50"``, ``"efficientnet-b0"``,
    ``"timm-convnext_tiny"``) is returned as it is.

    Raises:
        ValueError: No registered FlexibleUNet encoder fits ``backbone`` (a ViT, a
            ResNet without encoder, an unknown name); the message lists the encoders.

    Example:
        >>> from lightly_derm.segmentation import flexunet_backbone
        >>> flexunet_backbone("resnet50"), flexunet_backbone("monai:efficientnet-b0")
        ('lightly-derm-resnet50', 'efficientnet-b0')
        >>> flexunet_backbone("efficientnet-lite0")
        'timm-tf_efficientnet_lite0'
        >>> flexunet_backbone("resnet18-cifar")
        'lightly-derm-resnet18-cifar'
    """
    from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

    from lightly_derm.plugins.flexunet import register_flexunet_backbones

    family, model = split_backbone_name(backbone)
    if family == "torchvision" and split_resnet_stem(model)[0] not in RESNETS:
        name = model  # a FlexibleUNet name given as it is
    else:
        name = {"torchvision": "lightly-derm-", "monai": "", "timm": "timm-"}.get(
            family, f"{family}-"
        ) + model
    table = FLEXUNET_BACKBONE.register_dict
    if name not in table:
        register_flexunet_backbones()
    if name not in table:
        raise ValueError(
            f"backbone {backbone!r} has no MONAI FlexibleUNet encoder ({name!r} is not "
            f"registered); the encoders are {', '.join(sorted(table))} (a plain ViT has "
            "no multi-scale features for a U-Net)"
        )
    return name
