"""The hooks a lightly-derm plugin implements.

A plugin is a module (or any object) registered under the entry-point group
``lightly_derm``. It implements :func:`lightly_derm_components` with the marker
:data:`hookimpl`::

    # my_plugin.py
    from lightly_derm.plugins import Component, hookimpl

    @hookimpl
    def lightly_derm_components():
        return [Component("loss", "my_loss", "my_plugin.loss:MyLoss")]

and declares it in its ``pyproject.toml``::

    [project.entry-points.lightly_derm]
    my_plugin = "my_plugin"
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from lightly_derm.plugins.component import Component

#: The pluggy project name, also the entry-point group.
PROJECT_NAME = "lightly_derm"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Marks a plugin's hook implementation.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def lightly_derm_components() -> Iterable[Component]:  # type: ignore[empty-body]
    """Returns the components the plugin provides.

    Returns:
        An iterable of :class:`~lightly_derm.plugins.Component`. Import paths as targets
        keep ``lightly-derm plugins`` fast and keep a component whose dependencies are
        missing from breaking the others.
    """
