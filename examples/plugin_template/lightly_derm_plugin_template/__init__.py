"""A minimal lightly-derm plugin: registers the loss and the method ``group_center``."""

from __future__ import annotations

from lightly_derm.plugins import Component, hookimpl


@hookimpl
def lightly_derm_components() -> list[Component]:
    """Returns the components of this plugin."""
    return [
        Component(
            kind="loss",
            name="group_center",
            target="lightly_derm_plugin_template.loss:GroupCenterLoss",
            metadata={"inputs": "grouped"},
        ),
        Component(
            kind="method",
            name="group_center",
            target="lightly_derm_plugin_template.method:GroupCenterMethod",
            metadata={"task": "pretrain"},
        ),
    ]
