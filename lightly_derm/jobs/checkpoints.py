"""Finding a run's checkpoint and loading the pretrained backbone from it.

Builds on :func:`lightly_derm.models.extract_backbone_state_dict` (every checkpoint format
lightly-derm reads, ``torch.load(weights_only=True)``), :func:`lightly_derm.models.resnet`
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

from lightly_derm.errors import CheckpointError
from lightly_derm.jobs.callbacks import LAST_CHECKPOINT
from lightly_derm.jobs.config import load_yaml_mapping
from lightly_derm.jobs.trainer import CHECKPOINT_DIR
from lightly_derm.models.backbones import RESNETS, resnet
from lightly_derm.models.checkpoints import (
    extract_backbone_state_dict,
    load_checkpoint_file,
)

#: The backbone state dict a pretraining run writes (torchvision key names).
BACKBONE_FILE = "backbone.pt"
#: The effective configuration a job writes into its output folder.
CONFIG_FILE = "config.yaml"


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
    """The ResNet name of a checkpoint's backbone, or ``None`` when it cannot be told.

    In this order: the Lightning hyperparameter ``backbone`` (a name), the run's
    ``config.yaml``, the layer layout of the tensors
    (:func:`~lightly_derm.segmentation.describe_resnet`).

    Args:
        checkpoint: A checkpoint file or a loaded checkpoint.
        loaded: The loaded file, when the caller has it already.
        state: The backbone state dict, when the caller has it already.
    """
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
        if isinstance(hparams, Mapping) and hparams.get("backbone") in RESNETS:
            return str(hparams["backbone"])
    if not isinstance(checkpoint, Mapping):
        config = run_config(checkpoint)
        if config and config.get("backbone") in RESNETS:
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
    """The pretrained ResNet backbone of a checkpoint (file or run folder).

    Args:
        checkpoint: A Lightning checkpoint of any lightly-derm method, a backbone or
            torchvision state dict, a lightly ``nn.Sequential`` backbone, or a run
            folder (see :func:`find_checkpoint`).
        backbone: The ResNet name; default: found from the checkpoint
            (:func:`backbone_name`).

    Returns:
        The backbone (``fc = Identity``, torchvision key names) and its name.

    Raises:
        FileNotFoundError: No checkpoint there.
        ValueError: The checkpoint holds no backbone, its architecture cannot be told
            (pass ``backbone``), or its tensors do not fit ``backbone``.

    Example:
        >>> from lightly_derm.jobs import load_backbone
        >>> model, name = load_backbone("runs/demo")  # doctest: +SKIP
    """
    path = find_checkpoint(checkpoint)
    loaded = load_checkpoint_file(path)
    state = extract_backbone_state_dict(loaded)
    name = backbone or backbone_name(path, loaded=loaded, state=state)
    if name is None:
        raise ValueError(
            f"cannot tell which ResNet the backbone in {path} is; pass the backbone "
            f"name ({', '.join(RESNETS)})"
        )
    return resnet(name, weights=state), name
