"""The methods' ``optimizer="lars"`` (BYOL, AP-BYOL, GraVIS, SimCLR, Barlow Twins, FG-SSL):
lightly's LARS with norms and biases left plain.

Reference: one LARS step written out per parameter in float64 (no momentum): a weight
moves by ``lr * eta * |w| / (|g| + wd |w|) * (g + wd w)``; a normalisation layer's
parameter or a bias by ``lr * g`` (no scaling, no weight decay).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightly_derm.errors import ConfigError
from lightly_derm.methods import FGSSL
from tests.callbacks.test_non_finite_loss import tiny_backbone
from tests.methods.test_backbone_lr import SMALL as BACKBONE_LR_SMALL
from tests.methods.test_backbone_lr import assert_step

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*no max_epochs or max_steps:UserWarning"
)

#: The methods with ``backbone_lr`` at test size, and FG-SSL.
SMALL = {**BACKBONE_LR_SMALL, FGSSL: dict(embedding_dim=8, block_dim=8)}
ETA = 0.001  # lightly's LARS trust coefficient


def _make(cls: type, **kwargs) -> nn.Module:
    """A small method; FG-SSL's blocks need a ResNet's stages."""
    backbone = "resnet18" if cls is FGSSL else tiny_backbone()
    return cls(backbone=backbone, **SMALL[cls], **kwargs)


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    result = model.configure_optimizers()
    return result["optimizer"] if isinstance(result, dict) else result


def _plain_ids(model: nn.Module) -> set[int]:
    """Independently of lightly's helper: every parameter of a norm layer, every bias."""
    plain = set()
    for module in model.modules():
        norm = isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm))
        for name, p in module.named_parameters(recurse=False):
            if norm or name == "bias":
                plain.add(id(p))
    return plain


@pytest.mark.parametrize("cls", list(SMALL))
@pytest.mark.parametrize(("lr", "weight_decay", "backbone_lr"), [
    (0.5, 1e-6, None), (2.0, 1e-3, None), (1.0, 5e-4, 0.1),
])  # fmt: skip
def test_lars_step_matches_the_written_out_step(
    cls: type, lr: float, weight_decay: float, backbone_lr: float | None
) -> None:
    torch.manual_seed(0)
    model = _make(
        cls,
        optimizer="lars",
        lr=lr,
        backbone_lr=backbone_lr,
        momentum=0.0,
        weight_decay=weight_decay,
    )
    optimizer = _optimizer(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    plain = _plain_ids(model)
    assert plain and len(plain) < len(trainable)  # both kinds are there
    in_backbone = {id(p) for p in model.backbone.parameters()}
    gen = torch.Generator().manual_seed(1)
    expected = {}
    for p in trainable:
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        w, g = p.detach().double(), p.grad.double()
        rate = backbone_lr if backbone_lr and id(p) in in_backbone else lr
        if id(p) in plain:
            step = g
        else:
            d = g + weight_decay * w
            step = ETA * w.norm() / (g.norm() + weight_decay * w.norm() + 1e-8) * d
        expected[id(p)] = w - rate * step
    assert_step(optimizer, trainable, expected)


@pytest.mark.parametrize("cls", list(SMALL))
@pytest.mark.parametrize(("lr", "weight_decay", "backbone_lr", "momentum"), [
    (1e-3, 0.05, None, 0.9), (3e-4, 0.0, None, 0.5), (1e-3, 5e-4, 1e-4, 0.9),
])  # fmt: skip
def test_adamw_step_matches_the_written_out_step(
    cls: type,
    lr: float,
    weight_decay: float,
    backbone_lr: float | None,
    momentum: float,
) -> None:
    """AdamW's first step written out: decoupled decay ``w (1 - lr wd)`` on weights
    only, then ``lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = g``,
    ``v_hat = g^2``; two steps also use ``momentum`` as the first beta."""
    torch.manual_seed(0)
    model = _make(
        cls,
        optimizer="adamw",
        lr=lr,
        backbone_lr=backbone_lr,
        momentum=momentum,
        weight_decay=weight_decay,
    )
    optimizer = _optimizer(model)
    assert type(optimizer) is torch.optim.AdamW
    trainable = [p for p in model.parameters() if p.requires_grad]
    plain = _plain_ids(model)
    in_backbone = {id(p) for p in model.backbone.parameters()}
    gen = torch.Generator().manual_seed(1)
    grads = [
        {id(p): torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in trainable}
        for _ in range(2)
    ]
    state = {id(p): p.detach().double().clone() for p in trainable}
    m = {k: torch.zeros_like(v) for k, v in state.items()}
    v = {k: torch.zeros_like(w) for k, w in state.items()}
    for t, g_of in enumerate(grads, start=1):
        for p in trainable:
            k, g = id(p), g_of[id(p)].double()
            rate = backbone_lr if backbone_lr and k in in_backbone else lr
            decay = 0.0 if k in plain else weight_decay
            w = state[k] * (1 - rate * decay)
            m[k] = momentum * m[k] + (1 - momentum) * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            m_hat, v_hat = m[k] / (1 - momentum**t), v[k] / (1 - 0.999**t)
            state[k] = w - rate * m_hat / (v_hat.sqrt() + 1e-8)
            p.grad = g_of[k].clone()
        optimizer.step()
    for p in trainable:
        torch.testing.assert_close(p.detach().double(), state[id(p)])


@pytest.mark.parametrize("cls", list(SMALL))
def test_sgd_stays_the_default_with_one_group(cls: type) -> None:
    model = _make(cls)
    optimizer = _optimizer(model)
    assert type(optimizer) is torch.optim.SGD
    assert len(optimizer.param_groups) == (
        2 if cls is FGSSL else 1
    )  # FG-SSL: head, backbone
    assert model.hparams["optimizer"] == "sgd"


@pytest.mark.parametrize("cls", list(SMALL))
def test_lars_is_saved_and_reloaded_from_the_hyperparameters(cls: type) -> None:
    model = cls(backbone="resnet18", optimizer="lars", weight_decay=1e-4, **SMALL[cls])
    again = cls(**model.hparams)
    assert type(_optimizer(again)).__name__ == "LARS"


@pytest.mark.parametrize("cls", list(SMALL))
@pytest.mark.parametrize("bad", ["adam", "LARS", "AdamW", None])
def test_unknown_optimizer_is_one_line_naming_it(cls: type, bad) -> None:
    with pytest.raises(
        ConfigError, match="optimizer must be 'sgd' or 'lars' or 'adamw', got"
    ):
        _make(cls, optimizer=bad)


@pytest.mark.parametrize("cls", list(SMALL))
def test_lars_without_weight_decay_is_refused(cls: type) -> None:
    """lightly's LARS scales only weight-decayed parameters: it would be plain SGD."""
    with pytest.raises(ConfigError, match="optimizer='lars' needs weight_decay > 0"):
        _make(cls, optimizer="lars", weight_decay=0.0)
