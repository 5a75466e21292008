"""The interface every lightly-derm pretraining method offers.

Builds on :class:`pytorch_lightning.LightningModule`. The command line, evaluation and
the segmentation transfer rely on these members only, so any ``method`` plugin that
subclasses :class:`SSLMethod` works with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch import Tensor, nn

from lightly_derm._version import __version__
from lightly_derm.data.grouped_view_collate import GroupedViewCollate
from lightly_derm.models.backbones import feature_dim, resnet

#: Key of the checkpoint entry that names the method which wrote it.
CHECKPOINT_KEY = "lightly_derm"


class SSLMethod(pl.LightningModule):
    """Base class of the pretraining methods: a backbone plus what feeds it.

    Conventions every method follows:

    - ``self.backbone`` is the encoder being trained, mapping (B, C, H, W) images to
      (B, ``feature_dim``) features; for ResNets its state-dict keys are torchvision's
      (``conv1``, ``bn1``, ``layer1`` … ``layer4``), so the checkpoint's ``backbone.*``
      weights move into MONAI encoders and torchvision models.
    - :meth:`default_transform` gives the view transform of the method's data, and
      :meth:`default_collate` the collate function; ``training_step`` accepts its
      output and lightly's ``MultiViewCollate`` output (see
      :func:`~lightly_derm.data.to_grouped_batch`).
    - The total training loss is logged as ``train_loss``; parts as ``train_loss_<part>``.
    - Checkpoints name the method that wrote them (``checkpoint["lightly_derm"]``), and
      :meth:`load_state_dict` refuses a state dict of another method or architecture
      with a :class:`ValueError` that names both and the keys that do not fit, instead
      of torch's ``RuntimeError`` (Lightning's ``fit(ckpt_path=...)`` and
      ``load_from_checkpoint`` both load through it).

    Args:
        backbone: A torchvision ResNet name (see :data:`~lightly_derm.models.RESNETS`) or
            any module mapping images to features.
        backbone_weights: Local checkpoint path or state dict to initialise a named
            ResNet from (never downloaded).

    Attributes:
        ddp_find_unused_parameters: Whether a training step leaves parameters without
            gradient, so that DDP must be told
            (``DDPStrategy(find_unused_parameters=method.ddp_find_unused_parameters)``,
            which code building a Trainer for any method should do); ``False`` unless a
            method sets it (FG-SSL's progressive schedule does).
    """

    ddp_find_unused_parameters: bool = False

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        backbone_weights: str | Path | Mapping[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(backbone, str):
            self.backbone: nn.Module = resnet(backbone, weights=backbone_weights)
        elif isinstance(backbone, nn.Module):
            if backbone_weights is not None:
                raise ValueError(
                    "backbone_weights is for a backbone given by name; load weights into "
                    "your module before passing it"
                )
            self.backbone = backbone
        else:
            raise TypeError(
                f"backbone must be a ResNet name or an nn.Module, got {type(backbone).__name__}"
            )
        self.feature_dim = feature_dim(self.backbone)

    def forward(self, images: Tensor) -> Tensor:
        """Backbone features (B, ``feature_dim``) of images (B, C, H, W)."""
        return self.backbone(images).flatten(1)

    def default_transform(self, input_size: int = 224) -> Callable[[Any], Any]:
        """The view transform this method's data needs (image → list of views)."""
        raise NotImplementedError(
            f"{type(self).__name__} does not define default_transform"
        )

    def default_collate(self) -> Callable[[list[Any]], Any]:
        """The collate function for batches of :meth:`default_transform` samples."""
        return GroupedViewCollate()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Records which method (class, module, lightly-derm version) wrote the checkpoint."""
        checkpoint[CHECKPOINT_KEY] = {
            "method": type(self).__qualname__,
            "module": type(self).__module__,
            "version": __version__,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keeps the checkpoint's origin for the messages of :meth:`load_state_dict`."""
        origin = checkpoint.get(CHECKPOINT_KEY)
        hparams = checkpoint.get("hyper_parameters")
        self._checkpoint_origin = {
            **(dict(origin) if isinstance(origin, Mapping) else {}),
            "backbone": hparams.get("backbone")
            if isinstance(hparams, Mapping)
            else None,
        }

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Loads a state dict after checking that it fits this method and backbone.

        Raises:
            TypeError: ``state_dict`` is not a mapping.
            ValueError: Tensors differ in shape (another architecture), or, with
                ``strict``, keys are missing or unexpected; the message names the method
                that wrote the checkpoint (when known), a few keys, and what to do.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"state_dict must be a mapping of names to tensors, got "
                f"{type(state_dict).__name__}"
            )
        problem = _state_dict_problem(self.state_dict(), state_dict, strict)
        if problem:
            origin = getattr(self, "_checkpoint_origin", None) or {}
            writer = origin.get("method")
            theirs = (
                f"it was written by {writer}"
                + (
                    f" (lightly-derm {origin['version']})"
                    if origin.get("version")
                    else ""
                )
                + (
                    f" with backbone {origin['backbone']!r}"
                    if isinstance(origin.get("backbone"), str)
                    else ""
                )
                + "; "
                if writer
                else ""
            )
            backbone = self.hparams.get("backbone") if self.hparams else None
            ours = type(self).__name__ + (
                f"(backbone={backbone!r})" if isinstance(backbone, str) else ""
            )
            raise ValueError(
                f"the checkpoint does not fit {ours}: {theirs}{problem}. Load it into the "
                "method and backbone it was trained with"
                + (
                    ""
                    if not strict
                    else ", or pass strict=False to load the keys that fit"
                )
                + "."
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def _few(keys: list[str], count: int = 4) -> str:
    return "[" + ", ".join(keys[:count]) + (", ..." if len(keys) > count else "") + "]"


def _state_dict_problem(
    own: Mapping[str, Any], theirs: Mapping[str, Any], strict: bool
) -> str:
    """What keeps ``theirs`` from loading into a module with state dict ``own``."""
    parts = []
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in theirs.items()
        if k in own
        and isinstance(v, Tensor)
        and isinstance(own[k], Tensor)
        and tuple(v.shape) != tuple(own[k].shape)
    ]
    if mismatched:
        parts.append(
            f"tensors that differ in shape ({len(mismatched)}) ({'; '.join(mismatched[:3])}"
            f"{'; ...' if len(mismatched) > 3 else ''})"
        )
    if strict:
        missing = sorted(set(own) - set(theirs))
        unexpected = sorted(set(theirs) - set(own))
        if missing:
            parts.append(f"missing keys ({len(missing)}) {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}) {_few(unexpected)}")
    return "; ".join(parts)
