from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from lightly_derm.models import (
    HierarchicalBlocks,
    build_backbone,
    hierarchical_stages,
    stage_channels,
)

pytest.importorskip("timm")

# (backbone, channels of the last three stages, their module names)
CASES = [
    ("resnet18", (128, 256, 512), ("layer2", "layer3", "layer4")),
    ("monai:efficientnet-b0", (40, 112, 320), ("_blocks.2", "_blocks.4", "_blocks.6")),
    ("timm:efficientnet_b0", (40, 112, 320), ("blocks.2", "blocks.4", "blocks.6")),
    ("efficientnet-lite0", (40, 112, 320), ("blocks.2", "blocks.4", "blocks.6")),
    ("timm:convnext_atto", (80, 160, 320), ("stages.1", "stages.2", "stages.3")),
]


def _randomise_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)


def hooked_stage_outputs(
    model: nn.Module, names: tuple[str, ...], images: torch.Tensor
) -> list[torch.Tensor]:
    """Reference: forward hooks on the named stage modules during the model's own forward."""
    outputs: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(n).register_forward_hook(
            lambda _m, _i, out, n=n: outputs.__setitem__(n, out)
        )
        for n in names
    ]
    try:
        model(images)
    finally:
        for h in handles:
            h.remove()
    return [outputs[n] for n in names]


@pytest.mark.parametrize(("name", "channels", "names"), CASES)
@pytest.mark.parametrize("size", [(64, 64), (96, 64)])
def test_stages_equal_the_models_own_stage_outputs(
    name: str,
    channels: tuple[int, int, int],
    names: tuple[str, ...],
    size: tuple[int, int],
) -> None:
    torch.manual_seed(0)
    model = build_backbone(name)
    _randomise_bn(model)
    model.eval()
    stages = hierarchical_stages(model)
    assert stages.channels == channels == stage_channels(model)
    assert stages.names == names
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = hooked_stage_outputs(model, names, images)
        for depth in (1, 2, 3):
            got = stages.read(model, images, depth)
            assert len(got) == depth
            for g, e, c in zip(got, expected[:depth], channels, strict=False):
                assert g.shape[1] == c
                torch.testing.assert_close(g, e)
    strides = [size[0] // e.shape[2] for e in expected]
    assert strides == [8, 16, 32]


@pytest.mark.parametrize(("name", "channels", "names"), CASES)
def test_reading_stops_at_the_requested_stage(
    name: str, channels: tuple[int, int, int], names: tuple[str, ...]
) -> None:
    model = build_backbone(name).eval()
    calls: list[str] = []
    for n in names:
        model.get_submodule(n).register_forward_hook(lambda *_, n=n: calls.append(n))
    with torch.no_grad():
        hierarchical_stages(model).read(model, torch.randn(1, 3, 64, 64), 1)
    assert calls == [names[0]]


def test_timm_features_only_models_give_their_last_three_maps() -> None:
    import timm

    model = timm.create_model("efficientnet_b0", features_only=True).eval()
    stages = hierarchical_stages(model)
    assert stages.channels == (40, 112, 320)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(images)[-3:]
        for g, e in zip(stages.read(model, images, 3), expected, strict=True):
            torch.testing.assert_close(g, e)


def test_a_plain_vit_is_a_clear_error() -> None:
    vit = build_backbone("timm:vit_small_patch16_224")
    with pytest.raises(TypeError, match="plain ViT keeps one resolution"):
        hierarchical_stages(vit)
    with pytest.raises(TypeError, match="three stages of falling resolution"):
        HierarchicalBlocks(vit)


def test_a_module_without_stages_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="exposes none that lightly-derm can read"):
        hierarchical_stages(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten()))
    with pytest.raises(TypeError, match="nn.Module"):
        hierarchical_stages("resnet18")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["monai:efficientnet-b0", "timm:convnext_atto"])
def test_hierarchical_blocks_on_other_backbones(name: str) -> None:
    model = HierarchicalBlocks(name, feature_dim=16, num_classes=3)
    assert model.block_dim == model.stage_channels[-1] // 2
    out = model(torch.randn(4, 3, 64, 64))
    assert [tuple(e.shape) for e in out.embeddings] == [(4, 16)] * 4
    assert tuple(out.summed_logits.shape) == (4, 3)


def test_torchvision_feature_extractor_agrees_for_resnets() -> None:
    """A second, independent reference for ResNets: torchvision's feature extraction."""
    from torchvision.models.feature_extraction import create_feature_extractor

    model = build_backbone("resnet50").eval()
    extractor = create_feature_extractor(model, ["layer2", "layer3", "layer4"])
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = list(extractor(images).values())
        got = hierarchical_stages(model).read(model, images, 3)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)
    assert isinstance(model, torchvision.models.ResNet)


@pytest.mark.parametrize("name", ["timm:convnext_atto", "monai:efficientnet-b0"])
def test_blocks_pickle_and_copy(name: str) -> None:
    """The stage reader is no closure: the model pickles and deep-copies (DDP spawn, EMA)."""
    import copy
    import pickle

    model = HierarchicalBlocks(name, feature_dim=8).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(images).embeddings
        for other in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
            for a, b in zip(other(images).embeddings, expected, strict=True):
                torch.testing.assert_close(a, b)
            assert (
                other._stages.read(other.backbone, images, 1)[0].shape[1]
                == (other.stage_channels[0])
            )
