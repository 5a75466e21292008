from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from lightly_derm.models import (
    RESNETS,
    extract_backbone_state_dict,
    feature_dim,
    resnet,
)


@pytest.mark.parametrize(
    "name,width", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)]
)
@pytest.mark.slow
def test_resnet_keys_and_width(name: str, width: int) -> None:
    model = resnet(name)
    reference = getattr(torchvision.models, name)()
    expected = {k for k in reference.state_dict() if not k.startswith("fc.")}
    assert set(model.state_dict()) == expected
    assert model.feature_dim == width == feature_dim(model)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, width)


def test_unknown_resnet() -> None:
    with pytest.raises(ValueError, match="'resnet19' is not a known ResNet"):
        resnet("resnet19")
    assert "resnet50" in RESNETS


def test_feature_dim_measures_other_modules() -> None:
    backbone = nn.Sequential(nn.Conv2d(3, 7, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert feature_dim(backbone) == 7


def _reference_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.resnet18().state_dict()


def _assert_same(state, reference) -> None:
    expected = {k: v for k, v in reference.items() if not k.startswith("fc.")}
    assert set(state) == set(expected)
    for k in expected:
        assert torch.equal(state[k], expected[k]), k


def test_formats(tmp_path) -> None:
    ref = _reference_state()
    # torchvision full model and bare backbone
    _assert_same(extract_backbone_state_dict(ref), ref)
    # Lightning checkpoint file, with other modules beside the backbone
    lightning = {
        "state_dict": {
            **{f"backbone.{k}": v for k, v in ref.items() if not k.startswith("fc.")},
            **{f"backbone_momentum.{k}": torch.zeros_like(v) for k, v in ref.items()},
            "projection_head.layers.0.weight": torch.zeros(3, 3),
        },
        "epoch": 3,
    }
    path = tmp_path / "last.ckpt"
    torch.save(lightning, path)
    _assert_same(extract_backbone_state_dict(path), ref)
    # DDP and torch.compile wrappers
    wrapped = {f"module._orig_mod.{k}": v for k, v in ref.items()}
    _assert_same(extract_backbone_state_dict(wrapped), ref)
    # lightly example's nn.Sequential backbone: numbered keys
    tv = torchvision.models.resnet18()
    tv.load_state_dict(ref)
    sequential = nn.Sequential(*list(tv.children())[:-1])
    _assert_same(extract_backbone_state_dict(sequential.state_dict()), ref)


def test_load_weights_into_resnet(tmp_path) -> None:
    ref = _reference_state(1)
    path = tmp_path / "weights.pt"
    torch.save(ref, path)
    model = resnet("resnet18", weights=path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k])


@pytest.mark.slow
def test_bad_weights(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        resnet("resnet18", weights=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="another architecture"):
        resnet("resnet50", weights=_reference_state())
    partial = {
        k: v for k, v in _reference_state().items() if not k.startswith("layer4")
    }
    with pytest.raises(ValueError, match="missing keys"):
        resnet("resnet18", weights=partial)
    resnet("resnet18", weights=partial, strict=False)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        resnet("resnet18", weights=tmp_path / "junk.pt")


def test_pickled_code_is_refused(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "evil": Evil()}, path)
    with pytest.raises(ValueError, match="was refused: it carries pickled code"):
        extract_backbone_state_dict(path)


def test_build_backbone_names_and_errors() -> None:
    from lightly_derm.models import build_backbone, split_backbone_name

    assert split_backbone_name(" torchvision:resnet18 ") == ("torchvision", "resnet18")
    model = build_backbone("torchvision:resnet18")
    assert isinstance(model, torchvision.models.ResNet) and model.feature_dim == 512
    with pytest.raises(ValueError, match="unknown backbone family 'keras'"):
        build_backbone("keras:resnet50")
    with pytest.raises(ValueError, match="must look like 'family:model'"):
        build_backbone("timm:")
    with pytest.raises(TypeError, match="non-empty name"):
        build_backbone("")
    with pytest.raises(ValueError, match="'monai:efficientnet-b9' is not a MONAI"):
        build_backbone("monai:efficientnet-b9")
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match="'timm:convnext_tinyy' is not a timm model"):
        build_backbone("timm:convnext_tinyy")
    with pytest.raises(ValueError, match="pretrained is fixed"):
        build_backbone("timm:convnext_atto", pretrained=True)


def test_weights_of_a_named_backbone_load_strictly(tmp_path) -> None:
    from lightly_derm.models import build_backbone

    pytest.importorskip("timm")
    source = build_backbone("timm:convnext_atto")
    torch.save(
        {"state_dict": {f"backbone.{k}": v for k, v in source.state_dict().items()}},
        tmp_path / "ssl.ckpt",
    )
    model = build_backbone("timm:convnext_atto", weights=tmp_path / "ssl.ckpt")
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(ValueError, match="do not fit the model"):
        build_backbone("timm:convnext_nano", weights=tmp_path / "ssl.ckpt")


def test_check_backbone_name_builds_nothing() -> None:
    from lightly_derm.models import check_backbone_name

    assert check_backbone_name("resnet18") == "torchvision:resnet18"
    assert check_backbone_name("monai:efficientnet-b3") == "monai:efficientnet-b3"
    for bad, message in [
        ("vgg16", "'vgg16' is not a known ResNet nor 'family:model'"),
        ("keras:resnet50", "unknown backbone family 'keras'"),
        ("monai:resnet50", "not a MONAI EfficientNet"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_backbone_name(bad)
    pytest.importorskip("timm")
    assert check_backbone_name("timm:convnext_tiny") == "timm:convnext_tiny"
    with pytest.raises(ValueError, match="'timm:convnext_huge_xyz' is not a timm"):
        check_backbone_name("timm:convnext_huge_xyz")
