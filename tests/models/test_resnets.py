"""The ResNet table against the torchvision models themselves."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from lightly_derm.models.resnets import (
    RESNET_CHILDREN,
    RESNET_SPECS,
    resnet_from_layout,
)


@pytest.mark.parametrize("name", sorted(RESNET_SPECS))
def test_spec_matches_the_torchvision_model(name: str) -> None:
    with torch.device("meta"):  # the architecture only, no weights allocated
        model = getattr(torchvision.models, name)()
    spec = RESNET_SPECS[name]
    layers = [getattr(model, f"layer{i}") for i in range(1, 5)]
    assert spec.blocks == tuple(len(layer) for layer in layers)
    assert spec.bottleneck == isinstance(
        layers[0][0], torchvision.models.resnet.Bottleneck
    )
    assert spec.width == layers[0][0].conv1.out_channels
    stage_outputs = [model.bn1.num_features] + [
        [m for m in layer.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features
        for layer in layers
    ]
    assert spec.feature_channels == tuple(stage_outputs)
    assert RESNET_CHILDREN == tuple(n for n, _ in model.named_children())[:8]


def test_layouts_name_one_resnet_or_none() -> None:
    for name, spec in RESNET_SPECS.items():
        found = resnet_from_layout(spec.blocks, spec.bottleneck, spec.width)
        shared = [
            other
            for other, s in RESNET_SPECS.items()
            if (s.blocks, s.bottleneck, s.width)
            == (spec.blocks, spec.bottleneck, spec.width)
        ]
        assert found == (name if len(shared) == 1 else None)
    assert resnet_from_layout((3, 4, 6, 3), True, 128) is None  # ResNeXt or Wide
    assert resnet_from_layout((1, 1, 1, 1), False, 64) is None
