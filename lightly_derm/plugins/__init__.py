"""Plugin system: pluggy hooks, entry-point discovery and the component registry.

See :mod:`lightly_derm.plugins.registry` for discovery and the environment variables,
and :mod:`lightly_derm.plugins.hookspecs` for how to write a plugin.
"""

from lightly_derm.plugins.component import (
    KIND_DESCRIPTIONS,
    KINDS,
    Component,
    ComponentInfo,
)
from lightly_derm.plugins.errors import (
    ComponentImportError,
    DuplicateComponentError,
    DuplicatePluginError,
    PluginLoadWarning,
    UnknownComponentError,
)
from lightly_derm.plugins.hookspecs import PROJECT_NAME, hookimpl
from lightly_derm.plugins.registry import (
    BUILTIN_PLUGIN,
    ENV_BLOCK_PLUGINS,
    ENV_DISABLE_AUTOLOAD,
    ENV_PLUGINS,
    PluginFailure,
    PluginInfo,
    Registry,
    autoload_disabled,
)

__all__ = [
    "BUILTIN_PLUGIN",
    "ENV_BLOCK_PLUGINS",
    "ENV_DISABLE_AUTOLOAD",
    "ENV_PLUGINS",
    "KINDS",
    "KIND_DESCRIPTIONS",
    "PROJECT_NAME",
    "Component",
    "ComponentImportError",
    "ComponentInfo",
    "DuplicateComponentError",
    "DuplicatePluginError",
    "PluginFailure",
    "PluginInfo",
    "PluginLoadWarning",
    "Registry",
    "UnknownComponentError",
    "autoload_disabled",
    "hookimpl",
]
