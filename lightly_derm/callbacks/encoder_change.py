"""How far pretraining changed an encoder: the angle each stage's filters turned.

Self-supervised pretraining is only worth something downstream if it changes the
encoder, and the distance its weights travel is the wrong measure of that: nearly every
convolution of a modern backbone feeds a normalisation layer, which undoes a filter's
scale, so weight decay that shrinks a stage "moves" it without changing what it
computes. What changes a stage is how far its filters *turn*. :func:`filter_turn`
measures, per stage, the mean angle between each output filter's weights at the start
and at the end, and the ratio of the stage's weight norms; :class:`EncoderChange`
records it over a Lightning fit (the ``pretrain`` job reports it in ``summary.json``).

As a guide from the ISIC 2017 runs of docs/results.rst: a few degrees is a small change,
a 100-epoch segmentation fine-tune from random init turns a ResNet-18's filters by
10–15°. Builds on Lightning's callback state (the starting weights travel in the
checkpoint, so a resumed run is still measured from where it began).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn

__all__ = ["EncoderChange", "StageChange", "filter_turn", "stage_of"]


@dataclass(frozen=True)
class StageChange:
    """How one stage's weights changed.

    Attributes:
        turned: Mean angle in degrees between each output filter's start and end
            weights (0: the same directions; 90: unrelated ones).
        norm: ``||W_end|| / ||W_start||`` over the stage's weights (scale, which
            normalisation layers undo).
        filters: How many filters the mean is over.
    """

    turned: float
    norm: float
    filters: int


def stage_of(module: nn.Module, name: str) -> str:
    """The stage a parameter or buffer ``name`` of ``module`` belongs to.

    Its top-level child (``conv1``, ``layer3``, ``conv_stem``), except that a
    top-level container of containers — timm's and MONAI's EfficientNet ``blocks`` /
    ``_blocks``, a sequence of stages — is split into its stages (``blocks.3``).

    Example:
        >>> import torchvision
        >>> stage_of(torchvision.models.resnet18(), "layer3.1.conv2.weight")
        'layer3'
    """
    first, _, rest = name.partition(".")
    child = getattr(module, first, None)
    if isinstance(child, nn.Sequential | nn.ModuleList) and all(
        isinstance(c, nn.Sequential | nn.ModuleList) for c in child.children()
    ):
        index = rest.partition(".")[0]
        if index.isdigit():
            return f"{first}.{index}"
    return first


def filter_turn(
    start: Mapping[str, Tensor], end: Mapping[str, Tensor], stages: Mapping[str, str]
) -> dict[str, StageChange]:
    """Per stage, how far the filters of ``start`` turned to reach ``end``.

    Args:
        start: Weights at the start by name (the tensors of two or more dimensions
            are measured; a filter is one index of the first, output dimension).
        end: The same weights at the end.
        stages: The stage of each name of ``start`` to measure (e.g. from
            :func:`stage_of`), in the order the result should have.

    Returns:
        A :class:`StageChange` per stage, in the order of first appearance in
        ``stages``. Computed in float64.

    Example:
        >>> w = {"conv.weight": torch.randn(8, 3, 3, 3)}
        >>> change = filter_turn(w, {"conv.weight": 0.5 * w["conv.weight"]}, {"conv.weight": "conv"})
        >>> round(change["conv"].turned, 3), round(change["conv"].norm, 3)
        (0.0, 0.5)
    """
    grouped: dict[str, list[str]] = {}
    for name, stage in stages.items():
        if start[name].ndim >= 2:
            grouped.setdefault(stage, []).append(name)
    out: dict[str, StageChange] = {}
    for stage, names in grouped.items():
        before = [start[n].detach().double().cpu().flatten(1) for n in names]
        after = [end[n].detach().double().cpu().flatten(1) for n in names]
        for name, b, a in zip(names, before, after, strict=True):
            if a.shape != b.shape:
                raise ValueError(
                    f"{name}: shape {tuple(a.shape)} at the end, "
                    f"{tuple(b.shape)} at the start"
                )
        cosines = torch.cat(
            [
                torch.nn.functional.cosine_similarity(b, a, dim=1, eps=1e-30)
                for b, a in zip(before, after, strict=True)
            ]
        )
        angles = torch.rad2deg(cosines.clamp(-1.0, 1.0).acos())
        norm_before = math.sqrt(sum(float(b.square().sum()) for b in before))
        norm_after = math.sqrt(sum(float(a.square().sum()) for a in after))
        out[stage] = StageChange(
            turned=float(angles.mean()),
            norm=norm_after / norm_before if norm_before > 0 else math.nan,
            filters=int(cosines.numel()),
        )
    return out


class EncoderChange(Callback):
    """Records how far a fit turned the filters of each stage of an encoder.

    Keeps a CPU copy of the encoder's weights (tensors of two or more dimensions) at
    the start of the first fit and, at the end of every fit, :func:`filter_turn` from
    it, per :func:`stage_of` stage, in :attr:`change`. The copy is part of the
    callback's checkpoint state (one more copy of the encoder's weights in each
    checkpoint), so a resumed run is measured from its true start; one resumed from a
    checkpoint without it is measured from where it resumed. In distributed runs each
    process measures its own (identical) replica.

    Args:
        module: Attribute path of the encoder in the LightningModule (every
            lightly-derm method keeps it as ``backbone``).

    Example:
        >>> import torchvision
        >>> class Tiny(pl.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.backbone = torchvision.models.resnet18(num_classes=2)
        >>> callback, model = EncoderChange(), Tiny()
        >>> callback.on_fit_start(None, model)
        >>> _ = model.backbone.layer4[0].conv1.weight.data.mul_(0.5)
        >>> callback.on_fit_end(None, model)
        >>> round(callback.change["layer4"].norm, 2) < 1, round(callback.change["layer4"].turned, 6)
        (True, 0.0)
    """

    def __init__(self, module: str = "backbone") -> None:
        self.module = module
        self._get = operator.attrgetter(module)
        self.start: dict[str, Tensor] = {}
        #: Per stage, the change from the start to the end of the last fit.
        self.change: dict[str, StageChange] = {}

    def _weights(self, pl_module: Any) -> dict[str, Tensor]:
        encoder = self._get(pl_module)
        if not isinstance(encoder, nn.Module):
            raise TypeError(
                f"EncoderChange: {type(pl_module).__name__}.{self.module} is "
                f"{type(encoder).__name__}, not a torch module"
            )
        return {
            k: v
            for k, v in encoder.state_dict(keep_vars=False).items()
            if v.ndim >= 2 and v.is_floating_point()
        }

    def on_fit_start(self, trainer: pl.Trainer | None, pl_module: Any) -> None:
        """Copies the starting weights (unless restored from a checkpoint)."""
        if not self.start:
            self.start = {
                k: v.detach().to("cpu", copy=True)
                for k, v in self._weights(pl_module).items()
            }

    def on_fit_end(self, trainer: pl.Trainer | None, pl_module: Any) -> None:
        """Measures the change from the start (one device-to-host copy)."""
        if not self.start:
            return
        encoder = self._get(pl_module)
        end = self._weights(pl_module)
        stages = {k: stage_of(encoder, k) for k in self.start if k in end}
        self.change = filter_turn(self.start, end, stages)

    def summary(self) -> dict[str, dict[str, float | int]]:
        """:attr:`change` as plain numbers (for JSON)."""
        return {stage: asdict(c) for stage, c in self.change.items()}

    def state_dict(self) -> dict[str, Any]:
        """The starting weights, so that a resumed run is measured from its start."""
        return {"start": self.start}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the starting weights of the run being resumed."""
        self.start = dict(state_dict.get("start", {}))
