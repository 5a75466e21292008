"""Contract tests over every registered component, as timm tests every registered model.

Every component: has a docstring and a one-line description, and can be created with
its defaults. Each kind adds its own contract below (``KIND_CONTRACTS``); a component
declares what the contract needs in ``Component.metadata`` (documented in
docs/plugins.rst). The parameters come from the registry, so the tests follow whatever
is installed and hard-code no component.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch

from lightly_derm import registry
from lightly_derm.plugins import KINDS, ComponentInfo

COMPONENTS = registry.list()
IDS = [f"{i.kind}/{i.name}" for i in COMPONENTS]

KIND_CONTRACTS: dict[str, Callable[[ComponentInfo, Any], None]] = {}


def contract(
    kind: str,
) -> Callable[
    [Callable[[ComponentInfo, Any], None]], Callable[[ComponentInfo, Any], None]
]:
    assert kind in KINDS

    def decorate(
        fn: Callable[[ComponentInfo, Any], None],
    ) -> Callable[[ComponentInfo, Any], None]:
        KIND_CONTRACTS[kind] = fn
        return fn

    return decorate


@contract("loss")
def loss_contract(info: ComponentInfo, loss_fn: Any) -> None:
    """A loss gives a finite scalar with gradients for its declared inputs."""
    assert isinstance(loss_fn, torch.nn.Module), "a loss is an nn.Module"
    inputs = info.metadata.get("inputs")
    generator = torch.Generator().manual_seed(0)
    if inputs == "grouped":
        embeddings = torch.randn(12, 16, generator=generator, requires_grad=True)
        args: tuple[torch.Tensor, ...] = (
            embeddings,
            torch.arange(4).repeat_interleave(3),
        )
        leaves = [embeddings]
    elif inputs == "pair":
        leaves = [
            torch.randn(12, 16, generator=generator, requires_grad=True)
            for _ in range(2)
        ]
        args = tuple(leaves)
    else:
        pytest.fail(
            f"loss {info.name!r} must declare metadata inputs='grouped' or 'pair', got {inputs!r}"
        )
    loss = loss_fn(*args)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for leaf in leaves:
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
        assert leaf.grad.abs().sum() > 0


@pytest.mark.parametrize("info", COMPONENTS, ids=IDS)
def test_has_docstring(info: ComponentInfo) -> None:
    doc = inspect.getdoc(info.load()) or ""
    assert doc.strip(), f"{info.kind} {info.name!r} has no docstring"
    assert info.description, f"{info.kind} {info.name!r} has no one-line description"


@pytest.mark.parametrize("info", COMPONENTS, ids=IDS)
def test_kind_contract(info: ComponentInfo) -> None:
    obj = registry.create(info.kind, info.name)
    assert obj is not None
    check = KIND_CONTRACTS.get(info.kind)
    if check is not None:
        check(info, obj)


def test_contracts_cover_installed_plugin(
    plugin_template_site, monkeypatch, clean_plugin_env
) -> None:
    """The loss contract runs on a third-party component too (and can fail)."""
    from lightly_derm.plugins import Registry

    monkeypatch.syspath_prepend(str(plugin_template_site))
    reg = Registry()
    info = reg.info("loss", "group_center")
    loss_contract(info, reg.create("loss", "group_center"))

    class NotALoss:
        pass

    with pytest.raises(AssertionError, match="nn.Module"):
        loss_contract(info, NotALoss())
