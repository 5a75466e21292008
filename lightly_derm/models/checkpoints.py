"""Reads backbone state dicts out of the checkpoint formats users have.

Builds on :func:`torch.load` with ``weights_only=True`` (no pickled code runs) and on
the torchvision ResNet key names. Understood formats:

- a lightly-derm (or any) Lightning checkpoint: ``{"state_dict": {"backbone.conv1.weight": …}}``;
- a backbone state dict with torchvision names (``conv1``, ``bn1``, ``layer1`` … ``layer4``);
- a full torchvision ResNet state dict (``fc.*`` is dropped);
- lightly's examples' ``nn.Sequential(*list(resnet.children())[:-1])`` backbone, whose
  keys are numbered (``0.weight`` is ``conv1.weight``, ``4.0.conv1.weight`` is
  ``layer1.0.conv1.weight``);
- any of these behind the prefixes ``module.`` (DDP) or ``_orig_mod.`` (torch.compile);
- a named weight set instead of a path, e.g. ``"imagenet:efficientnet-lite0"``
  (:data:`~lightly_derm.models.imagenet.NAMED_WEIGHTS`, read from a locally installed package).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

#: Children of a torchvision ResNet in order, as numbered by ``nn.Sequential``.
_RESNET_CHILDREN = (
    "conv1",
    "bn1",
    "relu",
    "maxpool",
    "layer1",
    "layer2",
    "layer3",
    "layer4",
)
#: Prefixes that wrap a whole model's keys.
_WRAPPERS = ("module.", "_orig_mod.")
#: Prefixes under which a Lightning module may hold its backbone, most specific first.
BACKBONE_PREFIXES = ("backbone.", "model.backbone.", "encoder.", "model.encoder.")
_TORCHVISION_KEY = re.compile(r"^(conv1|bn1|layer[1-4])\.")


def load_checkpoint_file(path: str | Path) -> Mapping[str, Any]:
    """Loads a checkpoint file with ``torch.load(weights_only=True)`` on the CPU.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not a PyTorch checkpoint or holds more than tensors and
            plain containers (``weights_only`` refuses to run pickled code).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"cannot read checkpoint {str(path)!r} with torch.load(weights_only=True): {exc}"
        ) from exc
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"checkpoint {str(path)!r} holds a {type(obj).__name__}, not a state dict"
        )
    return obj


def _strip(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def extract_backbone_state_dict(
    checkpoint: str | Path | Mapping[str, Any],
) -> dict[str, Tensor]:
    """Returns the backbone weights of ``checkpoint`` with torchvision ResNet key names.

    Args:
        checkpoint: A path (loaded with ``weights_only=True``), a named weight set
            (``"imagenet:efficientnet-lite0"``), or an already loaded checkpoint or
            state dict in one of the formats of this module.

    Returns:
        A state dict whose keys start with ``conv1.``, ``bn1.`` or ``layer1.`` …
        ``layer4.`` for ResNets; other backbones' keys pass through unchanged.

    Raises:
        ValueError: No backbone weights can be found; the message lists a few keys.

    Example:
        >>> import torchvision
        >>> from lightly_derm.models import extract_backbone_state_dict
        >>> state = torchvision.models.resnet18().state_dict()
        >>> sorted(extract_backbone_state_dict(state))[:2]
        ['bn1.bias', 'bn1.num_batches_tracked']
    """
    if isinstance(checkpoint, str) and not Path(checkpoint).exists():
        from lightly_derm.models.imagenet import named_weights

        named = named_weights(checkpoint)
        if named is not None:
            return named.load()
        if checkpoint.lower().startswith("imagenet:"):
            from lightly_derm.models.imagenet import NAMED_WEIGHTS

            raise ValueError(
                f"unknown named weights {checkpoint!r}; the named weights are "
                f"{', '.join(NAMED_WEIGHTS)} (ImageNet weights of other backbones: pass "
                "a local file)"
            )
    obj: Mapping[str, Any] = (
        load_checkpoint_file(checkpoint)
        if isinstance(checkpoint, (str, Path))
        else checkpoint
    )
    if not isinstance(obj, Mapping):
        raise TypeError(
            f"checkpoint must be a path or a mapping, got {type(obj).__name__}"
        )
    for key in ("state_dict", "model_state_dict", "model"):  # Lightning, common scripts
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise ValueError("the checkpoint holds no tensors")
    changed = True
    while changed:  # peel DDP / torch.compile wrappers, possibly nested
        changed = False
        for wrapper in _WRAPPERS:
            if all(k.startswith(wrapper) for k in state):
                state = _strip(state, wrapper)
                changed = True
    for prefix in BACKBONE_PREFIXES:
        inner = _strip(state, prefix)
        if inner:
            state = inner
            break
    if any(k.split(".", 1)[0].isdigit() for k in state) and all(
        k.split(".", 1)[0].isdigit() for k in state
    ):
        state = _renumber(state)
    if any(_TORCHVISION_KEY.match(k) for k in state):
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if not state:
        keys = sorted(obj)[:8]
        raise ValueError(
            f"no backbone weights found in the checkpoint; its keys begin {keys}"
        )
    return state


def _renumber(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Maps ``nn.Sequential`` child indices of a ResNet to torchvision names."""
    renamed = {}
    for key, value in state.items():
        index, _, rest = key.partition(".")
        i = int(index)
        if i >= len(_RESNET_CHILDREN):
            continue  # avgpool has no weights; anything later is not a backbone
        renamed[f"{_RESNET_CHILDREN[i]}.{rest}"] = value
    return renamed
