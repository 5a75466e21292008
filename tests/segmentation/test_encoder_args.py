"""The shared argument checks of the FlexibleUNet encoders."""

from __future__ import annotations

import pytest

from lightly_derm.segmentation.encoder_args import check_encoder_args

NAMES = ["resnet18", "resnet34"]


def test_returns_the_name_and_the_only_name_by_default() -> None:
    assert check_encoder_args("E", NAMES, "resnet34", 2, 3, False, not_2d="x") == (
        "resnet34"
    )
    assert check_encoder_args("E", ["a"], None, 2, 1, "w.ckpt", not_2d="x") == "a"


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((None, 2, 3, False), "model_name is required for E; choose one of resnet18"),
        (("vit", 2, 3, False), "model_name 'vit' is not supported by E"),
        (("resnet18", 3, 3, False), "spatial_dims=3: 2-D only"),
        (("resnet18", 2, 0, False), "in_channels"),
        (("resnet18", 2, 3, True), "pretrained=True: .* pass w as pretrained="),
    ],
)
def test_bad_arguments_name_themselves(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_encoder_args("E", NAMES, *args, not_2d="2-D only", weights="w")
