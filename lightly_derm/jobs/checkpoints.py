"""Finding a run's checkpoint and loading the pretrained backbone from it.

Builds on :func:`lightly_derm.models.extract_backbone_state_dict` (every checkpoint format
lightly-derm reads, ``torch.load(weights_only=True)``), :func:`lightly_derm.models.build_backbone`
and :func:`lightly_derm.segmentation.describe_resnet`. What it adds: a run folder can be
given instead of a file, and the backbone's architecture is found from the checkpoint
(its hyperparameters, the run's ``config.yaml``, or the shapes of its tensors) so the
user does not have to repeat it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from lightly_derm.callbacks import LAST_CHECKPOINT
from lightly_derm.errors import CheckpointError
from lightly_derm.jobs.config import load_yaml_mapping
from lightly_derm.jobs.trainer import CHECKPOINT_DIR
from lightly_derm.models.backbones import (
    CIFAR_SUFFIX,
    RESNETS,
    build_backbone,
    check_backbone_name,
    split_backbone_name,
)
from lightly_derm.models.checkpoints import (
    extract_backbone_state_dict,
    load_checkpoint_file,
)
from lightly_derm.models.imagenet import input_normalization, named_weights

#: The backbone state dict a pretraining run writes (torchvision key names).
BACKBONE_FILE = "backbone.pt"
#: The effective configuration a job writes into its output folder.
CONFIG_FILE = "config.yaml"


def is_backbone_name(name: Any) -> bool:
    """Whether ``name`` is a backbone name :func:`~lightly_derm.models.build_backbone` takes.

    Example:
        >>> from lightly_derm.jobs.checkpoints import is_backbone_name
        >>> is_backbone_name("resnet18-cifar"), is_backbone_name("efficientnet-lite0")
        (True, True)
        >>> is_backbone_name("resnet19"), is_backbone_name(None)
        (False, False)
    """
    if not isinstance(name, str) or not name.strip():
        return False
    try:
        check_backbone_name(name)
    except (ValueError, ImportError):
        return False
    return True


def with_checkpoint_stem(name: str, state: Mapping[str, Any]) -> str:
    """``name`` with the stem suffix ``"-cifar"`` when the weights have that stem.

    A torchvision ResNet name without a stem (``"resnet18"``) whose weights have a
    3 × 3 ``conv1`` (the small-image stem of :func:`~lightly_derm.models.cifar_stem`)
    becomes ``"resnet18-cifar"``; every other name is returned as it is.
    """
    family, model = split_backbone_name(name)
    if family != "torchvision" or model not in RESNETS:
        return name
    conv1 = state.get("conv1.weight")
    shape = getattr(conv1, "shape", None)
    if shape is not None and len(shape) == 4 and tuple(shape[-2:]) == (3, 3):
        return name + CIFAR_SUFFIX
    return name


def is_named_weights(checkpoint: Any) -> bool:
    """Whether ``checkpoint`` names weights (``"imagenet:efficientnet-lite0"``), not a file."""
    return (
        isinstance(checkpoint, str)
        and not Path(checkpoint).expanduser().exists()
        and named_weights(checkpoint) is not None
    )


def checkpoint_normalization(
    checkpoint: str | os.PathLike[str],
) -> dict[str, list[float]]:
    """The input normalisation the backbone of ``checkpoint`` was trained with.

    Named weights give their own (:func:`~lightly_derm.models.input_normalization`);
    a pretraining run started from named weights (its ``config.yaml`` has
    ``backbone_weights: imagenet:efficientnet-lite0``) gives theirs too, because
    ``pretrain`` feeds the backbone that scaling; anything else the ImageNet mean and
    standard deviation.

    Example:
        >>> from lightly_derm.jobs.checkpoints import checkpoint_normalization
        >>> checkpoint_normalization("imagenet:efficientnet-lite0")["std"][0] == 128 / 255
        True
    """
    if is_named_weights(checkpoint):
        return input_normalization(checkpoint)
    config = run_config(checkpoint) or {}
    return input_normalization(config.get("backbone_weights"))


def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file of ``path``: the file itself, or a run folder's.

    A run folder (a ``lightly-derm pretrain`` output) gives its ``backbone.pt``, else
    its ``checkpoints/last.ckpt``.

    Raises:
        FileNotFoundError: Nothing there, or a folder without a checkpoint (named).
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    candidates = [path / BACKBONE_FILE, path / CHECKPOINT_DIR / LAST_CHECKPOINT]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no checkpoint in the folder {path} (looked for "
        f"{', '.join(str(c.relative_to(path)) for c in candidates)})"
    )


def run_folder(checkpoint: str | os.PathLike[str]) -> Path | None:
    """The run folder (with a ``config.yaml``) a checkpoint or folder belongs to, or ``None``."""
    path = Path(checkpoint).expanduser()
    folder = path if path.is_dir() else path.parent
    for candidate in (folder, folder.parent):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    return None


def run_config(checkpoint: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``config.yaml`` of the run a checkpoint belongs to, or ``None``.

    Looks beside the file, one folder up (``checkpoints/``), and in a given folder.
    """
    path = Path(checkpoint).expanduser()
    folders = [path] if path.is_dir() else [path.parent, path.parent.parent]
    for folder in folders:
        config = folder / CONFIG_FILE
        if config.is_file():
            try:
                return load_yaml_mapping(config)
            except ValueError:
                return None
    return None


def backbone_name(
    checkpoint: str | os.PathLike[str] | Mapping[str, Any],
    loaded: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
) -> str | None:
    """The backbone name of a checkpoint, or ``None`` when it cannot be told.

    In this order: the Lightning hyperparameter ``backbone`` (any name
    :func:`~lightly_derm.models.check_backbone_name` accepts: a torchvision ResNet,
    ``"monai:efficientnet-b0"``, ``"timm:convnext_tiny"``, ``"efficientnet-lite0"``),
    the run's ``config.yaml``, the layer layout of the tensors (ResNets only,
    :func:`~lightly_derm.segmentation.describe_resnet`). Named weights
    (``"imagenet:efficientnet-lite0"``) give the backbone they fit.

    Args:
        checkpoint: A checkpoint file or a loaded checkpoint.
        loaded: The loaded file, when the caller has it already.
        state: The backbone state dict, when the caller has it already.
    """
    if isinstance(checkpoint, str) and not Path(checkpoint).exists():
        named = named_weights(checkpoint)
        if named is not None:
            return named.backbone
    if isinstance(checkpoint, Mapping):
        loaded = checkpoint
    elif loaded is None:
        try:
            loaded = load_checkpoint_file(Path(checkpoint))
        except CheckpointError:
            raise  # refused (corrupt, carrying code): the reason, not "cannot tell"
        except (FileNotFoundError, ValueError):
            loaded = None
    if loaded is not None:
        hparams = loaded.get("hyper_parameters")
        if isinstance(hparams, Mapping) and is_backbone_name(hparams.get("backbone")):
            return str(hparams["backbone"])
    if not isinstance(checkpoint, Mapping):
        config = run_config(checkpoint)
        if config and is_backbone_name(config.get("backbone")):
            return str(config["backbone"])
    if state is None:
        try:
            state = extract_backbone_state_dict(
                loaded if loaded is not None else checkpoint  # type: ignore[arg-type]
            )
        except (FileNotFoundError, TypeError, ValueError):
            return None
    from lightly_derm.segmentation.transfer import describe_resnet

    return describe_resnet(state)


def load_backbone(
    checkpoint: str | os.PathLike[str],
    backbone: str | None = None,
) -> tuple[nn.Module, str]:
    """The pretrained backbone of a checkpoint (file, run folder or named weights).

    Built with :func:`~lightly_derm.models.build_backbone`, so any backbone family
    works. A torchvision ResNet named without a stem gets the stem of its weights
    (:func:`with_checkpoint_stem`).

    Args:
        checkpoint: A Lightning checkpoint of any lightly-derm method, a backbone or
            torchvision state dict, a lightly ``nn.Sequential`` backbone, a run folder
            (see :func:`find_checkpoint`), or named weights
            (``"imagenet:efficientnet-lite0"``).
        backbone: The backbone name; default: found from the checkpoint
            (:func:`backbone_name`).

    Returns:
        The backbone (classifier removed, lightly-derm key names) and its name.

    Raises:
        FileNotFoundError: No checkpoint there.
        ValueError: The checkpoint holds no backbone, its architecture cannot be told
            (pass ``backbone``), or its tensors do not fit ``backbone``.

    Example:
        >>> from lightly_derm.jobs import load_backbone
        >>> model, name = load_backbone("runs/demo")  # doctest: +SKIP
    """
    named = (
        named_weights(os.fspath(checkpoint))
        if not Path(checkpoint).expanduser().exists()
        else None
    )
    if named is not None:
        chosen = backbone or named.backbone
        return build_backbone(chosen, weights=named.name), chosen
    path = find_checkpoint(checkpoint)
    loaded = load_checkpoint_file(path)
    state = extract_backbone_state_dict(loaded)
    found = backbone or backbone_name(path, loaded=loaded, state=state)
    if found is None:
        raise ValueError(
            f"cannot tell which backbone is in {path}; pass the backbone name (a "
            f"ResNet: {', '.join(RESNETS)}, or e.g. 'efficientnet-lite0', "
            "'monai:efficientnet-b0', 'timm:convnext_tiny')"
        )
    name = with_checkpoint_stem(found, state)
    return build_backbone(name, weights=state), name
