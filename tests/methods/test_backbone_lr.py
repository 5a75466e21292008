"""``backbone_lr`` of BYOL, AP-BYOL, GraVIS, SimCLR and Barlow Twins: the backbone in its own SGD group.

Reference: one plain SGD step written out per parameter (p - rate * grad, no momentum,
no weight decay), with the rate the parameter's module should get.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightly_derm.errors import ConfigError
from lightly_derm.methods import APBYOL, BYOL, BarlowTwins, GraVIS, SimCLR
from tests.callbacks.test_non_finite_loss import tiny_backbone

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*no max_epochs or max_steps:UserWarning"
)

SMALL = {
    BYOL: dict(projection_hidden_dim=12, projection_dim=6, prediction_hidden_dim=10),
    APBYOL: dict(projection_hidden_dim=12, projection_dim=6, prediction_hidden_dim=10),
    GraVIS: dict(hidden_dim=12, output_dim=6),
    SimCLR: dict(hidden_dim=12, output_dim=6),
    BarlowTwins: dict(hidden_dim=12, output_dim=6),
}


def _method(cls: type, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return cls(
        backbone=tiny_backbone(), momentum=0.0, weight_decay=0.0, **SMALL[cls], **kwargs
    )


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    result = model.configure_optimizers()
    return result["optimizer"] if isinstance(result, dict) else result


def assert_step(
    optimizer: torch.optim.Optimizer,
    trainable: list[torch.nn.Parameter],
    expected: dict[int, torch.Tensor],
) -> None:
    """One optimizer step lands every parameter on its written-out value (float64),
    and every trainable parameter is in exactly one group."""
    optimizer.step()
    for p in trainable:
        torch.testing.assert_close(p.detach().double(), expected[id(p)])
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in trainable)


@pytest.mark.parametrize("cls", list(SMALL))
@pytest.mark.parametrize(("lr", "backbone_lr"), [(0.1, 0.01), (0.05, 0.2)])
def test_one_step_moves_backbone_at_backbone_lr_and_the_rest_at_lr(
    cls: type, lr: float, backbone_lr: float
) -> None:
    model = _method(cls, lr=lr, backbone_lr=backbone_lr)
    optimizer = _optimizer(model)
    assert [g["lr"] for g in optimizer.param_groups] == [backbone_lr, lr]
    trainable = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(1)
    for p in trainable:
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
    in_backbone = {id(p) for p in model.backbone.parameters()}
    expected = {
        id(p): p.detach().double()
        - (backbone_lr if id(p) in in_backbone else lr) * p.grad.double()
        for p in trainable
    }
    assert_step(optimizer, trainable, expected)


@pytest.mark.parametrize("cls", list(SMALL))
@pytest.mark.parametrize("backbone_lr", [None, 0.1])
def test_no_or_equal_backbone_lr_keeps_one_group(cls: type, backbone_lr) -> None:
    """As before the option (older checkpoints' optimiser states still load)."""
    optimizer = _optimizer(_method(cls, lr=0.1, backbone_lr=backbone_lr))
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["lr"] == 0.1


@pytest.mark.parametrize("cls", list(SMALL))
@pytest.mark.parametrize("bad", [0.0, -0.01, float("nan")])
def test_bad_backbone_lr_is_one_line_naming_it(cls: type, bad: float) -> None:
    with pytest.raises(ConfigError, match="backbone_lr"):
        _method(cls, backbone_lr=bad)


@pytest.mark.parametrize("cls", list(SMALL))
def test_backbone_lr_is_a_hyperparameter(cls: type) -> None:
    assert _method(cls, backbone_lr=0.003).hparams["backbone_lr"] == 0.003
