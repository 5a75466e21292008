"""Discovery through real entry-point metadata: installed, broken and duplicate plugins."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

from lightly_derm.errors import ConfigError
from lightly_derm.plugins import (
    ComponentImportError,
    DuplicateComponentError,
    DuplicatePluginError,
    PluginLoadWarning,
    Registry,
)

GOOD = """
from lightly_derm.plugins import Component, hookimpl

@hookimpl
def lightly_derm_components():
    return [Component("loss", "{name}", "collections:OrderedDict")]
"""


@pytest.fixture
def template_on_path(
    plugin_template_site: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.syspath_prepend(str(plugin_template_site))
    yield plugin_template_site
    for module in [
        m for m in sys.modules if m.startswith("lightly_derm_plugin_template")
    ]:
        del sys.modules[module]


def test_installed_template_is_discovered(
    clean_plugin_env: None, template_on_path: Path
) -> None:
    reg = Registry()
    info = reg.info("loss", "group_center")
    assert info.plugin == "plugin_template"
    assert info.distribution == "lightly-derm-plugin-template"
    assert info.version == "0.1.0"
    assert info.description.startswith("Pulls each L2-normalised embedding")
    plugin = {p.name: p for p in reg.plugins()}["plugin_template"]
    assert plugin.entry_point == "plugin_template = lightly_derm_plugin_template"
    # The loss works: identical views of a group give zero loss, scattered views more.
    loss_fn = reg.create("loss", "group_center")
    z = torch.randn(4, 8).repeat_interleave(2, dim=0)
    ids = torch.arange(4).repeat_interleave(2)
    assert loss_fn(z, ids).item() == pytest.approx(0.0, abs=1e-6)
    assert loss_fn(torch.randn(8, 8), ids).item() > 0.1


def test_broken_plugin_is_reported_and_others_load(
    clean_plugin_env: None, template_on_path: Path, make_dist
) -> None:
    make_dist(
        "broken-derm-plugin",
        "2.3",
        entry_points={"broken": "broken_derm_plugin"},
        modules={
            "broken_derm_plugin": "raise ImportError('needs a missing dependency')\n"
        },
    )
    reg = Registry()
    with pytest.warns(PluginLoadWarning) as record:
        reg.list()
    (message,) = [str(w.message) for w in record]
    assert "'broken'" in message and "broken-derm-plugin 2.3" in message
    assert "needs a missing dependency" in message
    assert [(f.plugin, f.distribution, f.version) for f in reg.failures] == [
        ("broken", "broken-derm-plugin", "2.3")
    ]
    assert ("loss", "group_center") in reg  # the others still load


def test_entry_point_to_missing_module(clean_plugin_env: None, make_dist) -> None:
    make_dist(
        "ghost-plugin",
        "0.1",
        entry_points={"ghost": "ghost_module_not_there"},
        modules={},
    )
    with pytest.warns(
        PluginLoadWarning, match="'ghost' \\(ghost-plugin 0.1\\).*ModuleNotFoundError"
    ):
        Registry().list()


def test_duplicate_component_names_both_distributions(
    clean_plugin_env: None, make_dist
) -> None:
    make_dist(
        "first-dist",
        "1.0",
        {"first": "first_mod"},
        {"first_mod": GOOD.format(name="same")},
    )
    make_dist(
        "second-dist",
        "2.0",
        {"second": "second_mod"},
        {"second_mod": GOOD.format(name="same")},
    )
    # before: every command ended in this traceback; now one warning, and only the
    # clashing name is unusable
    reg = Registry()
    with pytest.warns(PluginLoadWarning, match="loss 'same' is provided twice"):
        names = reg.names("loss")
    assert "same" not in names and "gravis" in names
    with pytest.raises(DuplicateComponentError) as excinfo:
        reg.info("loss", "SAME")
    message = str(excinfo.value)
    assert "loss 'same'" in message
    assert "first-dist 1.0" in message and "second-dist 2.0" in message
    assert (
        "LIGHTLY_DERM_BLOCK_PLUGINS=first (or =second)" in message
        or "LIGHTLY_DERM_BLOCK_PLUGINS=second (or =first)" in message
    )
    assert isinstance(excinfo.value, ConfigError) and "\n" not in message


def test_duplicate_entry_point_names_both_distributions(
    clean_plugin_env: None, make_dist
) -> None:
    make_dist(
        "alpha-dist",
        "1.0",
        {"clash": "alpha_mod"},
        {"alpha_mod": GOOD.format(name="a")},
    )
    make_dist(
        "beta-dist", "1.0", {"clash": "beta_mod"}, {"beta_mod": GOOD.format(name="b")}
    )
    reg = Registry()
    with pytest.warns(
        PluginLoadWarning,
        match="'clash'.*alpha-dist 1.0.*beta-dist 1.0.*neither is loaded"
        "|'clash'.*beta-dist 1.0.*alpha-dist 1.0.*neither is loaded",
    ):
        reg.list()
    assert ("loss", "a") not in reg and ("loss", "b") not in reg
    assert ("loss", "gravis") in reg
    assert issubclass(DuplicatePluginError, ConfigError)


def test_block_plugins(
    clean_plugin_env: None,
    template_on_path: Path,
    make_dist,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_dist(
        "first-dist",
        "1.0",
        {"first": "first_mod"},
        {"first_mod": GOOD.format(name="same")},
    )
    make_dist(
        "second-dist",
        "2.0",
        {"second": "second_mod"},
        {"second_mod": GOOD.format(name="same")},
    )
    # Blocking one of the duplicates resolves the clash, as the error message says.
    monkeypatch.setenv("LIGHTLY_DERM_BLOCK_PLUGINS", "second, plugin_template")
    reg = Registry()
    assert reg.info("loss", "same").distribution == "first-dist"
    assert ("loss", "group_center") not in reg
    assert "plugin_template" not in {p.name for p in reg.plugins()}


def test_block_builtin_plugin(
    clean_plugin_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIGHTLY_DERM_BLOCK_PLUGINS", "lightly_derm")
    reg = Registry()
    assert reg.list() == []
    assert reg.plugins() == []


def test_disable_autoload(
    clean_plugin_env: None, template_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIGHTLY_DERM_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = Registry()
    names = {p.name for p in reg.plugins()}
    assert names == {"lightly_derm"}  # the built-ins stay, without their entry point
    assert ("loss", "group_center") not in reg
    # A named plugin module still loads, as PYTEST_PLUGINS does.
    monkeypatch.setenv("LIGHTLY_DERM_PLUGINS", "lightly_derm_plugin_template")
    reg.reload()
    assert reg.info("loss", "group_center").plugin == "lightly_derm_plugin_template"


def test_reload_sees_new_plugins(clean_plugin_env: None, make_dist) -> None:
    reg = Registry()
    assert ("loss", "late") not in reg
    make_dist(
        "late-dist", "1.0", {"late": "late_mod"}, {"late_mod": GOOD.format(name="late")}
    )
    assert ("loss", "late") not in reg  # cached until reload
    reg.reload()
    assert reg.info("loss", "late").distribution == "late-dist"


def test_no_warning_without_broken_plugins(
    clean_plugin_env: None, template_on_path: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Registry().list()


@pytest.mark.parametrize(
    ("module", "match"),
    [
        ("import sys\nsys.exit(0)\n", r"raised SystemExit\(0\) while loading"),
        ("raise SystemExit('bye')\n", r"raised SystemExit\('bye'\)"),
    ],
)
def test_plugin_raising_system_exit_at_import_is_reported(
    clean_plugin_env: None, make_dist, module: str, match: str
) -> None:
    # before: every command became a silent exit 0 with no output
    make_dist("exit-plugin", "1.0", {"quitter": "quitter_mod"}, {"quitter_mod": module})
    reg = Registry()
    with pytest.warns(PluginLoadWarning, match="'quitter' \\(exit-plugin 1.0\\)"):
        assert ("loss", "gravis") in reg
    assert match and any(__import__("re").search(match, f.error) for f in reg.failures)


@pytest.mark.parametrize("blocked", ["my_plugin", "MY-PLUGIN", " My_Plugin "])
def test_block_matches_like_component_names(
    clean_plugin_env: None, make_dist, monkeypatch: pytest.MonkeyPatch, blocked: str
) -> None:
    # before: LIGHTLY_DERM_BLOCK_PLUGINS=my_plugin did not block my-plugin, which ran
    make_dist(
        "my-plugin-dist",
        "1.0",
        {"my-plugin": "my_plugin_mod"},
        {"my_plugin_mod": "raise RuntimeError('my code ran')\n"},
    )
    monkeypatch.setenv("LIGHTLY_DERM_BLOCK_PLUGINS", blocked)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        reg = Registry()
        reg.list()
    assert reg.failures == [] and "my_plugin_mod" not in sys.modules


@pytest.mark.parametrize(
    ("value", "disabled"),
    [
        ("on", True),
        ("1", True),
        ("TRUE", True),
        ("yes", True),
        ("Y", True),
        ("off", False),
        ("0", False),
        ("no", False),
        ("", False),
    ],
)
def test_disable_autoload_accepts_any_truthy_value(
    clean_plugin_env: None,
    template_on_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    disabled: bool,
) -> None:
    # before: only 1/true/yes worked; "on" was silently ignored
    monkeypatch.setenv("LIGHTLY_DERM_DISABLE_PLUGIN_AUTOLOAD", value)
    assert (("loss", "group_center") in Registry()) is not disabled


def test_unimportable_target_is_one_config_error(
    clean_plugin_env: None, make_dist
) -> None:
    make_dist(
        "lost-dist",
        "1.0",
        {"lost": "lost_mod"},
        {
            "lost_mod": GOOD.format(name="lost").replace(
                "collections:OrderedDict", "no_such_module_here:Loss"
            )
        },
    )
    reg = Registry()
    assert ("loss", "lost") in reg and ("loss", "gravis") in reg
    with pytest.raises(ComponentImportError) as info:
        reg.get("loss", "lost")
    message = str(info.value)
    assert message.startswith(
        "loss 'lost' of plugin 'lost' (lost-dist 1.0) points to "
        "'no_such_module_here:Loss', which cannot be imported"
    )
    assert isinstance(info.value, ImportError) and isinstance(info.value, ConfigError)
