"""The docstring examples of the model and encoder modules run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "lightly_derm.models.backbones",
    "lightly_derm.models.checkpoints",
    "lightly_derm.models.monai_backbones",
    "lightly_derm.models.timm_backbones",
    "lightly_derm.models.stages",
    "lightly_derm.models.imagenet",
    "lightly_derm.models.hierarchical_blocks",
    "lightly_derm.segmentation.timm_encoders",
    "lightly_derm.segmentation.encoder_names",
    "lightly_derm.segmentation.transfer",
    "lightly_derm.segmentation.encoders",
    "lightly_derm.segmentation.overlays",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    if "timm" in name or name.endswith(("backbones", "stages", "encoder_names")):
        pytest.importorskip("timm")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
