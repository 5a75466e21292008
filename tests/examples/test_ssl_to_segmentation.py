from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torchvision
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform

from lightly_derm import registry
from lightly_derm.data import to_grouped_batch
from lightly_derm.methods import SSLMethod
from lightly_derm.plugins import Component, hookimpl

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "ssl_to_segmentation.py"
TINY = [
    "--limit",
    "8",
    "--val-fraction",
    "0.25",
    "--image-size",
    "32",
    "--batch-size",
    "4",
    "--epochs",
    "1",
    "--backbone",
    "resnet18",
]


def _example():
    spec = importlib.util.spec_from_file_location("ssl_to_segmentation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_finetune_half_from_a_hand_made_checkpoint(isic_dir, tmp_path, capsys) -> None:
    """The segmentation half, from a Lightning-style SSL checkpoint made by hand."""
    torch.manual_seed(123)  # not the fine-tuning seed: the random init must differ
    backbone = torchvision.models.resnet18().state_dict()
    checkpoint = tmp_path / "ssl.ckpt"
    torch.save(
        {
            "state_dict": {
                f"backbone.{k}": v
                for k, v in backbone.items()
                if not k.startswith("fc.")
            }
        },
        checkpoint,
    )
    report = _example().main(
        [
            *TINY,
            "--data",
            str(isic_dir),
            "--out",
            str(tmp_path / "out"),
            "--checkpoint",
            str(checkpoint),
        ]
    )
    out = capsys.readouterr().out
    assert "loaded 120 of 120 encoder tensors" in out
    assert set(report["results"]) == {"checkpoint", "random-init"}
    for scores in report["results"].values():
        assert set(scores) == {"val_dice", "val_jaccard", "val_jaccard_thresholded"}
        assert all(0 <= v <= 1 for v in scores.values())
    assert json.loads((tmp_path / "out" / "results.json").read_text())["val_pairs"] == 2
    # the checkpoint is used: its run differs from the random-init run
    assert report["results"]["checkpoint"] != report["results"]["random-init"]


class TinySimCLR(SSLMethod):
    """A SimCLR that follows the method-plugin conventions, to run the pretraining half."""

    def __init__(self, backbone: str = "resnet18") -> None:
        super().__init__(backbone)
        self.head = SimCLRProjectionHead(self.feature_dim, 64, 32)
        self.criterion = NTXentLoss()

    def default_transform(self, input_size: int = 224):
        return SimCLRTransform(input_size=input_size)

    def training_step(self, batch, batch_idx):
        batch = to_grouped_batch(batch)
        z = self.head(self(batch.views))
        loss = self.criterion(z[0::2], z[1::2])  # image-major: views 0 and 1 alternate
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class TinyPlugin:
    @hookimpl
    def lightly_derm_components(self):
        return [
            Component(
                "method", "tiny-simclr", TinySimCLR, metadata={"task": "pretrain"}
            )
        ]


@pytest.fixture
def tiny_method():
    name = registry.register_plugin(TinyPlugin(), name="tiny_simclr_plugin")
    yield "tiny-simclr"
    registry.unregister_plugin(name)


@pytest.mark.slow
def test_pretrain_half_with_a_conforming_method(
    isic_dir, tmp_path, tiny_method
) -> None:
    """Pretraining through registry.create / default_transform / default_collate."""
    report = _example().main(
        [
            *TINY,
            "--image-size",
            "64",
            "--ssl-epochs",
            "1",
            "--ssl-batch-size",
            "4",
            "--method",
            tiny_method,
            "--data",
            str(isic_dir),
            "--out",
            str(tmp_path),
        ]
    )
    assert set(report["results"]) == {"ssl-tiny-simclr", "random-init"}
    saved = torch.load(report["checkpoint"], weights_only=True)
    assert any(k.startswith("backbone.layer4.") for k in saved["state_dict"])


@pytest.mark.slow
def test_pretrain_then_finetune(isic_dir, tmp_path) -> None:
    """The whole example with a built-in method (gravis when it exists)."""
    methods = [
        i.name
        for i in registry.list("method")
        if i.metadata.get("task") == "pretrain" and i.plugin == "lightly_derm"
    ]
    if not methods:
        pytest.skip(
            "no built-in pretraining 'method' plugin is registered yet "
            "(the method issues add them)"
        )
    method = "gravis" if "gravis" in methods else methods[0]
    report = _example().main(
        [
            *TINY,
            "--image-size",
            "64",
            "--ssl-epochs",
            "1",
            "--ssl-batch-size",
            "4",
            "--method",
            method,
            "--data",
            str(isic_dir),
            "--out",
            str(tmp_path),
        ]
    )
    assert set(report["results"]) == {f"ssl-{method}", "random-init"}
    assert Path(report["checkpoint"]).is_file()


def test_no_method_plugin_is_a_clear_error(isic_dir, tmp_path) -> None:
    with pytest.raises(
        SystemExit, match="no method plugin 'no-such-method' is registered"
    ):
        _example().main(
            [
                *TINY,
                "--method",
                "no-such-method",
                "--data",
                str(isic_dir),
                "--out",
                str(tmp_path),
            ]
        )
