"""torchvision ResNet backbones whose state dicts keep torchvision key names.

Builds on :mod:`torchvision.models`: the classifier ``fc`` becomes ``nn.Identity`` so
that ``conv1``, ``bn1`` and ``layer1`` … ``layer4`` keep the names MONAI encoders and
torchvision checkpoints use. Weights only come from local files or state dicts; nothing
is downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from lightly_derm.models.checkpoints import extract_backbone_state_dict

#: The torchvision ResNet constructors lightly-derm accepts by name.
RESNETS: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "wide_resnet50_2",
)


def resnet(
    name: str = "resnet50",
    weights: str | Path | Mapping[str, Tensor] | None = None,
    strict: bool = True,
) -> torchvision.models.ResNet:
    """Creates a torchvision ResNet without classifier, optionally with local weights.

    Args:
        name: A torchvision ResNet constructor, one of :data:`RESNETS`.
        weights: A local checkpoint path or state dict in any format that
            :func:`~lightly_derm.models.checkpoints.extract_backbone_state_dict`
            understands (torchvision ResNet, backbone, lightly-derm Lightning
            checkpoint, lightly ``nn.Sequential`` backbone). Never downloaded.
        strict: Raise when a backbone key is missing or unexpected.

    Returns:
        The ResNet with ``fc = nn.Identity()``; it maps (B, 3, H, W) images to
        (B, :func:`feature_dim`) features. ``model.feature_dim`` holds that width.

    Raises:
        ValueError: ``name`` is not a known ResNet, or the weights do not fit.

    Example:
        >>> import torch
        >>> from lightly_derm.models import resnet
        >>> backbone = resnet("resnet18")
        >>> backbone(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 512])
    """
    if name not in RESNETS:
        raise ValueError(
            f"backbone {name!r} is not a known ResNet; choose one of {', '.join(RESNETS)}"
        )
    model: torchvision.models.ResNet = getattr(torchvision.models, name)(weights=None)
    width = model.fc.in_features
    model.fc = nn.Identity()
    model.feature_dim = width  # type: ignore[assignment]
    if weights is not None:
        load_backbone_weights(model, weights, strict=strict)
    return model


def feature_dim(backbone: nn.Module, input_size: int = 64, in_channels: int = 3) -> int:
    """The width of a backbone's flattened output (read, or measured on a dummy batch)."""
    width = getattr(backbone, "feature_dim", None)
    if isinstance(width, int):
        return width
    was_training = backbone.training
    backbone.eval()
    try:
        parameter = next(backbone.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        with torch.no_grad():
            out = backbone(
                torch.zeros(2, in_channels, input_size, input_size, device=device)
            )
    finally:
        backbone.train(was_training)
    return int(out.flatten(1).shape[1])


def load_backbone_weights(
    model: nn.Module, weights: str | Path | Mapping[str, Tensor], strict: bool = True
) -> tuple[list[str], list[str]]:
    """Loads backbone weights from a local file or state dict into ``model``.

    Returns:
        The missing and the unexpected keys (both empty when ``strict``).

    Raises:
        ValueError: In strict mode, naming missing and unexpected keys or mismatched
            shapes.
    """
    state = extract_backbone_state_dict(weights)
    own = model.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if mismatched:
        raise ValueError(
            "backbone weights do not fit the model (another architecture?): "
            + "; ".join(mismatched[:5])
            + (f"; and {len(mismatched) - 5} more" if len(mismatched) > 5 else "")
        )
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if strict and (missing or unexpected):
        raise ValueError(
            f"backbone weights do not match the model: {len(missing)} missing keys "
            f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    model.load_state_dict(state, strict=False)
    return missing, unexpected
