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

:func:`state_dict_fit` is the one check of whether a state dict fits a module (used
by the backbones, the methods' ``load_state_dict`` and the segmentation transfer,
which each word the answer for their context).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightly_derm.errors import CheckpointError
from lightly_derm.models.resnets import RESNET_CHILDREN

#: Prefixes that wrap a whole model's keys.
_WRAPPERS = ("module.", "_orig_mod.")
#: Prefixes under which a Lightning module may hold its backbone, most specific first.
BACKBONE_PREFIXES = ("backbone.", "model.backbone.", "encoder.", "model.encoder.")
_TORCHVISION_KEY = re.compile(r"^(conv1|bn1|layer[1-4])\.")


@dataclass(frozen=True)
class StateDictFit:
    """How a state dict fits a module's: tensors of other shapes, missing and extra keys.

    Attributes:
        mismatched: ``"key: checkpoint (shape) vs <module> (shape)"`` for each tensor
            both have in different shapes (another architecture), in the given order.
        missing: The module's keys the state dict lacks, sorted.
        unexpected: The state dict's keys the module lacks, sorted.
    """

    mismatched: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    @property
    def fits(self) -> bool:
        """Whether it loads with ``strict=True``."""
        return not (self.mismatched or self.missing or self.unexpected)


def state_dict_fit(
    own: Mapping[str, Any], theirs: Mapping[str, Any], module: str = "model"
) -> StateDictFit:
    """Compares a state dict (``theirs``) with a module's (``own``) before loading it.

    Shapes are compared first: torch's ``load_state_dict`` names only the first
    mismatched tensor and says nothing of the architecture. Entries that are not
    tensors (extra states) are compared by key only.

    Args:
        own: The module's ``state_dict()``.
        theirs: The state dict to load.
        module: What to call the module in the shape messages.

    Example:
        >>> import torch
        >>> fit = state_dict_fit(torch.nn.Linear(2, 3).state_dict(),
        ...                      torch.nn.Linear(2, 4, bias=False).state_dict())
        >>> fit.mismatched, fit.missing, fit.unexpected, fit.fits
        (('weight: checkpoint (4, 2) vs model (3, 2)',), ('bias',), (), False)
    """
    mismatched = tuple(
        f"{k}: checkpoint {tuple(v.shape)} vs {module} {tuple(own[k].shape)}"
        for k, v in theirs.items()
        if k in own
        and isinstance(v, Tensor)
        and isinstance(own[k], Tensor)
        and tuple(v.shape) != tuple(own[k].shape)
    )
    return StateDictFit(
        mismatched=mismatched,
        missing=tuple(sorted(set(own) - set(theirs))),
        unexpected=tuple(sorted(set(theirs) - set(own))),
    )


def load_checkpoint_file(path: str | Path) -> Mapping[str, Any]:
    """Loads a checkpoint file with ``torch.load(weights_only=True)`` on the CPU.

    Raises:
        FileNotFoundError: The file does not exist.
        CheckpointError: (a ``ValueError``) The file is empty, not a PyTorch
            checkpoint (corrupt or truncated), holds more than tensors and plain
            containers (``weights_only`` refuses to run pickled code: the message says
            the file was refused for carrying code or objects), or holds no mapping;
            the message names the file and the reason.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is empty (0 bytes; a save that was interrupted "
            "or a placeholder file)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise checkpoint_load_error(path, exc) from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {type(obj).__name__}, not a state dict"
        )
    return obj


def checkpoint_load_error(
    path: str | os.PathLike[str], exc: BaseException
) -> CheckpointError:
    """One line for a failed ``torch.load(weights_only=True)`` of ``path``: the reason.

    A file refused by ``weights_only`` is said to carry code or objects (naming the
    global it refers to); any other failure is a corrupt or truncated file, with the
    first sentence of torch's message.
    """
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, pickle.UnpicklingError):
        return CheckpointError(
            f"checkpoint {os.fspath(path)!r} was refused: it carries pickled code or "
            "objects, not only tensors, and lightly-derm never runs code from a "
            f"checkpoint ({_refused_global(reason) or reason.split('. ')[0]})"
        )
    return CheckpointError(
        f"checkpoint {os.fspath(path)!r} is not a readable PyTorch checkpoint "
        f"(corrupt or truncated): {type(exc).__name__}: {reason.split('. ')[0]}"
    )


def _refused_global(message: str) -> str | None:
    """The global that ``weights_only`` refused, from torch's message, if it names one."""
    match = re.search(r"(?:Unsupported global: |GLOBAL )([\w.]+)", message)
    return f"it refers to {match.group(1)}" if match else None


def check_finite_weights(state: Mapping[str, Any], source: str) -> None:
    """Refuses floating-point weights that hold NaN or inf.

    Args:
        state: A state dict (non-tensor and integer entries are ignored).
        source: What to name in the message (the file).

    Raises:
        CheckpointError: Some tensors are not finite; the message names ``source``,
            how many tensors and the first few.

    Example:
        >>> import torch
        >>> check_finite_weights({"w": torch.ones(2)}, "a.ckpt")  # finite: nothing
        >>> check_finite_weights({"w": torch.tensor([1.0, float("nan")])}, "a.ckpt")
        Traceback (most recent call last):
            ...
        lightly_derm.errors.CheckpointError: checkpoint a.ckpt has non-finite weights (NaN or inf) in 1 tensor: w; it cannot be used (a run that diverged)
    """
    bad = [
        key
        for key, value in state.items()
        if isinstance(value, Tensor)
        and value.is_floating_point()
        and not bool(torch.isfinite(value).all())
    ]
    if bad:
        shown = ", ".join(bad[:3]) + (
            f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        )
        raise CheckpointError(
            f"checkpoint {source} has non-finite weights (NaN or inf) in {len(bad)} "
            f"tensor{'s' if len(bad) > 1 else ''}: {shown}; it cannot be used (a run "
            "that diverged)"
        )


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
        CheckpointError: (a ``ValueError``) No backbone weights can be found (the
            message lists a few keys), or some are NaN or inf (a diverged run: refused,
            naming the tensors, rather than failing later inside an optimiser).

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
    source = repr(str(checkpoint)) if isinstance(checkpoint, (str, Path)) else "given"
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
        raise CheckpointError(
            f"checkpoint {source} holds no tensors"
            + (f" (its keys: {sorted(map(str, obj))[:8]})" if obj else " (it is empty)")
        )
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
        raise CheckpointError(
            f"no backbone weights found in checkpoint {source}; its keys begin {keys}"
        )
    check_finite_weights(state, source)
    return state


def _renumber(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Maps ``nn.Sequential`` child indices of a ResNet to torchvision names."""
    renamed = {}
    for key, value in state.items():
        index, _, rest = key.partition(".")
        i = int(index)
        if i >= len(RESNET_CHILDREN):
            continue  # avgpool has no weights; anything later is not a backbone
        renamed[f"{RESNET_CHILDREN[i]}.{rest}"] = value
    return renamed
