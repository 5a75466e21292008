from __future__ import annotations

import pytest
import torch
import torchvision
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torchvision.models.feature_extraction import create_feature_extractor

import lightly_derm  # noqa: F401  (registers the backbones)
from lightly_derm.segmentation import (
    ResNet18Encoder,
    ResNet34Encoder,
    ResNet50Encoder,
    TorchvisionResNetEncoder,
)

ENCODERS = [
    ("resnet18", ResNet18Encoder, (64, 64, 128, 256, 512)),
    ("resnet34", ResNet34Encoder, (64, 64, 128, 256, 512)),
    ("resnet50", ResNet50Encoder, (64, 256, 512, 1024, 2048)),
]


@pytest.mark.parametrize("name,cls,channels", ENCODERS)
def test_keys_are_torchvision(name, cls, channels) -> None:
    encoder = cls()
    reference = getattr(torchvision.models, name)()
    expected = {k for k in reference.state_dict() if not k.startswith("fc.")}
    assert set(encoder.state_dict()) == expected
    # type-B shortcuts: a 1x1 projection where the shape changes
    assert encoder.layer2[0].downsample[0].kernel_size == (1, 1)
    assert cls.get_encoder_names() == [f"lightly-derm-{name}"]
    assert cls.num_channels_per_output() == [channels]
    assert cls.num_outputs() == [5]
    params = cls.get_encoder_parameters()[0]
    assert {"spatial_dims", "in_channels", "pretrained"} <= set(params)


@pytest.mark.parametrize(
    "name,cls,channels,size",
    [(*ENCODERS[0], (64, 96)), (*ENCODERS[2], (64, 64))],
    ids=["resnet18-64x96", "resnet50-64x64"],
)
def test_features_match_torchvision(name, cls, channels, size) -> None:
    """Same weights in a torchvision ResNet give the same five feature maps."""
    torch.manual_seed(0)
    encoder = cls().eval()
    reference = getattr(torchvision.models, name)().eval()
    reference.load_state_dict(encoder.state_dict(), strict=False)
    extractor = create_feature_extractor(
        reference, ["relu", "layer1", "layer2", "layer3", "layer4"]
    )
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        features = encoder(x)
        expected = list(extractor(x).values())
    assert len(features) == 5
    for i, (f, e) in enumerate(zip(features, expected, strict=True)):
        stride = 2 ** (i + 1)
        assert f.shape == (2, channels[i], size[0] // stride, size[1] // stride)
        torch.testing.assert_close(f, e)


def test_flexible_unet_accepts_the_names() -> None:
    for name in (
        "lightly-derm-resnet18",
        "lightly-derm-resnet34",
        "lightly-derm-resnet50",
    ):
        assert name in FLEXUNET_BACKBONE.register_dict
    net = FlexibleUNet(in_channels=3, out_channels=1, backbone="lightly-derm-resnet50")
    assert isinstance(net.encoder, ResNet50Encoder)
    with torch.no_grad():
        # FlexibleUNet needs sides divisible by 32 (LesionSegmentation pads)
        assert net.eval()(torch.randn(1, 3, 64, 96)).shape == (1, 1, 64, 96)


def test_other_input_channels() -> None:
    net = FlexibleUNet(in_channels=1, out_channels=2, backbone="lightly-derm-resnet18")
    assert net.encoder.conv1.weight.shape == (64, 1, 7, 7)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 2, 32, 32)


def test_pretrained_path_through_flexible_unet(tmp_path) -> None:
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    net = FlexibleUNet(3, 1, backbone="lightly-derm-resnet18", pretrained=str(path))
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="spatial_dims=3.*2-D"):
        ResNet18Encoder(spatial_dims=3)
    with pytest.raises(ValueError, match="downloads no weights"):
        FlexibleUNet(3, 1, backbone="lightly-derm-resnet18", pretrained=True)
    with pytest.raises(ValueError, match="in_channels must be an integer >= 1"):
        ResNet18Encoder(in_channels=0)
    with pytest.raises(ValueError, match="'resnet19' is not supported"):
        TorchvisionResNetEncoder("resnet19")
    with pytest.raises(ValueError, match="model_name is required"):
        TorchvisionResNetEncoder()
    with pytest.raises(
        ValueError, match=r"expects images \(B, 3, H, W\), got shape \(3, 32, 32\)"
    ):
        ResNet18Encoder()(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 32, 32\)"):
        ResNet18Encoder()(torch.randn(1, 1, 32, 32))


def test_other_torchvision_resnets_by_name() -> None:
    encoder = TorchvisionResNetEncoder("resnext50_32x4d")
    assert encoder.feature_channels == (64, 256, 512, 1024, 2048)
    with torch.no_grad():
        assert encoder.eval()(torch.randn(1, 3, 32, 32))[-1].shape == (1, 2048, 1, 1)
