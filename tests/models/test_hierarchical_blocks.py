from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lightly_derm.models import HierarchicalBlocks, resnet, stage_channels


def reference_h(model: HierarchicalBlocks, images: torch.Tensor) -> list[torch.Tensor]:
    """h_k written out: torchvision stages, conv block k on stage k, max over all positions."""
    b = model.backbone
    x = b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(images)))))
    hs = []
    for k, stage in enumerate((b.layer2, b.layer3, b.layer4)):
        x = stage(x)
        y = x
        for conv in model.conv_blocks[k]:
            y = F.relu(conv[1](conv[0](y)))
        hs.append(y.flatten(2).max(dim=2).values)
    return hs


def reference_embed(block: nn.Sequential, h: torch.Tensor) -> torch.Tensor:
    bn1, linear, bn2, _ = block
    return F.elu(bn2(linear(bn1(h))))


@pytest.mark.parametrize("size", [(32, 32), (64, 32)])
def test_outputs_match_the_equations(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = HierarchicalBlocks("resnet18", feature_dim=16, block_dim=24, num_classes=5)
    for m in model.modules():  # non-trivial BN statistics, then eval for determinism
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    model.eval()
    images = torch.randn(3, 3, *size)
    out = model(images)
    hs = reference_h(model, images)
    expected = [reference_embed(model.embedding_blocks[k], hs[k]) for k in range(3)]
    expected.append(reference_embed(model.concat_block, torch.cat(hs, 1)))
    for k in range(4):
        torch.testing.assert_close(out.embeddings[k], expected[k])
        torch.testing.assert_close(out.logits[k], model.classifiers[k](expected[k]))
        embedding, logits = model.forward_block(images, k)
        torch.testing.assert_close(embedding, expected[k])
        torch.testing.assert_close(logits, out.logits[k])
    torch.testing.assert_close(out.summed_logits, sum(out.logits))


def test_block_k_reads_stage_k_and_runs_only_as_deep_as_needed() -> None:
    """The authors feed h_1 to blocks 2 and 3; here block k depends on stage k only."""
    model = HierarchicalBlocks("resnet18", feature_dim=8, block_dim=8)
    calls: list[str] = []
    for name in ("layer2", "layer3", "layer4"):
        getattr(model.backbone, name).register_forward_hook(
            lambda *_, n=name: calls.append(n)
        )
    images = torch.randn(2, 3, 32, 32)
    for k, stages in enumerate(
        (["layer2"], ["layer2", "layer3"], ["layer2", "layer3", "layer4"])
    ):
        calls.clear()
        model.zero_grad(set_to_none=True)
        embedding, logits = model.forward_block(images, k)
        assert calls == stages and logits is None
        embedding.square().sum().backward()
        for j in range(3):
            has_grad = model.conv_blocks[j][0][0].weight.grad is not None
            assert has_grad == (j == k), f"block {k} must only use conv block {k}"
        assert model.concat_block[1].weight.grad is None


@pytest.mark.parametrize(
    ("name", "channels"),
    [("resnet18", (128, 256, 512)), ("resnet50", (512, 1024, 2048))],
)
def test_stage_channels_and_shapes(name: str, channels: tuple[int, int, int]) -> None:
    model = HierarchicalBlocks(name, feature_dim=32)
    assert stage_channels(model.backbone) == channels == model.stage_channels
    # D defaults to half of layer4's channels: the authors' 1024 for ResNet-50
    assert model.block_dim == channels[2] // 2
    assert model.conv_blocks[0][1][0].out_channels == channels[2] // 2
    assert model.conv_blocks[2][0][0].in_channels == channels[2]
    out = model(torch.randn(2, 3, 32, 48))  # non-square works
    assert [tuple(e.shape) for e in out.embeddings] == [(2, 32)] * 4
    assert out.logits is None
    with pytest.raises(ValueError, match="no classifiers"):
        _ = out.summed_logits


def test_backbone_keeps_torchvision_names_and_loads_local_weights(tmp_path) -> None:
    source = resnet("resnet18")
    path = tmp_path / "backbone.pt"
    torch.save(source.state_dict(), path)
    model = HierarchicalBlocks(
        "resnet18", backbone_weights=path, feature_dim=8, block_dim=8
    )
    state = model.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(state[f"backbone.{key}"], value)
    heads = {id(p) for p in model.head_parameters()}
    assert heads.isdisjoint(id(p) for p in model.backbone.parameters())
    assert len(heads) + len(list(model.backbone.parameters())) == len(
        list(model.parameters())
    )
    # a torchvision ResNet module is used as it is (shared), its fc dropped
    module = torchvision.models.resnet18()
    model = HierarchicalBlocks(module, feature_dim=8, block_dim=8)
    assert model.backbone is module and isinstance(module.fc, nn.Identity)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="torchvision ResNet"):
        HierarchicalBlocks(nn.Sequential(nn.Conv2d(3, 4, 3)))
    with pytest.raises(TypeError, match="backbone must be"):
        HierarchicalBlocks(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a known ResNet"):
        HierarchicalBlocks("vgg16")
    with pytest.raises(ValueError, match="num_classes"):
        HierarchicalBlocks("resnet18", num_classes=0)
    with pytest.raises(ValueError, match="feature_dim"):
        HierarchicalBlocks("resnet18", feature_dim=0)
    model = HierarchicalBlocks("resnet18", feature_dim=8, block_dim=8)
    with pytest.raises(ValueError, match="index must be 0, 1, 2"):
        model.forward_block(torch.randn(2, 3, 32, 32), 4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.randn(3, 32, 32))
