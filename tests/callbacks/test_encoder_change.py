"""EncoderChange / filter_turn: against a numpy loop reference, stages, resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torchvision
from torch import nn

from lightly_derm.callbacks import EncoderChange, filter_turn, stage_of

SHAPES = {
    "stem.weight": (8, 3, 3, 3),
    "stage1.conv.weight": (16, 8, 3, 3),
    "stage1.dw.weight": (16, 1, 3, 3),
    "stage2.fc.weight": (5, 16),
    "stage2.bias": (5,),  # 1-D: not measured
}
STAGES = {name: name.split(".")[0] for name in SHAPES}


def reference(
    start: dict[str, np.ndarray], end: dict[str, np.ndarray], stage: str
) -> tuple[float, float]:
    """Mean per-filter angle (degrees) and norm ratio, with loops in float64."""
    angles, before, after = [], 0.0, 0.0
    for name, w0 in start.items():
        if STAGES[name] != stage or w0.ndim < 2:
            continue
        w1 = end[name]
        for i in range(w0.shape[0]):
            a, b = w0[i].ravel(), w1[i].ravel()
            cos = float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))
            angles.append(math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
        before += float((w0**2).sum())
        after += float((w1**2).sum())
    return float(np.mean(angles)), math.sqrt(after / before)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("step", [1e-3, 0.1, 3.0])
def test_matches_a_loop_reference(seed: int, step: float) -> None:
    rng = np.random.default_rng(seed)
    start = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    end = {k: v * rng.uniform(0.3, 2.0) + step * rng.standard_normal(v.shape)
           for k, v in start.items()}  # fmt: skip
    change = filter_turn(
        {k: torch.from_numpy(v).float() for k, v in start.items()},
        {k: torch.from_numpy(v).float() for k, v in end.items()},
        STAGES,
    )
    assert list(change) == ["stem", "stage1", "stage2"]
    for stage, c in change.items():
        start32 = {k: v.astype(np.float32).astype(np.float64) for k, v in start.items()}
        end32 = {k: v.astype(np.float32).astype(np.float64) for k, v in end.items()}
        turned, norm = reference(start32, end32, stage)
        assert c.turned == pytest.approx(turned, rel=1e-9, abs=1e-6)
        assert c.norm == pytest.approx(norm, rel=1e-12)
    assert change["stage1"].filters == 32 and change["stage2"].filters == 5
    assert 0 < change["stem"].turned < 90


def test_scaling_filters_turns_nothing_and_flipping_turns_180() -> None:
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    scales = torch.rand(6, 1, 1, 1, dtype=torch.float64) + 0.1
    change = filter_turn({"w": w}, {"w": w * scales}, {"w": "s"})["s"]
    assert change.turned == pytest.approx(0.0, abs=1e-5)
    assert change.norm == pytest.approx(float((w * scales).norm() / w.norm()))
    assert filter_turn({"w": w}, {"w": -w}, {"w": "s"})["s"].turned == pytest.approx(
        180.0
    )
    # each filter replaced by one orthogonal to it: 90°
    flat = w.flatten(1)
    other = torch.randn_like(flat)
    other -= (
        (other * flat).sum(1, keepdim=True) / flat.square().sum(1, keepdim=True) * flat
    )
    turned = filter_turn({"w": w}, {"w": other.view_as(w)}, {"w": "s"})["s"].turned
    assert turned == pytest.approx(90.0)


def test_a_shape_change_names_the_tensor() -> None:
    with pytest.raises(ValueError, match=r"layer1\.weight: shape \(4, 3\) at the end"):
        filter_turn(
            {"layer1.weight": torch.ones(4, 2)},
            {"layer1.weight": torch.ones(4, 3)},
            {"layer1.weight": "layer1"},
        )


def test_stages_of_a_resnet_and_an_efficientnet() -> None:
    resnet = torchvision.models.resnet18()
    names = {stage_of(resnet, k) for k, v in resnet.state_dict().items() if v.ndim > 1}
    assert names == {"conv1", "layer1", "layer2", "layer3", "layer4", "fc"}
    timm = pytest.importorskip("timm")
    lite0 = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    stages = [stage_of(lite0, k) for k, v in lite0.state_dict().items() if v.ndim > 1]
    assert list(dict.fromkeys(stages)) == [
        "conv_stem",
        *(f"blocks.{i}" for i in range(7)),
        "conv_head",
        "classifier",
    ]
    from monai.networks.nets import EfficientNetBNFeatures

    monai_b0 = EfficientNetBNFeatures("efficientnet-b0", pretrained=False)
    names = [k for k, v in monai_b0.state_dict().items() if v.ndim > 1]
    assert list(dict.fromkeys(stage_of(monai_b0, k) for k in names)) == [
        "_conv_stem",
        *(f"_blocks.{i}" for i in range(7)),
        "_conv_head",
        "_fc",
    ]


class _Encoded(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        )

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.backbone(batch[0]).square().mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _fit(model: _Encoded, steps: int, root: Path, ckpt: Path | None = None):
    callback = EncoderChange()
    trainer = pl.Trainer(
        max_steps=steps,
        callbacks=[callback],
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(8, 3, 8, 8)), batch_size=4
    )
    trainer.fit(model, data, ckpt_path=ckpt, weights_only=False)
    return trainer, callback


def test_a_resumed_fit_is_measured_from_its_true_start(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _Encoded()
    start = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainer, first = _fit(model, 2, tmp_path)
    assert set(first.change) == {"0", "1"} and first.change["1"].turned > 0
    ckpt = tmp_path / "two.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed = _Encoded()  # other random weights: only the checkpoint's count
    _, second = _fit(resumed, 4, tmp_path, ckpt)
    expected = filter_turn(
        start,
        resumed.backbone.state_dict(),
        {k: k.split(".")[0] for k, v in start.items() if v.ndim > 1},
    )
    assert second.change == expected
    assert second.change["1"].turned > first.change["1"].turned
    assert second.summary()["0"] == {
        "turned": expected["0"].turned,
        "norm": expected["0"].norm,
        "filters": 8,
    }


def test_a_module_that_is_not_an_encoder_is_named() -> None:
    class NoEncoder(pl.LightningModule):
        backbone = None

    with pytest.raises(TypeError, match=r"NoEncoder\.backbone is NoneType"):
        EncoderChange().on_fit_start(None, NoEncoder())
