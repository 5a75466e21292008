"""Fused optimisers: the same update as a float64 loop reference, and their fallbacks."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from lightly_derm.methods._optim import make_optimizer
from lightly_derm.utils.fused import fused_optimizer, uses_grad_scaler

SHAPES = [[(7,)], [(3, 5), (5,)], [(4, 3, 3, 3), (4,), (2, 4, 1, 1)]]


def _sgd_reference(
    params: list[torch.Tensor],
    grads: list[list[torch.Tensor]],
    lr: float,
    momentum: float,
    weight_decay: float,
) -> list[torch.Tensor]:
    """SGD with momentum and L2 weight decay, element by element in float64."""
    out = []
    for index, start in enumerate(params):
        w = start.double().flatten().tolist()
        buf = [0.0] * len(w)
        for step, step_grads in enumerate(grads):
            g = step_grads[index].double().flatten().tolist()
            for i in range(len(w)):
                d = g[i] + weight_decay * w[i]
                buf[i] = d if step == 0 else momentum * buf[i] + d
                w[i] -= lr * buf[i]
        out.append(torch.tensor(w, dtype=torch.float64).view(start.shape))
    return out


def _adamw_reference(
    params: list[torch.Tensor],
    grads: list[list[torch.Tensor]],
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    eps: float = 1e-8,
) -> list[torch.Tensor]:
    """AdamW (decoupled weight decay, bias correction), element by element in float64."""
    out = []
    for index, start in enumerate(params):
        w = start.double().flatten().tolist()
        m = [0.0] * len(w)
        v = [0.0] * len(w)
        for step, step_grads in enumerate(grads, start=1):
            g = step_grads[index].double().flatten().tolist()
            for i in range(len(w)):
                w[i] *= 1 - lr * weight_decay
                m[i] = betas[0] * m[i] + (1 - betas[0]) * g[i]
                v[i] = betas[1] * v[i] + (1 - betas[1]) * g[i] ** 2
                m_hat = m[i] / (1 - betas[0] ** step)
                v_hat = v[i] / (1 - betas[1] ** step)
                w[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
        out.append(torch.tensor(w, dtype=torch.float64).view(start.shape))
    return out


def _run(
    optimizer_class: type[torch.optim.Optimizer],
    shapes: list[tuple[int, ...]],
    steps: int,
    **kwargs: Any,
) -> tuple[torch.optim.Optimizer, list[torch.Tensor], list[torch.Tensor], list[Any]]:
    generator = torch.Generator().manual_seed(len(shapes) * 10 + steps)
    start = [torch.randn(shape, generator=generator) for shape in shapes]
    grads = [
        [torch.randn(shape, generator=generator) for shape in shapes]
        for _ in range(steps)
    ]
    params = [nn.Parameter(p.clone()) for p in start]
    optimizer = fused_optimizer(optimizer_class, params, **kwargs)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
    return optimizer, start, [p.detach() for p in params], grads


@pytest.mark.parametrize("shapes", SHAPES)
def test_fused_sgd_matches_float64_loop(shapes: list[tuple[int, ...]]) -> None:
    optimizer, start, final, grads = _run(
        torch.optim.SGD, shapes, 4, lr=0.1, momentum=0.9, weight_decay=5e-3
    )
    assert optimizer.defaults.get("fused") is True
    expected = _sgd_reference(start, grads, 0.1, 0.9, 5e-3)
    for got, want in zip(final, expected, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shapes", SHAPES)
def test_fused_adamw_matches_float64_loop(shapes: list[tuple[int, ...]]) -> None:
    optimizer, start, final, grads = _run(
        torch.optim.AdamW, shapes, 5, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1
    )
    assert optimizer.defaults.get("fused") is True
    expected = _adamw_reference(start, grads, 0.01, (0.8, 0.99), 0.1)
    for got, want in zip(final, expected, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_under_a_grad_scaler_uses_foreach() -> None:
    fp16 = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=object()))
    optimizer = fused_optimizer(
        torch.optim.AdamW, nn.Linear(2, 2).parameters(), trainer=fp16, lr=1e-3
    )
    assert not optimizer.defaults.get("fused")
    assert optimizer.defaults.get("foreach") is True


class _NoFused(torch.optim.SGD):
    """An optimiser whose fused kernel is missing (as on an old PyTorch)."""

    def __init__(self, params: Any, fused: bool | None = None, **kwargs: Any) -> None:
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be ...")
        super().__init__(params, **kwargs)


class _NoOptions(torch.optim.SGD):
    """An optimiser without ``fused`` or ``foreach`` arguments."""

    def __init__(self, params: Any, lr: float) -> None:
        super().__init__(params, lr=lr)


def test_falls_back_to_foreach_then_to_the_default() -> None:
    params = list(nn.Linear(2, 2).parameters())
    no_fused = fused_optimizer(_NoFused, params, lr=0.1)
    assert no_fused.defaults["foreach"] is True and not no_fused.defaults["fused"]
    plain = fused_optimizer(_NoOptions, params, lr=0.1)
    assert plain.defaults["foreach"] is None and plain.defaults["lr"] == 0.1


def test_bad_arguments_still_fail_with_the_optimisers_own_error() -> None:
    with pytest.raises(ValueError, match="Invalid learning rate"):
        fused_optimizer(torch.optim.SGD, nn.Linear(2, 2).parameters(), lr=-1.0)


def test_uses_grad_scaler() -> None:
    assert not uses_grad_scaler(None)
    assert not uses_grad_scaler(SimpleNamespace(precision_plugin=SimpleNamespace()))
    fp16 = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=object()))
    assert uses_grad_scaler(fp16)


def test_methods_adamw_is_fused_except_under_a_grad_scaler() -> None:
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    optimizer = make_optimizer(module, "adamw", module.parameters(), 0.1, 0.9, 1e-4)
    assert optimizer.defaults["fused"] is True
    module._trainer = SimpleNamespace(  # type: ignore[assignment]
        precision_plugin=SimpleNamespace(scaler=object())
    )
    optimizer = make_optimizer(module, "adamw", module.parameters(), 0.1, 0.9, 1e-4)
    assert not optimizer.defaults["fused"] and optimizer.defaults["foreach"] is True


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_methods_optimisers_step_when_parameters_join_later(name: str) -> None:
    """FG-SSL's progressive steps: a parameter gets its first gradient at step 2.

    PyTorch's fused SGD (up to 2.14 at least) fails here with its momentum buffers
    partly initialised, so the methods' SGD is not fused.
    """
    first, second = nn.Linear(3, 3), nn.Linear(3, 3)
    module = nn.ModuleList([first, second])
    optimizer = make_optimizer(module, name, module.parameters(), 0.1, 0.9, 1e-4)
    x = torch.randn(4, 3)
    first(x).sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    before = second.weight.detach().clone()
    (first(x) + second(x)).sum().backward()
    optimizer.step()
    assert not torch.equal(second.weight, before)
