from __future__ import annotations

import pytest
import torch
from monai.networks.nets import FlexibleUNet

import lightly_derm  # noqa: F401  (registers the backbones)
from lightly_derm.models import resnet
from lightly_derm.segmentation import (
    ResNet18CifarEncoder,
    ResNet34CifarEncoder,
    ResNet50CifarEncoder,
    describe_resnet,
    flexunet_backbone,
    load_ssl_encoder,
)

ENCODERS = [
    ("resnet18", ResNet18CifarEncoder, (128, 256, 512)),
    ("resnet34", ResNet34CifarEncoder, (128, 256, 512)),
    ("resnet50", ResNet50CifarEncoder, (512, 1024, 2048)),
]


@pytest.mark.parametrize("name,cls,channels", ENCODERS)
def test_names_channels_and_keys(name, cls, channels) -> None:
    assert cls.get_encoder_names() == [f"lightly-derm-{name}-cifar"]
    assert cls.num_channels_per_output() == [channels]
    assert cls.num_outputs() == [3]
    assert flexunet_backbone(f"{name}-cifar") == f"lightly-derm-{name}-cifar"
    encoder = cls()
    assert set(encoder.state_dict()) == set(resnet(f"{name}-cifar").state_dict())


@pytest.mark.parametrize("name,cls,channels", ENCODERS[:1] + ENCODERS[2:])
@pytest.mark.parametrize("size", [32, 48])
def test_features_match_the_backbone(name, cls, channels, size) -> None:
    torch.manual_seed(0)
    backbone = resnet(f"{name}-cifar").eval()
    encoder = cls().eval()
    report = load_ssl_encoder(encoder, backbone.state_dict())
    assert report.complete
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        features = encoder(images)
        # independent reference: the backbone's own layers, one after the other
        x = backbone.layer1(backbone.relu(backbone.bn1(backbone.conv1(images))))
        expected = []
        for layer in (backbone.layer2, backbone.layer3, backbone.layer4):
            x = layer(x)
            expected.append(x)
    assert [f.shape[1] for f in features] == list(channels)
    assert [f.shape[-1] for f in features] == [size // 2, size // 4, size // 8]
    for got, want in zip(features, expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("size", [32, 64])
def test_flexible_unet_output_at_input_resolution(size) -> None:
    net = FlexibleUNet(3, 2, backbone="lightly-derm-resnet18-cifar").eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, size, size)).shape == (1, 2, size, size)


def test_transfer_tensor_by_tensor() -> None:
    torch.manual_seed(1)
    backbone = resnet("resnet18-cifar")
    net = FlexibleUNet(3, 1, backbone="lightly-derm-resnet18-cifar")
    checkpoint = {
        "state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    }
    report = load_ssl_encoder(net, checkpoint)
    assert report.complete and len(report.loaded) == len(backbone.state_dict())
    own = net.encoder.state_dict()
    for k, v in backbone.state_dict().items():
        assert torch.equal(own[k], v), k


def test_stems_do_not_mix() -> None:
    cifar = resnet("resnet18-cifar").state_dict()
    imagenet = resnet("resnet18").state_dict()
    assert describe_resnet(cifar) == "resnet18-cifar"
    assert describe_resnet(imagenet) == "resnet18"
    with pytest.raises(
        ValueError, match=r"resnet18-cifar.*use backbone='lightly-derm-resnet18-cifar'"
    ):
        load_ssl_encoder(FlexibleUNet(3, 1, backbone="lightly-derm-resnet18"), cifar)
    with pytest.raises(ValueError, match=r"use backbone='lightly-derm-resnet18'\."):
        load_ssl_encoder(
            FlexibleUNet(3, 1, backbone="lightly-derm-resnet18-cifar"), imagenet
        )


def test_bad_input() -> None:
    encoder = ResNet18CifarEncoder()
    with pytest.raises(ValueError, match="multiples of 8, got 28 x 28"):
        encoder(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match=r"expects images \(B, 3, H, W\)"):
        encoder(torch.randn(1, 1, 32, 32))
    gray = ResNet18CifarEncoder(in_channels=1)
    assert gray.conv1.kernel_size == (3, 3) and gray.conv1.stride == (1, 1)
    assert [f.shape[1] for f in gray(torch.randn(1, 1, 32, 32))] == [128, 256, 512]
