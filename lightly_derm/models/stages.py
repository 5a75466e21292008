"""The last three stages of a backbone, for FG-SSL's hierarchical blocks.

:func:`hierarchical_stages` finds, for a backbone module, the outputs at strides 8, 16
and 32 (the last three stages that halve the resolution) and a function that runs the
backbone only as deep as a requested stage. Supported, each through its own interface:

- torchvision ResNets: ``layer2``, ``layer3``, ``layer4`` (read from the modules);
- MONAI EfficientNets (:class:`monai.networks.nets.EfficientNet`): the ends of the
  block stacks that MONAI's own feature extractor returns (``extract_stacks``);
- timm models with ``feature_info`` and ``forward_intermediates`` (timm ≥ 1.0's uniform
  interface: ConvNeXt, EfficientNet, ResNet, RegNet, ...): the last three entries of
  ``feature_info``, run with ``forward_intermediates(..., stop_early=True)``;
- timm ``features_only`` models: the last three of their feature maps.

A backbone without three stages of falling resolution (a plain ViT keeps one
resolution) is a :class:`TypeError` that says so.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from torch import Tensor, nn

__all__ = ["HierarchicalStages", "hierarchical_stages"]

#: The torchvision ResNet stages the blocks read, shallowest first.
RESNET_STAGES: tuple[str, str, str] = ("layer2", "layer3", "layer4")

_T = TypeVar("_T")


def _three(items: Sequence[_T]) -> tuple[_T, _T, _T]:
    """The three stages' values of a sequence of three."""
    return items[0], items[1], items[2]


@dataclass(frozen=True)
class HierarchicalStages:
    """How to read the last three stages of one backbone.

    Attributes:
        channels: Channels of the three stage outputs, shallowest first.
        names: What the stages are called in the backbone (for messages and docs).
        read: ``read(backbone, images, depth)`` returns the first ``depth`` (1 to 3) of
            the three stage outputs, running the backbone no deeper than needed.
    """

    channels: tuple[int, int, int]
    names: tuple[str, str, str]
    read: Callable[[nn.Module, Tensor, int], list[Tensor]]


# The readers are module-level functions (with functools.partial), so that a module
# holding a HierarchicalStages can be pickled.
def _read_resnet(b: Any, images: Tensor, depth: int) -> list[Tensor]:
    x = b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(images)))))
    features = []
    for name in RESNET_STAGES[:depth]:
        x = getattr(b, name)(x)
        features.append(x)
    return features


def _read_monai_efficientnet(
    b: Any, images: Tensor, depth: int, ends: tuple[int, ...]
) -> list[Tensor]:
    x = b._swish(b._bn0(b._conv_stem(b._conv_stem_padding(images))))
    features: list[Tensor] = []
    for i, stack in enumerate(b._blocks):
        x = stack(x)
        if i in ends[:depth]:
            features.append(x)
            if len(features) == depth:
                break
    return features


def _read_timm(
    b: Any, images: Tensor, depth: int, indices: tuple[int, ...]
) -> list[Tensor]:
    return list(
        b.forward_intermediates(
            images,
            indices=list(indices[:depth]),
            intermediates_only=True,
            stop_early=True,
        )
    )


def _read_features_only(b: nn.Module, images: Tensor, depth: int) -> list[Tensor]:
    return list(b(images)[-3:])[:depth]


def _resnet_stages(model: nn.Module) -> HierarchicalStages | None:
    channels = []
    for name in RESNET_STAGES:
        stage = getattr(model, name, None)
        if not isinstance(stage, nn.Module):
            return None
        norms = [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
        if not norms or not all(
            isinstance(getattr(model, n, None), nn.Module)
            for n in ("conv1", "bn1", "relu", "maxpool", "layer1")
        ):
            return None
        channels.append(norms[-1].num_features)

    return HierarchicalStages(_three(channels), RESNET_STAGES, _read_resnet)


def _monai_efficientnet_stages(model: nn.Module) -> HierarchicalStages | None:
    module = sys.modules.get("monai.networks.nets.efficientnet")
    if module is None or not isinstance(model, module.EfficientNet):
        return None
    # Stacks after which MONAI's EfficientNetBNFeatures returns a feature map.
    ends = [i for i in range(len(model._blocks)) if i + 1 in model.extract_stacks]
    if len(ends) < 3:
        return None
    ends = ends[-3:]
    channels = tuple(int(model._blocks_args[i].output_filters) for i in ends)

    return HierarchicalStages(
        _three(channels),
        _three([f"_blocks.{i}" for i in ends]),
        partial(_read_monai_efficientnet, ends=tuple(ends)),
    )


def _timm_features_only_stages(model: nn.Module) -> HierarchicalStages | None:
    info = getattr(model, "feature_info", None)
    if (
        info is None
        or isinstance(info, list)
        or not callable(getattr(info, "reduction", None))
    ):
        return None
    reductions = [int(r) for r in info.reduction()][-3:]
    if len(reductions) < 3 or not reductions[0] < reductions[1] < reductions[2]:
        raise TypeError(
            f"{type(model).__name__} (timm features_only) has no three last stages of "
            f"falling resolution (strides {reductions})"
        )
    channels = tuple(int(c) for c in info.channels()[-3:])
    names = tuple(str(m) for m in info.module_name()[-3:])

    return HierarchicalStages(
        _three(channels),
        _three(names),
        _read_features_only,
    )


def _timm_stages(model: nn.Module) -> HierarchicalStages | None:
    info = getattr(model, "feature_info", None)
    if not isinstance(info, list) or not callable(
        getattr(model, "forward_intermediates", None)
    ):
        return None
    if len(info) < 3:
        raise TypeError(
            f"{type(model).__name__} has {len(info)} feature stages; FG-SSL's "
            "hierarchical blocks need three"
        )
    last = info[-3:]
    reductions = [int(f["reduction"]) for f in last]
    if not reductions[0] < reductions[1] < reductions[2]:
        raise TypeError(
            f"{type(model).__name__}'s last three feature stages have strides "
            f"{reductions}: FG-SSL's hierarchical blocks need three stages of falling "
            "resolution (a plain ViT keeps one resolution); use a CNN or a "
            "hierarchical transformer"
        )
    indices = [len(info) - 3, len(info) - 2, len(info) - 1]
    channels = tuple(int(f["num_chs"]) for f in last)

    return HierarchicalStages(
        _three(channels),
        _three([str(f["module"]) for f in last]),
        partial(_read_timm, indices=tuple(indices)),
    )


def hierarchical_stages(model: nn.Module) -> HierarchicalStages:
    """The last three stages of ``model`` (strides 8, 16, 32 for the usual CNNs).

    Raises:
        TypeError: ``model`` is none of the supported kinds (the message lists them),
            or has no three stages of falling resolution (a plain ViT).

    Example:
        >>> from lightly_derm.models import build_backbone, hierarchical_stages
        >>> hierarchical_stages(build_backbone("resnet18")).channels
        (128, 256, 512)
        >>> hierarchical_stages(build_backbone("monai:efficientnet-b0")).channels
        (40, 112, 320)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"backbone must be an nn.Module, got {type(model).__name__}")
    for find in (
        _resnet_stages,
        _monai_efficientnet_stages,
        _timm_stages,
        _timm_features_only_stages,
    ):
        stages = find(model)
        if stages is not None:
            return stages
    raise TypeError(
        f"FG-SSL's hierarchical blocks need the last three stages of the backbone, and "
        f"{type(model).__name__} exposes none that lightly-derm can read: use a "
        "torchvision ResNet, a MONAI EfficientNet or a timm model with feature_info "
        "(e.g. 'timm:convnext_tiny', 'efficientnet-lite0')"
    )
