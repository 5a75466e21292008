"""timm models as lightly-derm backbones (``backbone="timm:<model name>"``).

Builds on :func:`timm.create_model` (an optional dependency: ``pip install
lightly-derm[timm]``). The model is created with ``pretrained=False`` and
``num_classes=0``, so it downloads nothing and maps images to its pooled features; its
state-dict keys are timm's, so the weights move into the timm FlexibleUNet encoders
(:class:`~lightly_derm.segmentation.TimmEncoder`) without renaming.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from torch import nn

__all__ = ["import_timm", "timm_backbone"]


def import_timm() -> ModuleType:
    """Imports timm, or says how to install it.

    Raises:
        ImportError: timm is not installed; the message names the extra.
    """
    try:
        import timm
    except ImportError as exc:  # pragma: no cover - timm is in the test environment
        raise ImportError(
            "timm backbones need timm: pip install 'lightly-derm[timm]'"
        ) from exc
    return timm


def timm_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Creates the timm model ``name`` without classifier and without downloading weights.

    Args:
        name: A timm model name (``timm.list_models()``), e.g. ``"convnext_tiny"``,
            ``"efficientnet_b0"``, ``"tf_efficientnet_lite0"`` or
            ``"vit_small_patch16_224"``.
        **kwargs: Passed to :func:`timm.create_model` (``img_size=`` or
            ``dynamic_img_size=True`` for a ViT on other image sizes than its own,
            ``drop_path_rate=``, ...). ``pretrained`` and ``num_classes`` are fixed.

    Returns:
        The model; it maps (B, 3, H, W) images to (B, ``model.feature_dim``) pooled
        features (timm's ``num_features``).

    Raises:
        ValueError: ``name`` is not a timm model, or ``pretrained``/``num_classes`` is
            passed.
        ImportError: timm is not installed.

    Example:
        >>> import torch
        >>> from lightly_derm.models import timm_backbone
        >>> model = timm_backbone("efficientnet_b0")
        >>> model(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 1280])
    """
    timm = import_timm()
    for fixed in ("pretrained", "num_classes", "pretrained_cfg_overlay"):
        if fixed in kwargs:
            raise ValueError(
                f"{fixed} is fixed for lightly-derm backbones (no downloads, no "
                "classifier); load local weights with backbone_weights instead"
            )
    if not isinstance(name, str) or not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:8] if isinstance(name, str) else []
        raise ValueError(
            f"backbone 'timm:{name}' is not a timm model"
            + (f"; close names: {', '.join(close)}" if close else "")
        )
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    model.feature_dim = int(model.num_features)  # type: ignore[assignment]
    return model
