"""The built-in plugin: lightly-derm's own components.

Registered through the package's own entry point (group ``lightly_derm``, name
``lightly_derm``), exactly as a third-party plugin is. Targets are import paths, so
listing the components imports nothing heavy.
"""

from __future__ import annotations

from lightly_derm.plugins.component import Component
from lightly_derm.plugins.hookspecs import hookimpl

# ---------------------------------------------------------------------------- GraVIS
GRAVIS: tuple[Component, ...] = (
    Component(
        "loss",
        "gravis",
        "lightly_derm.loss.gravis_loss:GraVISLoss",
        metadata={"inputs": "grouped"},
    ),
    Component(
        "transform",
        "gravis",
        "lightly_derm.transforms.gravis_transform:GraVISTransform",
        metadata={"num_views": 4},
    ),
    Component(
        "collate",
        "grouped_views",
        "lightly_derm.data.grouped_view_collate:GroupedViewCollate",
    ),
    Component(
        "method",
        "gravis",
        "lightly_derm.methods.gravis:GraVIS",
        metadata={"task": "pretrain"},
    ),
    Component(
        "method",
        "simclr",
        "lightly_derm.methods.simclr:SimCLR",
        metadata={"task": "pretrain"},
    ),
)


# ---------------------------------------------------------------------------- FG-SSL
FGSSL: tuple[Component, ...] = (
    Component(
        "transform",
        "hierarchical_jigsaw",
        "lightly_derm.transforms.jigsaw:HierarchicalJigsaw",
        metadata={"num_views": 3},
    ),
    Component(
        "transform",
        "fgssl",
        "lightly_derm.transforms.fgssl_transform:FGSSLTransform",
        metadata={"num_views": 2},
    ),
    Component(
        "loss",
        "barlow_twins_frobenius",
        "lightly_derm.loss.barlow_twins_frobenius_loss:BarlowTwinsFrobeniusLoss",
        metadata={"inputs": "pair"},
    ),
    Component(
        "method",
        "fgssl",
        "lightly_derm.methods.fgssl:FGSSL",
        metadata={"task": "pretrain"},
    ),
    Component(
        "method",
        "fgssl_classifier",
        "lightly_derm.methods.fgssl_classifier:FGSSLClassifier",
        metadata={"task": "classify"},
    ),
    Component(
        "method",
        "barlow_twins",
        "lightly_derm.methods.barlow_twins:BarlowTwins",
        metadata={"task": "pretrain"},
    ),
)


# --------------------------------------------------------------------------- AP-BYOL
APBYOL: tuple[Component, ...] = (
    Component(
        "miner",
        "tracin",
        "lightly_derm.miners.tracin:TracInPositiveMiner",
        metadata={"inputs": "per_sample_loss"},
    ),
    Component(
        "method",
        "byol",
        "lightly_derm.methods.byol:BYOL",
        metadata={"task": "pretrain"},
    ),
    Component(
        "method",
        "ap_byol",
        "lightly_derm.methods.ap_byol:APBYOL",
        metadata={"task": "pretrain"},
    ),
)


# ---------------------------------------------------------------------- segmentation
# MONAI FlexibleUNet backbones with torchvision ResNet key names; the name is the
# FlexibleUNet backbone name (lightly_derm.plugins.flexunet registers them with MONAI).
SEGMENTATION: tuple[Component, ...] = tuple(
    Component(
        "encoder",
        f"lightly-derm-resnet{depth}",
        f"lightly_derm.segmentation.encoders:ResNet{depth}Encoder",
        description=f"torchvision ResNet-{depth} as a MONAI FlexibleUNet encoder "
        "(torchvision key names, SSL checkpoints load as they are)",
        metadata={"spatial_dims": 2, "in_channels": 3},
    )
    for depth in (18, 34, 50)
) + tuple(
    Component(
        "encoder",
        f"lightly-derm-resnet{depth}-cifar",
        f"lightly_derm.segmentation.encoders:ResNet{depth}CifarEncoder",
        description=f"torchvision ResNet-{depth} with the small-image stem (backbone "
        f"'resnet{depth}-cifar') as a MONAI FlexibleUNet encoder",
        metadata={"spatial_dims": 2, "in_channels": 3},
    )
    for depth in (18, 34, 50)
)


# timm CNNs as FlexibleUNet backbones "timm-<model>" (lightly_derm.segmentation.timm_encoders);
# their keys are those of the timm backbone of the same model.
TIMM_ENCODER_MODELS: tuple[str, ...] = (
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "tf_efficientnet_lite0",
    "convnext_atto",
    "convnext_nano",
    "convnext_tiny",
    "convnext_small",
    "regnety_016",
    "mobilenetv3_large_100",
)


def timm_encoder_class_name(model: str) -> str:
    """The class of the FlexibleUNet encoder ``timm-<model>``, e.g. ``TimmConvnextTinyEncoder``."""
    return "Timm" + "".join(p.capitalize() for p in model.split("_")) + "Encoder"


TIMM_SEGMENTATION: tuple[Component, ...] = tuple(
    Component(
        "encoder",
        f"timm-{model}",
        f"lightly_derm.segmentation.timm_encoders:{timm_encoder_class_name(model)}",
        description=f"timm {model} as a MONAI FlexibleUNet encoder (timm key names; "
        f"SSL checkpoints of backbone='timm:{model}' load as they are)",
        metadata={"spatial_dims": 2, "in_channels": 3, "requires": "timm"},
    )
    for model in TIMM_ENCODER_MODELS
)


# ------------------------------------------------------------------------- backbones
# Backbone families: backbone="family:model" (no family: torchvision).
BACKBONES: tuple[Component, ...] = (
    Component(
        "backbone",
        "torchvision",
        "lightly_derm.models.backbones:torchvision_backbone",
        description="torchvision ResNets (resnet18 … resnet152, resnext50_32x4d, "
        "wide_resnet50_2), torchvision key names",
        metadata={"example": "resnet18"},
    ),
    Component(
        "backbone",
        "monai",
        "lightly_derm.models.monai_backbones:monai_backbone",
        description="MONAI EfficientNetBN (efficientnet-b0 … b8, l2); moves into "
        "FlexibleUNet(backbone='efficientnet-bN')",
        metadata={"example": "efficientnet-b0"},
    ),
    Component(
        "backbone",
        "timm",
        "lightly_derm.models.timm_backbones:timm_backbone",
        description="any timm model (lightly-derm[timm]); CNNs move into "
        "FlexibleUNet(backbone='timm-<name>')",
        metadata={"example": "convnext_atto"},
    ),
)

#: All built-in components.
COMPONENTS: tuple[Component, ...] = (
    GRAVIS + FGSSL + APBYOL + BACKBONES + SEGMENTATION + TIMM_SEGMENTATION
)


@hookimpl
def lightly_derm_components() -> tuple[Component, ...]:
    """Returns lightly-derm's built-in components."""
    return COMPONENTS
