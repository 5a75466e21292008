"""Moves SSL-pretrained backbone weights into a MONAI FlexibleUNet encoder.

Builds on :func:`lightly_derm.models.extract_backbone_state_dict` (which reads
lightly-derm Lightning checkpoints, backbone and torchvision ResNet state dicts, lightly's
``nn.Sequential`` backbones and DDP/compile prefixes, files with
``torch.load(weights_only=True)``) and on MONAI's
:func:`monai.networks.utils.copy_model_state` (which copies the matching tensors and
reports the updated and unchanged keys). What it adds: shapes are checked first, so a
checkpoint of another architecture is an error that says which, not a partial copy;
strict mode names the missing and unexpected keys; and tensors that one side has and
the other has no use for are reported apart (``ignored``): the layers of an SSL
backbone after the encoder's last feature map (EfficientNet's ``conv_head`` in a timm
encoder) and the encoder's own layers that its forward never runs (the classifier
``_fc`` of MONAI's EfficientNet encoders).

Encoders: the ``lightly-derm-resnet*`` encoders (torchvision keys), MONAI's own
``efficientnet-b0`` … ``b8``/``l2`` encoders (MONAI keys, the backbone
``"monai:efficientnet-bN"``), the ``timm-<model>`` encoders (timm keys under the
encoder's ``model.``; backbone ``"timm:<model>"``), and any encoder whose keys are
those of its backbone. An encoder may declare ``backbone_prefix`` (where it holds the
backbone's tensors) and ``unused_backbone_keys`` (backbone tensors it pruned).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai.networks.nets import EfficientNetEncoder, FlexibleUNet
from monai.networks.utils import copy_model_state
from torch import Tensor, nn

from lightly_derm.models.backbones import CIFAR_SUFFIX
from lightly_derm.models.checkpoints import extract_backbone_state_dict, state_dict_fit
from lightly_derm.models.resnets import resnet_from_layout


@dataclass(frozen=True)
class EncoderTransferReport:
    """What :func:`load_ssl_encoder` copied.

    Keys are the backbone's (without the encoder's ``backbone_prefix``).

    Attributes:
        loaded: Encoder keys that now hold the checkpoint's tensors.
        missing: Encoder keys the checkpoint does not have (left as they were).
        unexpected: Checkpoint keys the encoder does not have (not used).
        ignored: Keys that one side has and the other has no use for, by design: the
            checkpoint's layers after the encoder's last feature map, encoder layers
            its forward never runs, and the layers the caller excluded (left as they
            were).
    """

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    ignored: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every encoder tensor came from the checkpoint and nothing was left over."""
        return not self.missing and not self.unexpected

    def __str__(self) -> str:
        total = len(self.loaded) + len(self.missing)
        return (
            f"loaded {len(self.loaded)} of {total} encoder tensors; "
            f"{len(self.missing)} missing {_few(self.missing)}; "
            f"{len(self.unexpected)} unexpected {_few(self.unexpected)}; "
            f"{len(self.ignored)} unused by design {_few(self.ignored)}"
        )


def _few(keys: list[str], count: int = 8) -> str:
    if not keys:
        return "[]"
    shown = ", ".join(keys[:count])
    return f"[{shown}{', ...' if len(keys) > count else ''}]"


def _encoder_of(net: Any) -> nn.Module:
    if isinstance(net, FlexibleUNet):
        return net.encoder
    inner = getattr(net, "net", None)  # LesionSegmentation and similar wrappers
    if isinstance(inner, FlexibleUNet):
        return inner.encoder
    if isinstance(net, nn.Module):
        return net
    raise TypeError(
        f"net must be a MONAI FlexibleUNet or an encoder nn.Module, got {type(net).__name__}"
    )


def _backbone_part(encoder: nn.Module) -> tuple[nn.Module, set[str], set[str]]:
    """The module holding the backbone's tensors, and the keys each side does not use."""
    prefix = getattr(encoder, "backbone_prefix", "") or ""
    target = encoder.get_submodule(prefix.rstrip(".")) if prefix else encoder
    unused_theirs = set(getattr(encoder, "unused_backbone_keys", ()) or ())
    unused_ours: set[str] = set()
    if isinstance(encoder, EfficientNetEncoder):
        # MONAI's EfficientNet encoder keeps the classifier, which its forward never runs.
        unused_ours = {k for k in target.state_dict() if k.startswith("_fc.")}
    return target, unused_theirs, unused_ours


def resnet_stage_prefixes(stages: int) -> tuple[str, ...]:
    """Key prefixes of the first ``stages`` feature stages of a torchvision ResNet.

    The stages are those a FlexibleUNet decoder reads, from the highest resolution:
    1 the stem (``conv1``, ``bn1``; stride 2), 2 ``layer1`` (stride 4), 3 ``layer2``,
    4 ``layer3``, 5 ``layer4``.

    Example:
        >>> from lightly_derm.segmentation.transfer import resnet_stage_prefixes
        >>> resnet_stage_prefixes(2)
        ('conv1.', 'bn1.', 'layer1.')
    """
    if isinstance(stages, bool) or not isinstance(stages, int) or not 0 <= stages <= 5:
        raise ValueError(f"stages must be an int in 0..5, got {stages!r}")
    names = [("conv1.", "bn1."), *((f"layer{i}.",) for i in range(1, 5))]
    return tuple(p for stage in names[:stages] for p in stage)


def describe_resnet(state: Mapping[str, Tensor]) -> str | None:
    """Names the torchvision ResNet a backbone state dict belongs to, if it is one.

    A ResNet with the small-image stem (3 × 3 ``conv1``) is named with its suffix,
    ``"resnet18-cifar"``, as its backbone is (:func:`lightly_derm.models.resnet`).

    Example:
        >>> import torchvision
        >>> from lightly_derm.segmentation.transfer import describe_resnet
        >>> describe_resnet(torchvision.models.resnet34().state_dict())
        'resnet34'
        >>> from lightly_derm.models import resnet
        >>> describe_resnet(resnet("resnet18", stem="cifar").state_dict())
        'resnet18-cifar'
    """
    blocks = []
    for stage in range(1, 5):
        prefix = f"layer{stage}."
        indices = {
            k[len(prefix) :].split(".", 1)[0] for k in state if k.startswith(prefix)
        }
        blocks.append(len(indices))
    bottleneck = any(".conv3." in k for k in state)
    first = state.get("layer1.0.conv1.weight")
    width = int(first.shape[0]) if isinstance(first, Tensor) and first.ndim else 0
    name = resnet_from_layout(tuple(blocks), bottleneck, width)
    stem = state.get("conv1.weight")
    if name and isinstance(stem, Tensor) and stem.ndim == 4 and stem.shape[-1] == 3:
        name += CIFAR_SUFFIX  # the small-image stem's 3 x 3 conv1
    return name


def load_ssl_encoder(
    net: nn.Module,
    checkpoint: str | Path | Mapping[str, Any],
    strict: bool = True,
    exclude: Sequence[str] = (),
) -> EncoderTransferReport:
    """Loads SSL backbone weights into the encoder of a MONAI FlexibleUNet.

    Args:
        net: A ``FlexibleUNet`` (its ``encoder`` is loaded), a module that holds one as
            ``net`` (:class:`~lightly_derm.segmentation.LesionSegmentation`), or an
            encoder module itself (see the module docstring).
        checkpoint: A file path (read with ``torch.load(weights_only=True)``), named
            weights (``"imagenet:efficientnet-lite0"``) or a loaded mapping: a
            lightly-derm Lightning checkpoint (``state_dict`` with ``backbone.*``
            keys), a backbone state dict (torchvision, MONAI or timm keys), a full
            torchvision ResNet state dict, or a lightly-example ``nn.Sequential``
            ResNet backbone (numbered keys).
        strict: Raise when an encoder key is missing from the checkpoint or the
            checkpoint has keys the encoder lacks. When ``False``, the matching tensors
            are copied and the rest reported.
        exclude: Backbone key prefixes not to copy (``("conv1.", "bn1.")``; see
            :func:`resnet_stage_prefixes`): those encoder layers keep the values they
            have, e.g. their random initialisation, and are reported as ``ignored``.

    Returns:
        An :class:`EncoderTransferReport` of the loaded, missing and unexpected keys.

    Raises:
        FileNotFoundError: The checkpoint file does not exist.
        ValueError: The checkpoint cannot be read or holds no backbone; its tensors have
            other shapes than the encoder's (another architecture, named when it is a
            torchvision ResNet); in strict mode, keys are missing or unexpected (named);
            no key matches at all.
        TypeError: ``net`` is not a module.

    Example:
        >>> import torchvision
        >>> import lightly_derm.segmentation
        >>> from monai.networks.nets import EfficientNetEncoder, FlexibleUNet
        >>> from lightly_derm.segmentation import load_ssl_encoder
        >>> net = FlexibleUNet(3, 1, backbone="lightly-derm-resnet18")
        >>> report = load_ssl_encoder(net, torchvision.models.resnet18().state_dict())
        >>> report.complete
        True
    """
    encoder = _encoder_of(net)
    target, unused_theirs, unused_ours = _backbone_part(encoder)
    state = extract_backbone_state_dict(checkpoint)
    own = target.state_dict()
    prefixes = tuple(exclude)
    if prefixes:
        unused_theirs = unused_theirs | {k for k in state if k.startswith(prefixes)}
        unused_ours = unused_ours | {k for k in own if k.startswith(prefixes)}
    ignored = sorted(k for k in state if k in unused_theirs)
    state = {k: v for k, v in state.items() if k not in unused_theirs}
    ignored += sorted(k for k in unused_ours if k not in state)
    own = {k: v for k, v in own.items() if k in state or k not in unused_ours}
    source = (
        repr(str(checkpoint))
        if isinstance(checkpoint, (str, Path))
        else "the checkpoint"
    )
    fit = state_dict_fit(own, state, module="encoder")
    mismatched, missing, unexpected = (
        fit.mismatched,
        list(fit.missing),
        list(fit.unexpected),
    )
    if mismatched:
        theirs, ours = describe_resnet(state), describe_resnet(own)
        hint = ""
        if theirs and theirs != ours:
            hint = (
                f" {source} holds a {theirs} and the encoder is a {ours or 'different network'};"
                f" use backbone='lightly-derm-{theirs}'."
            )
        raise ValueError(
            f"the weights in {source} do not fit the encoder {type(encoder).__name__}: "
            f"{len(mismatched)} tensors differ in shape ({'; '.join(mismatched[:4])}"
            f"{'; ...' if len(mismatched) > 4 else ''}).{hint}"
        )
    if not set(own) & set(state):
        raise ValueError(
            f"no tensor in {source} matches the encoder {type(encoder).__name__}: the "
            f"checkpoint's backbone keys begin {sorted(state)[:4]}, the encoder's "
            f"{sorted(own)[:4]}"
        )
    if strict and (missing or unexpected):
        theirs, ours = describe_resnet(state), describe_resnet(own)
        hint = (
            f" {source} holds a {theirs}: use backbone='lightly-derm-{theirs}'."
            if theirs and theirs != ours
            else ""
        )
        raise ValueError(
            f"{source} does not match the encoder {type(encoder).__name__} (strict=True): "
            f"{len(missing)} encoder keys missing from the checkpoint {_few(missing)}, "
            f"{len(unexpected)} unexpected checkpoint keys {_few(unexpected)}; pass "
            f"strict=False to load the matching tensors.{hint}"
        )
    # copy_model_state logs its own one-line summary at INFO to stdout; the report
    # replaces it.
    monai_logger = logging.getLogger("monai.networks.utils")
    level = monai_logger.level
    monai_logger.setLevel(logging.WARNING)
    try:
        _, loaded, _ = copy_model_state(target, state, inplace=True)
    finally:
        monai_logger.setLevel(level)
    return EncoderTransferReport(
        loaded=sorted(loaded),
        missing=missing,
        unexpected=unexpected,
        ignored=sorted(set(ignored)),
    )
