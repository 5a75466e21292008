"""Backbones and model parts: torchvision ResNets, checkpoints, hierarchical blocks."""

from lightly_derm.models.backbones import (
    RESNETS,
    feature_dim,
    load_backbone_weights,
    resnet,
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

__all__ = [
    "RESNETS",
    "HierarchicalBlocks",
    "check_finite_weights",
    "HierarchicalOutput",
    "extract_backbone_state_dict",
    "feature_dim",
    "load_backbone_weights",
    "load_checkpoint_file",
    "resnet",
    "stage_channels",
]
