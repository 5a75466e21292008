"""The argument checks that every lightly-derm FlexibleUNet encoder shares.

MONAI builds a FlexibleUNet encoder as ``cls(model_name=..., spatial_dims=...,
in_channels=..., pretrained=...)`` (:class:`monai.networks.blocks.BaseEncoder`'s
``get_encoder_parameters``); the ResNet and timm encoders check those four arguments
alike, here, so that their messages cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lightly_derm.utils.validation import check_int

__all__ = ["check_encoder_args"]


def check_encoder_args(
    encoder: str,
    backbone_names: Sequence[str],
    model_name: str | None,
    spatial_dims: int,
    in_channels: int,
    pretrained: bool | str | Path,
    *,
    not_2d: str,
    weights: str = "a local checkpoint path",
) -> str:
    """Checks an encoder's constructor arguments and returns its model name.

    Args:
        encoder: The encoder class's name (for the messages).
        backbone_names: The model names the class registers.
        model_name: The requested model; ``None`` is the class's only name.
        spatial_dims: Must be 2.
        in_channels: A positive int.
        pretrained: Anything but ``True`` (nothing is downloaded).
        not_2d: What the message for ``spatial_dims != 2`` adds after the value.
        weights: What ``pretrained=`` takes, for the message of ``pretrained=True``.

    Returns:
        The model name.

    Raises:
        ValueError: One line naming the argument: an unknown or missing
            ``model_name``, ``spatial_dims != 2``, ``in_channels < 1`` or
            ``pretrained=True``.

    Example:
        >>> from lightly_derm.segmentation.encoder_args import check_encoder_args
        >>> check_encoder_args("Enc", ["resnet18"], None, 2, 3, False, not_2d="2-D only")
        'resnet18'
    """
    if model_name is None:
        if len(backbone_names) != 1:
            raise ValueError(
                f"model_name is required for {encoder}; choose one of "
                f"{', '.join(backbone_names)}"
            )
        model_name = backbone_names[0]
    if model_name not in backbone_names:
        raise ValueError(
            f"model_name {model_name!r} is not supported by {encoder}; "
            f"choose one of {', '.join(backbone_names)}"
        )
    if spatial_dims != 2:
        raise ValueError(f"spatial_dims={spatial_dims!r}: {not_2d}")
    check_int("in_channels", in_channels)
    if pretrained is True:
        raise ValueError(
            f"pretrained=True: lightly-derm downloads no weights; pass {weights} as "
            "pretrained=, or use "
            "lightly_derm.segmentation.load_ssl_encoder(net, checkpoint)"
        )
    return model_name
