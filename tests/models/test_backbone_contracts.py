"""Contract tests over every registered backbone family, as timm tests every model.

For each family (its registered example) and the backbones the documentation names:
the forward gives (B, feature_dim); one training step of every pretraining method
changes it (FG-SSL: a clear TypeError for a backbone without stages); the SSL
checkpoint moves into the family's MONAI FlexibleUNet encoder with every encoder
tensor equal to the backbone's, and the U-Net's output has the image's size. CPU-fast
sizes (64 px, batches of 4).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lightly_derm import registry
from lightly_derm.models import build_backbone, hierarchical_stages
from tests.plugins.test_contracts import _train_one_step

pytest.importorskip("timm")

FAMILIES = registry.list("backbone")
#: Backbones named in the docs, beyond each family's example.
NAMED = [
    "resnet18-cifar",
    "timm:efficientnet_b0",
    "efficientnet-lite0",
    "timm:convnext_tiny",
    "timm:vit_small_patch16_224",
]
BACKBONES = [f"{i.name}:{i.metadata['example']}" for i in FAMILIES] + NAMED
METHODS = [
    i.name for i in registry.list("method") if i.metadata.get("task") == "pretrain"
]
#: Backbones whose training steps take more than a few seconds on one CPU thread.
SLOW = {"resnet18-cifar", "timm:convnext_tiny", "timm:vit_small_patch16_224"}


def _build(name: str) -> nn.Module:
    # a ViT is built for the test's 64 px images (timm's img_size)
    kwargs = {"img_size": 64} if "vit_" in name else {}
    return build_backbone(name, **kwargs)


def _has_stages(backbone: nn.Module) -> bool:
    try:
        hierarchical_stages(backbone)
    except TypeError:
        return False
    return True


def _maybe_slow(name: str):
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


def test_every_family_is_covered() -> None:
    assert {i.name for i in FAMILIES} >= {"torchvision", "monai", "timm"}
    for info in FAMILIES:
        assert isinstance(info.metadata.get("example"), str), (
            f"backbone family {info.name!r} must declare metadata example='<model>'"
        )
    assert {"gravis", "simclr", "byol", "barlow_twins", "ap_byol", "fgssl"} <= set(
        METHODS
    )


@pytest.mark.parametrize("name", BACKBONES)
def test_forward_gives_feature_dim(name: str) -> None:
    backbone = _build(name).eval()
    width = backbone.feature_dim
    assert isinstance(width, int) and width > 0
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 64, 64))
    assert tuple(out.flatten(1).shape) == (2, width)
    # the family is found through the registry and builds the same architecture again
    assert type(_build(name)) is type(backbone)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", [_maybe_slow(n) for n in BACKBONES])
def test_one_training_step_of_each_method(name: str, method: str) -> None:
    torch.manual_seed(0)
    backbone = _build(name)
    if method == "fgssl" and not _has_stages(backbone):
        with pytest.raises(TypeError, match="three stages of falling resolution"):
            registry.create("method", method, backbone=backbone)
        return
    model = registry.create("method", method, backbone=backbone)
    assert model.feature_dim == backbone.feature_dim
    _train_one_step(model)


@pytest.mark.parametrize("name", [_maybe_slow(n) for n in BACKBONES])
def test_ssl_checkpoint_moves_into_flexibleunet(name: str, tmp_path: Path) -> None:
    """GraVIS trains one step; its checkpoint file goes into the matching encoder."""
    import pytorch_lightning as pl
    from monai.networks.nets import FlexibleUNet

    from lightly_derm.segmentation import flexunet_backbone, load_ssl_encoder

    if "vit_" in name:
        with pytest.raises(ValueError, match="no MONAI FlexibleUNet encoder"):
            flexunet_backbone(name)
        return
    torch.manual_seed(0)
    method = registry.create("method", "gravis", backbone=name)
    trainer = _train_one_step(method)
    assert isinstance(trainer, pl.Trainer)
    path = tmp_path / "gravis.ckpt"
    trainer.save_checkpoint(path)
    net = FlexibleUNet(
        3, 1, backbone=flexunet_backbone(name), decoder_channels=(16,) * 5
    ).eval()
    report = load_ssl_encoder(net, path)
    assert report.complete
    trained = method.backbone.state_dict()
    encoder = net.encoder
    part = (
        encoder.get_submodule(encoder.backbone_prefix.rstrip("."))
        if hasattr(encoder, "backbone_prefix")
        else encoder
    )
    state = part.state_dict()
    assert report.loaded == sorted(k for k in state if k in trained)
    # every encoder tensor is the backbone's; the others are named as unused
    for key, value in state.items():
        if key in trained:
            assert torch.equal(value, trained[key]), key
        else:
            assert key in report.ignored, key
    assert set(trained) - set(state) == set(report.ignored) - set(state)
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


@pytest.mark.parametrize("name", [_maybe_slow(n) for n in BACKBONES])
def test_gpu_view_pipeline_under_bf16(name: str) -> None:
    """augment='gpu' (views made after the batch transfer, here on CPU tensors), bf16."""
    torch.manual_seed(0)
    method = registry.create("method", "gravis", backbone=_build(name), augment="gpu")
    _train_one_step(method, precision="bf16-mixed")
