"""The registry API: list / get / create, errors, names, run-time plugins."""

from __future__ import annotations

import warnings

import pytest
from torch import nn

import lightly_derm
from lightly_derm import registry as global_registry
from lightly_derm.plugins import (
    KINDS,
    Component,
    DuplicateComponentError,
    PluginLoadWarning,
    Registry,
    UnknownComponentError,
    hookimpl,
)


class _Square(nn.Module):
    """Squares its input."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale


class _Plugin:
    @hookimpl
    def lightly_derm_components(self):
        return [
            Component("loss", "square_loss", _Square),
            Component(
                "loss", "cube-loss", "collections:OrderedDict", description="Cubes."
            ),
            Component("miner", "square_miner", _Square),
        ]


@pytest.fixture
def reg(clean_plugin_env: None) -> Registry:
    r = Registry()
    r.register_plugin(_Plugin(), name="test_plugin")
    return r


def test_global_registry_is_a_registry() -> None:
    assert isinstance(global_registry, Registry)
    assert global_registry.kinds() == KINDS


def test_default_discovery_has_no_failures(clean_plugin_env: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        reg = Registry()
        reg.list()
    assert reg.failures == []
    # The built-ins come through the package's own entry point, with its metadata.
    builtin = {p.name: p for p in reg.plugins()}["lightly_derm"]
    assert builtin.entry_point == "lightly_derm = lightly_derm.plugins.builtin"
    assert builtin.distribution == "lightly-derm"
    assert builtin.version == lightly_derm.__version__


def test_list_get_create(reg: Registry) -> None:
    names = [i.name for i in reg.list("loss") if i.plugin == "test_plugin"]
    assert names == ["cube-loss", "square_loss"]  # sorted by canonical name
    assert reg.get("loss", "square_loss") is _Square
    obj = reg.create("loss", "square_loss", scale=3.0)
    assert isinstance(obj, _Square) and obj.scale == 3.0
    # case and - / _ do not matter
    assert reg.get("loss", "Square-Loss") is _Square
    assert reg.get("loss", "cube_loss").__name__ == "OrderedDict"
    assert ("loss", "square_loss") in reg
    assert ("miner", "square_loss") not in reg
    kinds = {i.kind for i in reg.list() if i.plugin == "test_plugin"}
    assert kinds == {"loss", "miner"}


def test_info_fields(reg: Registry) -> None:
    info = reg.info("loss", "square_loss")
    assert info.plugin == "test_plugin"
    assert info.distribution is None and info.version is None
    assert info.description == "Squares its input."
    assert reg.info("loss", "cube-loss").description == "Cubes."
    assert info.as_dict() == {
        "kind": "loss",
        "name": "square_loss",
        "distribution": None,
        "version": None,
        "description": "Squares its input.",
    }


def test_unknown_name_names_close_matches(reg: Registry) -> None:
    with pytest.raises(UnknownComponentError) as excinfo:
        reg.get("loss", "squar_loss")
    err = excinfo.value
    assert isinstance(err, KeyError)
    assert "squar_loss" in str(err) and "'square_loss'" in str(err)
    assert err.close_matches[0] == "square_loss"
    assert str(err) == err.message  # not a quoted repr, as a plain KeyError would print


def test_unknown_kind_names_close_matches(reg: Registry) -> None:
    with pytest.raises(UnknownComponentError, match="did you mean 'loss'") as excinfo:
        reg.list("losses")
    assert excinfo.value.name is None
    with pytest.raises(KeyError, match="unknown component kind 'model'"):
        reg.create("model", "square_loss")


def test_unknown_name_without_close_match(reg: Registry) -> None:
    with pytest.raises(UnknownComponentError, match="none is close"):
        reg.get("miner", "zzzzzz")


def test_duplicate_name_in_runtime_plugins(reg: Registry) -> None:
    class Other:
        @hookimpl
        def lightly_derm_components(self):
            return [Component("loss", "square-loss", dict)]

    reg.register_plugin(Other(), name="other")
    with pytest.warns(UserWarning, match="provided twice"):
        assert ("loss", "square_loss") not in reg
    with pytest.raises(DuplicateComponentError, match="'test_plugin'.*'other'"):
        reg.get("loss", "square-loss")
    reg.unregister_plugin("other")
    assert reg.get("loss", "square_loss") is _Square


def test_bad_component_declarations_are_isolated(reg: Registry) -> None:
    class BadKind:
        @hookimpl
        def lightly_derm_components(self):
            return [Component("model", "x", dict)]

    class Raises:
        @hookimpl
        def lightly_derm_components(self):
            raise RuntimeError("cannot list")

    class NotAList:
        @hookimpl
        def lightly_derm_components(self):
            return 3

    reg.register_plugin(BadKind(), name="bad_kind")
    reg.register_plugin(Raises(), name="raises")
    reg.register_plugin(NotAList(), name="not_a_list")
    with pytest.warns(PluginLoadWarning) as record:
        assert reg.get("loss", "square_loss") is _Square
    messages = " | ".join(str(w.message) for w in record)
    assert "'bad_kind'" in messages and "unknown kind 'model'" in messages
    assert "'raises'" in messages and "cannot list" in messages
    assert "'not_a_list'" in messages and "must return an iterable" in messages
    assert {f.plugin for f in reg.failures} == {"bad_kind", "raises", "not_a_list"}


def test_component_validation() -> None:
    with pytest.raises(ValueError, match="package.module:attribute"):
        Component("loss", "x", "no_colon")
    with pytest.raises(TypeError, match="callable"):
        Component("loss", "x", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="non-empty"):
        Component("loss", "", dict)


def test_unimportable_target_names_component(reg: Registry) -> None:
    class Missing:
        @hookimpl
        def lightly_derm_components(self):
            return [Component("loss", "ghost", "no_such_module_xyz:Ghost")]

    reg.register_plugin(Missing(), name="missing")
    with pytest.raises(
        ImportError, match="loss 'ghost' of plugin 'missing'.*no_such_module_xyz"
    ):
        reg.get("loss", "ghost")
    # The others are unaffected.
    assert reg.get("loss", "square_loss") is _Square
