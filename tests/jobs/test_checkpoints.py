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
    with pytest.raises(ValueError, match="cannot tell which ResNet"):
        load_backbone(tmp_path / "junk.pt")
