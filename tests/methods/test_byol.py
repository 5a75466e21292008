from __future__ import annotations

import copy

import pytest
import torch
from lightly.loss import NegativeCosineSimilarity
from PIL import Image
from torch import nn

from lightly_derm.data import GroupedViewCollate
from lightly_derm.methods import BYOL


def tiny_backbone() -> nn.Module:
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()
    )
    net.feature_dim = 16  # type: ignore[assignment]
    return net


def tiny_byol(cls: type[BYOL] = BYOL, **kwargs) -> BYOL:
    return cls(
        backbone=tiny_backbone(),
        projection_hidden_dim=12,
        projection_dim=6,
        prediction_hidden_dim=10,
        **kwargs,
    )


def test_step_is_lightly_byol_loss_after_the_ema_update() -> None:
    torch.manual_seed(0)
    model = tiny_byol()
    online_before = copy.deepcopy(model.backbone.state_dict())
    target_before = copy.deepcopy(model.backbone_momentum.state_dict())
    with torch.no_grad():
        for param in model.backbone.parameters():  # online ≠ target
            param.add_(0.1)
    views = [torch.randn(5, 3, 16, 16) for _ in range(2)]
    loss = model.training_step((views, torch.zeros(5, dtype=torch.long)), 0)

    # Without a trainer the momentum is ema_start: target ← τ target + (1 − τ) online.
    tau = 0.996
    for name, value in model.backbone_momentum.state_dict().items():
        if value.is_floating_point() and "running" not in name:
            expected = tau * target_before[name] + (1 - tau) * (
                online_before[name] + 0.1
            )
            torch.testing.assert_close(value, expected)
    # lightly's BYOL example loss on the same forward (train-mode BatchNorm: batch stats).
    ncs = NegativeCosineSimilarity()
    p0, p1 = (model.forward_online(x) for x in views)
    z0, z1 = (model.forward_momentum(x) for x in views)
    torch.testing.assert_close(loss, 0.5 * (ncs(p0, z1) + ncs(p1, z0)))
    loss.backward()
    assert all(p.grad is None for p in model.backbone_momentum.parameters())
    assert model.backbone[0].weight.grad is not None


def test_more_views_heads_hparams_and_transform() -> None:
    model = tiny_byol()
    views = [torch.randn(4, 3, 16, 16) for _ in range(3)]
    assert torch.isfinite(model.training_step((views, torch.zeros(4)), 0))
    with pytest.raises(ValueError, match="at least 2 views"):
        model.training_step((views[:1], torch.zeros(4)), 0)
    assert model.projection_head.layers[0].in_features == 16
    assert model.prediction_head.layers[-1].out_features == 6
    named = BYOL(
        backbone="resnet18", projection_hidden_dim=32, prediction_hidden_dim=32
    )
    assert named.hparams.backbone == "resnet18" and named.hparams.ema_start == 0.996
    assert "backbone" not in model.hparams  # module-valued arguments are not saved
    assert any(k.startswith("backbone.layer4.") for k in named.state_dict())
    transform = named.default_transform(input_size=32)
    out = transform(Image.new("RGB", (48, 40), (200, 120, 90)))
    assert len(out) == 2 and all(v.shape == (3, 32, 32) for v in out)
    assert isinstance(named.default_collate(), GroupedViewCollate)
    with pytest.raises(ValueError, match="ema_start <= ema_end"):
        tiny_byol(ema_start=1.0, ema_end=0.99)
