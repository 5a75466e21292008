"""Backbones by name: torchvision ResNets, MONAI EfficientNets, timm models, plugins.

:func:`build_backbone` turns a name into a module that maps images to features:

- ``"resnet50"`` (or ``"torchvision:resnet50"``): a torchvision ResNet
  (:func:`resnet`, built on :mod:`torchvision.models`; the classifier ``fc`` becomes
  ``nn.Identity`` so that ``conv1``, ``bn1`` and ``layer1`` … ``layer4`` keep the
  names MONAI encoders and torchvision checkpoints use);
- ``"resnet18-cifar"``: the same ResNet with the CIFAR-style stem for small images
  (a 3 × 3 stride-1 ``conv1`` and no max-pool, :func:`cifar_stem`); the ImageNet stem
  divides the image side by 32, so below :data:`SMALL_INPUT_SIZE` px ``layer4`` would
  see a map smaller than 2 × 2 (1 × 1 at DermaMNIST's 28 px).
  :func:`backbone_for_input_size` picks the stem from the input size;
- ``"monai:efficientnet-b0"``: MONAI's EfficientNetBN
  (:func:`~lightly_derm.models.monai_backbone`);
- ``"timm:convnext_tiny"``, ``"timm:efficientnet_b0"``,
  ``"timm:vit_small_patch16_224"``, …: any timm model
  (:func:`~lightly_derm.models.timm_backbone`; ``pip install lightly-derm[timm]``);
- ``"efficientnet-lite0"``: timm's ``tf_efficientnet_lite0``, the network of the
  ImageNet weights ``"imagenet:efficientnet-lite0"``
  (:mod:`lightly_derm.models.imagenet`);
- ``"<family>:<name>"`` for a ``backbone`` family that a plugin registers.

The families are ``backbone`` components of the registry (``lightly-derm plugins
--kind backbone``). Weights only come from local files, state dicts or the named
weights of locally installed packages; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from lightly_derm.models.checkpoints import extract_backbone_state_dict, state_dict_fit
from lightly_derm.models.resnets import RESNET_SPECS
from lightly_derm.utils.validation import check_int

#: Short names for ``family:name`` backbones.
BACKBONE_ALIASES: dict[str, str] = {
    "efficientnet-lite0": "timm:tf_efficientnet_lite0",
}
#: The family of a backbone name without ``family:``.
DEFAULT_FAMILY = "torchvision"

#: The torchvision ResNet constructors lightly-derm accepts by name.
RESNETS: tuple[str, ...] = tuple(RESNET_SPECS)

#: The stems of the torchvision ResNets: ``"imagenet"`` (torchvision's 7 × 7 stride-2
#: ``conv1`` and 3 × 3 stride-2 max-pool, the image side / 4 after the stem) and
#: ``"cifar"`` (a 3 × 3 stride-1 ``conv1`` and no max-pool, full resolution).
STEMS: tuple[str, ...] = ("imagenet", "cifar")
#: The backbone name suffix of the CIFAR-style stem: ``"resnet18-cifar"``.
CIFAR_SUFFIX = "-cifar"
#: Images smaller than this side (px) get the CIFAR-style stem from
#: :func:`default_stem`: with the ImageNet stem ``layer4`` sees side / 32, which is
#: below 2 × 2 there.
SMALL_INPUT_SIZE = 64


def default_stem(input_size: int) -> str:
    """The ResNet stem for images of side ``input_size``: ``"cifar"`` below :data:`SMALL_INPUT_SIZE`.

    Raises:
        ValueError: ``input_size`` is not an integer >= 1.

    Example:
        >>> from lightly_derm.models import default_stem
        >>> default_stem(28), default_stem(64), default_stem(224)
        ('cifar', 'imagenet', 'imagenet')
    """
    check_int("input_size", input_size)
    return "cifar" if input_size < SMALL_INPUT_SIZE else "imagenet"


def split_resnet_stem(name: str) -> tuple[str, str]:
    """Splits a ResNet name into the torchvision name and its stem.

    Example:
        >>> from lightly_derm.models import split_resnet_stem
        >>> split_resnet_stem("resnet18-cifar"), split_resnet_stem("resnet50")
        (('resnet18', 'cifar'), ('resnet50', 'imagenet'))
    """
    if name.endswith(CIFAR_SUFFIX):
        return name[: -len(CIFAR_SUFFIX)], "cifar"
    return name, "imagenet"


def backbone_for_input_size(name: str, input_size: int) -> str:
    """The backbone name to use for images of side ``input_size``.

    A torchvision ResNet name without a stem (``"resnet18"``) gets the suffix
    ``"-cifar"`` when :func:`default_stem` chooses the CIFAR-style stem; every other
    name (a stem already chosen, another family) is returned as it is.

    Example:
        >>> from lightly_derm.models import backbone_for_input_size
        >>> backbone_for_input_size("resnet18", 28), backbone_for_input_size("resnet18", 224)
        ('resnet18-cifar', 'resnet18')
        >>> backbone_for_input_size("timm:convnext_atto", 28)
        'timm:convnext_atto'
    """
    family, model = split_backbone_name(name)
    if family != DEFAULT_FAMILY or model not in RESNETS:
        return name
    return name + CIFAR_SUFFIX if default_stem(input_size) == "cifar" else name


def cifar_stem(model: torchvision.models.ResNet) -> torchvision.models.ResNet:
    """Gives a torchvision ResNet the CIFAR-style stem, in place; returns it.

    ``conv1`` becomes a new 3 × 3 stride-1 convolution (Kaiming-initialised as
    torchvision initialises its own, same input channels and width) and ``maxpool``
    ``nn.Identity``, as in the ResNets of He et al. (2016) for CIFAR-10 and the CIFAR
    models of lightly's benchmarks. The module names stay torchvision's, so the state
    dict differs only in the shape of ``conv1.weight`` (``(64, 3, 3, 3)``).

    Example:
        >>> import torch, torchvision
        >>> from lightly_derm.models import cifar_stem
        >>> model = cifar_stem(torchvision.models.resnet18())
        >>> model.layer4(model.layer3(model.layer2(model.layer1(model.maxpool(
        ...     model.relu(model.bn1(model.conv1(torch.randn(1, 3, 28, 28))))))))).shape
        torch.Size([1, 512, 4, 4])
    """
    old = model.conv1
    model.conv1 = nn.Conv2d(
        old.in_channels,
        old.out_channels,
        kernel_size=3,
        stride=1,
        padding=1,
        bias=False,
    )
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def resnet(
    name: str = "resnet50",
    weights: str | Path | Mapping[str, Tensor] | None = None,
    strict: bool = True,
    stem: str | None = None,
) -> torchvision.models.ResNet:
    """Creates a torchvision ResNet without classifier, optionally with local weights.

    Args:
        name: A torchvision ResNet constructor, one of :data:`RESNETS`, optionally with
            the stem suffix ``"-cifar"`` (``"resnet18-cifar"``).
        weights: A local checkpoint path or state dict in any format that
            :func:`~lightly_derm.models.checkpoints.extract_backbone_state_dict`
            understands (torchvision ResNet, backbone, lightly-derm Lightning
            checkpoint, lightly ``nn.Sequential`` backbone). Never downloaded.
        strict: Raise when a backbone key is missing or unexpected.
        stem: ``"imagenet"`` (torchvision's) or ``"cifar"`` (:func:`cifar_stem`, for
            images below :data:`SMALL_INPUT_SIZE` px); default the name's
            (``"-cifar"``), else ``"imagenet"``.

    Returns:
        The ResNet with ``fc = nn.Identity()``; it maps (B, 3, H, W) images to
        (B, :func:`feature_dim`) features. ``model.feature_dim`` holds that width and
        ``model.stem`` the stem.

    Raises:
        ValueError: ``name`` is not a known ResNet, ``stem`` is unknown or contradicts
            the name, or the weights do not fit.

    Example:
        >>> import torch
        >>> from lightly_derm.models import resnet
        >>> backbone = resnet("resnet18")
        >>> backbone(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 512])
        >>> resnet("resnet18-cifar").conv1
        Conv2d(3, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
    """
    arch, named_stem = split_resnet_stem(name)
    if arch not in RESNETS:
        raise ValueError(
            f"backbone {name!r} is not a known ResNet; choose one of {', '.join(RESNETS)}"
            f" (optionally with {CIFAR_SUFFIX!r} for the small-image stem)"
        )
    if stem is not None and stem not in STEMS:
        raise ValueError(f"stem must be one of {', '.join(STEMS)}, got {stem!r}")
    if stem is not None and name.endswith(CIFAR_SUFFIX) and stem != named_stem:
        raise ValueError(
            f"stem={stem!r} contradicts the backbone name {name!r}; pass one of them"
        )
    stem = stem or named_stem
    model: torchvision.models.ResNet = getattr(torchvision.models, arch)(weights=None)
    if stem == "cifar":
        cifar_stem(model)
    width = model.fc.in_features
    model.fc = nn.Identity()
    model.feature_dim = width  # type: ignore[assignment]
    model.stem = stem  # type: ignore[assignment]
    if weights is not None:
        load_backbone_weights(model, weights, strict=strict)
    return model


def torchvision_backbone(
    name: str, stem: str | None = None
) -> torchvision.models.ResNet:
    """The ``torchvision`` backbone family: a torchvision ResNet by name (:func:`resnet`).

    ``name`` may end in ``"-cifar"``, or ``stem="cifar"`` chooses the small-image stem
    (``build_backbone("resnet18", stem="cifar")``).
    """
    return resnet(name, stem=stem)


def split_backbone_name(name: str) -> tuple[str, str]:
    """Splits a backbone name into its family and the family's model name.

    Aliases (:data:`BACKBONE_ALIASES`) are resolved first; a name without ``family:``
    is a torchvision name.

    Example:
        >>> from lightly_derm.models import split_backbone_name
        >>> split_backbone_name("resnet50"), split_backbone_name("timm:convnext_tiny")
        (('torchvision', 'resnet50'), ('timm', 'convnext_tiny'))
        >>> split_backbone_name("efficientnet-lite0")
        ('timm', 'tf_efficientnet_lite0')
    """
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"backbone must be a non-empty name, got {name!r}")
    name = BACKBONE_ALIASES.get(name.strip(), name.strip())
    family, sep, model = name.partition(":")
    if not sep:
        return DEFAULT_FAMILY, name
    if not family or not model:
        raise ValueError(
            f"backbone {name!r} must look like 'family:model', e.g. 'timm:convnext_tiny'"
        )
    return family, model


def check_backbone_name(name: str) -> str:
    """Checks a backbone name without building the network; returns ``family:model``.

    For configuration checks before a run (the command line): the family must be
    registered, and for the built-in families the model must exist (a torchvision
    ResNet, a MONAI EfficientNet, a timm model). Plugin families are checked when the
    backbone is built.

    Raises:
        ValueError: The family or the model is unknown (the message lists choices).
        ImportError: A timm name without timm installed.

    Example:
        >>> from lightly_derm.models import check_backbone_name
        >>> check_backbone_name("resnet50"), check_backbone_name("efficientnet-lite0")
        ('torchvision:resnet50', 'timm:tf_efficientnet_lite0')
    """
    from lightly_derm import registry

    family, model = split_backbone_name(name)
    if ("backbone", family) not in registry:
        raise ValueError(
            f"backbone {name!r}: unknown backbone family {family!r}; the families are "
            f"{', '.join(registry.names('backbone'))} (or a torchvision ResNet name: "
            f"{', '.join(RESNETS)})"
        )
    if family == "torchvision" and split_resnet_stem(model)[0] not in RESNETS:
        raise ValueError(
            f"backbone {name!r} is not a known ResNet nor 'family:model' (e.g. "
            f"'timm:convnext_tiny', 'monai:efficientnet-b0', 'efficientnet-lite0'); "
            f"ResNets: {', '.join(RESNETS)} (each also with {CIFAR_SUFFIX!r}, the "
            "small-image stem)"
        )
    if family == "monai":
        from lightly_derm.models.monai_backbones import MONAI_EFFICIENTNETS

        if model not in MONAI_EFFICIENTNETS:
            raise ValueError(
                f"backbone {name!r} is not a MONAI EfficientNet; choose one of "
                f"{', '.join(MONAI_EFFICIENTNETS)}"
            )
    if family == "timm":
        from lightly_derm.models.timm_backbones import import_timm

        if not import_timm().is_model(model):
            raise ValueError(f"backbone {name!r} is not a timm model")
    return f"{family}:{model}"


def build_backbone(
    name: str,
    weights: str | Path | Mapping[str, Tensor] | None = None,
    strict: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Creates a backbone by name, optionally with local or named weights.

    Args:
        name: ``"resnet50"``, ``"monai:efficientnet-b0"``, ``"timm:convnext_tiny"``,
            ``"efficientnet-lite0"``, ... (see the module docstring).
        weights: A local checkpoint path or state dict in any format that
            :func:`~lightly_derm.models.extract_backbone_state_dict` understands, or a
            named weight set such as ``"imagenet:efficientnet-lite0"``
            (:data:`~lightly_derm.models.imagenet.NAMED_WEIGHTS`). Never downloaded.
        strict: Raise when a backbone key is missing or unexpected.
        **kwargs: Passed to the family's factory (e.g. ``img_size=64`` for a timm ViT,
            ``stem="cifar"`` for a torchvision ResNet, the same as the name
            ``"resnet18-cifar"``).

    Returns:
        The backbone, mapping (B, 3, H, W) images to (B, ``model.feature_dim``)
        features.

    Raises:
        ValueError: The family or the model is unknown, or the weights do not fit.
        ImportError: The family's library is not installed (the message names the
            extra to install).

    Example:
        >>> import torch
        >>> from lightly_derm.models import build_backbone
        >>> model = build_backbone("timm:convnext_atto")
        >>> model(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 320])
    """
    from lightly_derm import registry
    from lightly_derm.plugins.errors import UnknownComponentError

    family, model_name = split_backbone_name(name)
    try:
        factory = registry.get("backbone", family)
    except UnknownComponentError as exc:
        raise ValueError(
            f"backbone {name!r}: unknown backbone family {family!r}; the families are "
            f"{', '.join(registry.names('backbone'))} (or a torchvision ResNet name: "
            f"{', '.join(RESNETS)})"
        ) from exc
    model: nn.Module = factory(model_name, **kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"backbone family {family!r} returned {type(model).__name__}, not an nn.Module"
        )
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
    fit = state_dict_fit(model.state_dict(), state)
    mismatched, missing, unexpected = fit.mismatched, fit.missing, fit.unexpected
    if mismatched:
        raise ValueError(
            "backbone weights do not fit the model (another architecture?): "
            + "; ".join(mismatched[:5])
            + (f"; and {len(mismatched) - 5} more" if len(mismatched) > 5 else "")
        )
    if strict and (missing or unexpected):
        raise ValueError(
            f"backbone weights do not match the model: {len(missing)} missing keys "
            f"{list(missing[:5])}, {len(unexpected)} unexpected keys "
            f"{list(unexpected[:5])}"
        )
    model.load_state_dict(state, strict=False)
    return list(missing), list(unexpected)
