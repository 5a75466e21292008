from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from lightly_derm.models import (
    SMALL_INPUT_SIZE,
    backbone_for_input_size,
    build_backbone,
    check_backbone_name,
    default_stem,
    resnet,
)


def _layer4(model: torchvision.models.ResNet, images: torch.Tensor) -> torch.Tensor:
    x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


@pytest.mark.parametrize("name,width", [("resnet18", 512), ("resnet50", 2048)])
@pytest.mark.parametrize("size", [28, 32])
def test_cifar_stem_keeps_the_resolution(name: str, width: int, size: int) -> None:
    model = resnet(f"{name}-cifar").eval()
    assert model.stem == "cifar"
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    images = torch.randn(2, 3, size, size)
    # stride 8 instead of 32: layer4 sees ceil(size / 8), not a 1 x 1 map
    assert _layer4(model, images).shape[-1] == -(-size // 8)
    assert _layer4(resnet(name).eval(), images).shape[-1] == 1
    assert model(images).shape == (2, width)


def test_cifar_stem_keys_are_torchvision() -> None:
    model = resnet("resnet18", stem="cifar")
    reference = torchvision.models.resnet18().state_dict()
    state = model.state_dict()
    assert set(state) == {k for k in reference if not k.startswith("fc.")}
    differ = [k for k in state if state[k].shape != reference[k].shape]
    assert differ == ["conv1.weight"] and state["conv1.weight"].shape == (64, 3, 3, 3)


def test_stem_by_name_option_and_factory() -> None:
    assert build_backbone("resnet18-cifar").stem == "cifar"
    assert build_backbone("resnet18", stem="cifar").stem == "cifar"
    assert build_backbone("torchvision:resnet18-cifar").stem == "cifar"
    assert build_backbone("resnet18").stem == "imagenet"
    assert check_backbone_name("resnet34-cifar") == "torchvision:resnet34-cifar"
    with pytest.raises(ValueError, match="stem must be one of imagenet, cifar"):
        resnet("resnet18", stem="tiny")
    with pytest.raises(ValueError, match="contradicts the backbone name"):
        resnet("resnet18-cifar", stem="imagenet")
    with pytest.raises(ValueError, match="'resnet19-cifar' is not a known ResNet"):
        resnet("resnet19-cifar")


def test_weights_round_trip_with_the_stem() -> None:
    source = resnet("resnet18-cifar")
    target = resnet("resnet18", stem="cifar", weights=source.state_dict())
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    with pytest.raises(ValueError, match=r"conv1.weight: checkpoint \(64, 3, 3, 3\)"):
        resnet("resnet18", weights=source.state_dict())


def test_default_stem_threshold() -> None:
    assert default_stem(SMALL_INPUT_SIZE - 1) == "cifar"
    assert default_stem(SMALL_INPUT_SIZE) == "imagenet"
    assert backbone_for_input_size("resnet50", 28) == "resnet50-cifar"
    assert backbone_for_input_size("resnet50", 224) == "resnet50"
    assert backbone_for_input_size("resnet50-cifar", 224) == "resnet50-cifar"
    assert (
        backbone_for_input_size("monai:efficientnet-b0", 28) == "monai:efficientnet-b0"
    )
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="input_size must be an integer >= 1"):
            default_stem(bad)  # type: ignore[arg-type]
