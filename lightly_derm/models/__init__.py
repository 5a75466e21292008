"""Backbones and model parts: backbones by name, checkpoints, hierarchical blocks."""

from lightly_derm.models.backbones import (
    BACKBONE_ALIASES,
    CIFAR_SUFFIX,
    RESNETS,
    SMALL_INPUT_SIZE,
    STEMS,
    backbone_for_input_size,
    build_backbone,
    check_backbone_name,
    cifar_stem,
    default_stem,
    feature_dim,
    load_backbone_weights,
    resnet,
    split_backbone_name,
    split_resnet_stem,
    torchvision_backbone,
)
from lightly_derm.models.checkpoints import (
    check_finite_weights,
    extract_backbone_state_dict,
    load_checkpoint_file,
)
from lightly_derm.models.hierarchical_blocks import (
    HierarchicalBlocks,
    HierarchicalOutput,
    stage_channels,
)
from lightly_derm.models.imagenet import (
    IMAGENET_LITE0,
    LITE0_NORMALIZE,
    NAMED_WEIGHTS,
    NamedWeights,
    imagenet_efficientnet_lite0,
    input_normalization,
    lite0_state_dict_to_timm,
    lite0_weights_path,
    named_weights,
)
from lightly_derm.models.monai_backbones import MONAI_EFFICIENTNETS, monai_backbone
from lightly_derm.models.stages import HierarchicalStages, hierarchical_stages
from lightly_derm.models.timm_backbones import timm_backbone

__all__ = [
    "BACKBONE_ALIASES",
    "CIFAR_SUFFIX",
    "IMAGENET_LITE0",
    "LITE0_NORMALIZE",
    "MONAI_EFFICIENTNETS",
    "NAMED_WEIGHTS",
    "RESNETS",
    "SMALL_INPUT_SIZE",
    "STEMS",
    "HierarchicalBlocks",
    "check_finite_weights",
    "HierarchicalOutput",
    "HierarchicalStages",
    "NamedWeights",
    "backbone_for_input_size",
    "build_backbone",
    "check_backbone_name",
    "cifar_stem",
    "default_stem",
    "extract_backbone_state_dict",
    "feature_dim",
    "hierarchical_stages",
    "imagenet_efficientnet_lite0",
    "input_normalization",
    "lite0_state_dict_to_timm",
    "lite0_weights_path",
    "load_backbone_weights",
    "load_checkpoint_file",
    "monai_backbone",
    "named_weights",
    "resnet",
    "split_backbone_name",
    "split_resnet_stem",
    "stage_channels",
    "timm_backbone",
    "torchvision_backbone",
]
