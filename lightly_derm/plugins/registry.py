"""The component registry: discovers plugins through entry points and looks components up.

Builds on pluggy (the plugin manager behind pytest and tox): plugins are found under the
entry-point group ``lightly_derm`` and implement the hook
:func:`~lightly_derm.plugins.hookspecs.lightly_derm_components`. What pluggy does not do,
and this module adds: a plugin that fails to import or to list its components is reported
with its entry-point name and distribution while the others load; two providers of one
kind and name are an error that names both; and pytest's environment switches.

Environment variables (read whenever the registry (re)loads):

- ``LIGHTLY_DERM_DISABLE_PLUGIN_AUTOLOAD=1`` (any non-empty value but ``0``,
  ``false``, ``no``, ``off``: ``on``, ``true``, ``yes`` …): load no entry-point plugins
  except the built-in one (as ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``).
- ``LIGHTLY_DERM_PLUGINS=module,...``: import these modules as plugins, also when
  autoload is disabled (as ``PYTEST_PLUGINS``).
- ``LIGHTLY_DERM_BLOCK_PLUGINS=name,...``: never load (never import) the plugins with
  these entry-point names (as ``pytest -p no:name``), matched as component names are:
  case-insensitive, ``-`` equal to ``_``; ``lightly_derm`` blocks the built-ins.

A plugin that fails to import — ``SystemExit`` included — is reported once
(:class:`~lightly_derm.plugins.PluginLoadWarning`) and the others load. Two plugins
providing one component name are reported once, and only that name is unusable until
one is blocked (asking for it raises :class:`DuplicateComponentError`); two
distributions declaring one plugin name load neither, with a warning.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.metadata
import os
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy

from lightly_derm._version import __version__
from lightly_derm.plugins import hookspecs
from lightly_derm.plugins.component import KINDS, Component, ComponentInfo
from lightly_derm.plugins.errors import (
    DuplicateComponentError,
    DuplicatePluginError,
    PluginLoadWarning,
    UnknownComponentError,
)

ENV_DISABLE_AUTOLOAD = "LIGHTLY_DERM_DISABLE_PLUGIN_AUTOLOAD"
ENV_BLOCK_PLUGINS = "LIGHTLY_DERM_BLOCK_PLUGINS"
ENV_PLUGINS = "LIGHTLY_DERM_PLUGINS"
#: The entry-point name of the built-in plugin.
BUILTIN_PLUGIN = "lightly_derm"
_BUILTIN_MODULE = "lightly_derm.plugins.builtin"
_DISTRIBUTION = "lightly-derm"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, and why."""

    plugin: str
    distribution: str | None
    version: str | None
    error: str

    def __str__(self) -> str:
        source = (
            f"{self.distribution} {self.version}" if self.distribution else "run time"
        )
        return f"lightly-derm plugin {self.plugin!r} ({source}) failed to load: {self.error}"


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin.

    Attributes:
        name: The plugin name (its entry-point name, or the name given at run time).
        distribution: The installed distribution that declares it, or ``None``.
        version: That distribution's version, or ``None``.
        entry_point: ``"name = module"`` when it was found through an entry point.
    """

    name: str
    distribution: str | None
    version: str | None
    entry_point: str | None = None


@dataclass(frozen=True)
class _PluginSource:
    distribution: str | None
    version: str | None
    entry_point: str | None = None


def _split_env(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _canonical(name: str) -> str:
    return name.strip().lower().replace("-", "_")


#: Values of ``LIGHTLY_DERM_DISABLE_PLUGIN_AUTOLOAD`` that leave autoload on.
_FALSE_WORDS = ("", "0", "false", "no", "off")


def autoload_disabled(value: str | None) -> bool:
    """Whether a ``LIGHTLY_DERM_DISABLE_PLUGIN_AUTOLOAD`` value disables autoload.

    Any non-empty value does but ``0``, ``false``, ``no`` and ``off`` (any case).

    Example:
        >>> [autoload_disabled(v) for v in ("1", "on", "TRUE", "yes", "0", "off", None)]
        [True, True, True, True, False, False, False]
    """
    return (value or "").strip().lower() not in _FALSE_WORDS


class Registry:
    """Lists, looks up and creates the components of all installed plugins.

    Plugins are discovered on first use; :meth:`reload` discovers them again (after
    installing a plugin or changing the environment variables). The package-level
    instance is :data:`lightly_derm.registry`.

    Names are matched without regard to case, and ``-`` equals ``_``.

    Example:
        >>> from lightly_derm import registry
        >>> kinds = registry.kinds()
        >>> "loss" in kinds
        True
        >>> infos = registry.list("loss")   # ComponentInfo objects, sorted by name
    """

    def __init__(self, group: str = hookspecs.PROJECT_NAME) -> None:
        self.group = group
        self._lock = threading.RLock()
        self._entries: dict[str, dict[str, ComponentInfo]] | None = None
        self._failures: list[PluginFailure] = []
        self._runtime_plugins: dict[str, Any] = {}
        self._pm: pluggy.PluginManager | None = None
        self._sources: dict[str, _PluginSource] = {}
        self._clashes: dict[tuple[str, str], DuplicateComponentError] = {}

    # ------------------------------------------------------------------ public API
    def kinds(self) -> tuple[str, ...]:
        """The component kinds (:data:`~lightly_derm.plugins.KINDS`)."""
        return KINDS

    def list(self, kind: str | None = None) -> list[ComponentInfo]:
        """Lists registered components.

        Args:
            kind: Only this kind; all kinds when ``None``.

        Returns:
            :class:`~lightly_derm.plugins.ComponentInfo` objects sorted by kind and name.

        Raises:
            UnknownComponentError: ``kind`` is not a component kind.
        """
        entries = self._load()
        kinds = KINDS if kind is None else (self._check_kind(kind),)
        return [entries[k][key] for k in kinds for key in sorted(entries[k])]

    def names(self, kind: str) -> builtins.list[str]:
        """The names of the registered components of one kind, sorted."""
        return [info.name for info in self.list(kind)]

    def info(self, kind: str, name: str) -> ComponentInfo:
        """The :class:`~lightly_derm.plugins.ComponentInfo` of one component.

        Raises:
            UnknownComponentError: The kind or the name is unknown; the message names
                the close matches.
            DuplicateComponentError: Two plugins provide it; the message names both
                and how to block one.
        """
        kind = self._check_kind(kind)
        entries = self._load()[kind]
        if isinstance(name, str) and (kind, _canonical(name)) in self._clashes:
            raise self._clashes[kind, _canonical(name)]
        if not isinstance(name, str) or _canonical(name) not in entries:
            raise UnknownComponentError(
                f"{kind}",
                str(name),
                [i.name for i in entries.values()],
                kind,
                str(name),
            )
        return entries[_canonical(name)]

    def get(self, kind: str, name: str) -> Any:
        """Returns the class or factory registered as ``kind``/``name``.

        Raises:
            UnknownComponentError: The kind or the name is unknown.
            ComponentImportError: Its target cannot be imported.
        """
        return self.info(kind, name).load()

    def create(self, kind: str, name: str, **kwargs: Any) -> Any:
        """Creates the component ``kind``/``name`` with keyword arguments.

        Example:
            >>> from lightly_derm import registry
            >>> # loss = registry.create("loss", "gravis", temperature=0.1)
        """
        return self.get(kind, name)(**kwargs)

    def __contains__(self, key: object) -> bool:
        if not (isinstance(key, tuple) and len(key) == 2):
            return False
        kind, name = key
        if kind not in KINDS or not isinstance(name, str):
            return False
        return _canonical(name) in self._load()[kind]

    def __iter__(self) -> Iterator[ComponentInfo]:
        return iter(self.list())

    @property
    def failures(self) -> builtins.list[PluginFailure]:
        """The plugins that failed to load in the last discovery."""
        self._load()
        return list(self._failures)

    def plugins(self) -> builtins.list[PluginInfo]:
        """The plugins loaded in the last discovery, in registration order."""
        self._load()
        return [
            PluginInfo(name, s.distribution, s.version, s.entry_point)
            for name, s in self._sources.items()
        ]

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The pluggy plugin manager of the last discovery."""
        self._load()
        assert self._pm is not None
        return self._pm

    def register_plugin(self, plugin: Any, name: str | None = None) -> str:
        """Registers a plugin object (module, class or instance) at run time.

        Useful in notebooks and tests; installed plugins are found through entry points.

        Returns:
            The plugin name.
        """
        plugin_name = name or getattr(plugin, "__name__", None) or repr(plugin)
        with self._lock:
            if plugin_name in self._runtime_plugins:
                raise DuplicatePluginError(
                    f"a plugin named {plugin_name!r} is already registered"
                )
            self._runtime_plugins[plugin_name] = plugin
            self._entries = None
        return plugin_name

    def unregister_plugin(self, name: str) -> None:
        """Removes a plugin registered with :meth:`register_plugin`."""
        with self._lock:
            if name not in self._runtime_plugins:
                raise UnknownComponentError(
                    "run-time plugin", name, self._runtime_plugins, "plugin", name
                )
            del self._runtime_plugins[name]
            self._entries = None

    def reload(self) -> None:
        """Forgets what was discovered; the next call discovers the plugins again."""
        with self._lock:
            self._entries = None
            self._pm = None
            self._failures = []
            self._clashes = {}

    # ------------------------------------------------------------------ discovery
    def _check_kind(self, kind: str) -> str:
        if not isinstance(kind, str) or kind not in KINDS:
            raise UnknownComponentError(
                "component kind", str(kind), KINDS, str(kind), None
            )
        return kind

    def _fail(
        self, plugin: str, source: _PluginSource, error: BaseException | str
    ) -> None:
        if isinstance(error, SystemExit):
            message = (
                f"it raised SystemExit({error.code!r}) while loading (a plugin must not "
                "exit the program)"
            )
        else:
            message = (
                error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            )
        failure = PluginFailure(plugin, source.distribution, source.version, message)
        self._failures.append(failure)
        warnings.warn(str(failure), PluginLoadWarning, stacklevel=4)

    def _load(self) -> dict[str, dict[str, ComponentInfo]]:
        entries = self._entries
        if entries is not None:
            return entries
        with self._lock:
            if self._entries is None:
                self._failures = []
                self._clashes = {}
                pm, sources = self._discover()
                self._pm = pm
                self._sources = sources
                self._entries = self._collect(pm, sources)
            return self._entries

    def _discover(self) -> tuple[pluggy.PluginManager, dict[str, _PluginSource]]:
        pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        # Blocked names match as component names do: case-insensitive, - equals _.
        blocked = {_canonical(n) for n in _split_env(os.environ.get(ENV_BLOCK_PLUGINS))}
        sources: dict[str, _PluginSource] = {}
        own = _PluginSource(_DISTRIBUTION, __version__)

        def register(name: str, load: Any, source: _PluginSource) -> None:
            if _canonical(name) in blocked or pm.has_plugin(name):
                return
            try:
                plugin = load()
                pm.register(plugin, name=name)
            # A broken plugin must not take the others down, nor end the command
            # silently by raising SystemExit at import (KeyboardInterrupt still stops).
            except (Exception, SystemExit) as exc:
                self._fail(name, source, exc)
                return
            sources[name] = source

        if not autoload_disabled(os.environ.get(ENV_DISABLE_AUTOLOAD)):
            by_name: dict[str, list[Any]] = {}
            for ep in importlib.metadata.entry_points(group=self.group):
                by_name.setdefault(ep.name, []).append(ep)
            for name, points in by_name.items():
                described = [(ep, _source_of(ep)) for ep in points]
                if len({s.distribution for _, s in described}) > 1:
                    # Which one is meant cannot be told: load neither, say so once.
                    error = DuplicatePluginError(
                        f"two distributions declare a lightly-derm plugin named "
                        f"{name!r}: {' and '.join(_describe(s) for _, s in described)}; "
                        f"neither is loaded. Uninstall one, or block the name with "
                        f"{ENV_BLOCK_PLUGINS}={name}"
                    )
                    if _canonical(name) not in blocked:
                        self._fail(name, described[0][1], str(error))
                    continue
                ep, source = described[0]
                register(name, ep.load, source)
        # The built-ins, also when autoload is off or the package runs from a source tree
        # without installed metadata.
        register(BUILTIN_PLUGIN, lambda: importlib.import_module(_BUILTIN_MODULE), own)
        for module in _split_env(os.environ.get(ENV_PLUGINS)):
            register(
                module,
                lambda m=module: importlib.import_module(m),
                _PluginSource(None, None),
            )
        for name, plugin in self._runtime_plugins.items():
            register(name, lambda p=plugin: p, _PluginSource(None, None))
        # A blocked name that matches no plugin is most likely a typo: say so.
        known = {
            _canonical(ep.name)
            for ep in importlib.metadata.entry_points(group=self.group)
        } | {
            _canonical(n)
            for n in [
                BUILTIN_PLUGIN,
                *_split_env(os.environ.get(ENV_PLUGINS)),
                *self._runtime_plugins,
            ]
        }
        for name in _split_env(os.environ.get(ENV_BLOCK_PLUGINS)):
            if _canonical(name) not in known:
                warnings.warn(
                    f"{ENV_BLOCK_PLUGINS}: {name!r} matches no lightly-derm plugin "
                    f"(installed: {', '.join(sorted(known))}); nothing was blocked "
                    "by it",
                    PluginLoadWarning,
                    stacklevel=4,
                )
        return pm, sources

    def _collect(
        self, pm: pluggy.PluginManager, sources: Mapping[str, _PluginSource]
    ) -> dict[str, dict[str, ComponentInfo]]:
        entries: dict[str, dict[str, ComponentInfo]] = {kind: {} for kind in KINDS}
        # get_hookimpls() lists in registration order; pluggy calls them in reverse.
        for impl in pm.hook.lightly_derm_components.get_hookimpls():
            plugin = impl.plugin_name
            source = sources.get(plugin, _PluginSource(None, None))
            try:
                returned = impl.function()
                if not isinstance(returned, Iterable):
                    raise TypeError(
                        "lightly_derm_components() must return an iterable of "
                        f"lightly_derm.plugins.Component, got {type(returned).__name__}"
                    )
                components = list(returned)
                for component in components:
                    if not isinstance(component, Component):
                        raise TypeError(
                            f"lightly_derm_components() returned {type(component).__name__}, "
                            "expected lightly_derm.plugins.Component"
                        )
                    if component.kind not in KINDS:
                        raise ValueError(
                            f"component {component.name!r} has unknown kind {component.kind!r}; "
                            f"kinds are {', '.join(KINDS)}"
                        )
            except (Exception, SystemExit) as exc:
                self._fail(plugin, source, exc)
                continue
            for component in components:
                key = _canonical(component.name)
                info = ComponentInfo(
                    kind=component.kind,
                    name=component.name,
                    plugin=plugin,
                    distribution=source.distribution,
                    version=source.version,
                    component=component,
                )
                other = entries[component.kind].get(key)
                if (component.kind, key) in self._clashes:
                    continue
                if other is not None:
                    # Which one is meant cannot be told: the name is unusable (asking
                    # for it raises this error), everything else works; warn once.
                    error = DuplicateComponentError(
                        f"{component.kind} {component.name!r} is provided twice: by plugin "
                        f"{other.plugin!r} of {other.source} and by plugin {plugin!r} of "
                        f"{info.source}; uninstall one, or block one plugin with "
                        f"{ENV_BLOCK_PLUGINS}={other.plugin} (or ={plugin})"
                    )
                    self._clashes[component.kind, key] = error
                    del entries[component.kind][key]
                    self._fail(plugin, source, str(error))
                    continue
                entries[component.kind][key] = info
        return entries


def _source_of(ep: importlib.metadata.EntryPoint) -> _PluginSource:
    dist = ep.dist
    return _PluginSource(
        dist.metadata["Name"] if dist else None,
        dist.version if dist else None,
        f"{ep.name} = {ep.value}",
    )


def _describe(source: _PluginSource) -> str:
    if source.distribution is None:
        return "an unknown distribution"
    return f"{source.distribution} {source.version}"
