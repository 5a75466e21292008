"""Errors and warnings raised by the plugin system."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from lightly_derm.errors import ConfigError


class PluginLoadWarning(UserWarning):
    """A plugin failed to import or to list its components; the others still load."""


class UnknownComponentError(ConfigError, KeyError):
    """An unknown component kind or name was asked for.

    A :class:`~lightly_derm.errors.ConfigError` (a bad name is bad configuration) and a
    ``KeyError``, so that ``except KeyError`` keeps working; unlike a plain
    ``KeyError`` its message is printed as it is, not as a quoted repr.

    Attributes:
        kind: The kind that was asked for.
        name: The name that was asked for, or ``None`` when the kind is unknown.
        choices: The names that exist (of the kind, or the kinds).
        close_matches: The entries of ``choices`` closest to what was asked for.
    """

    def __init__(
        self, what: str, asked: str, choices: Iterable[str], kind: str, name: str | None
    ) -> None:
        self.kind = kind
        self.name = name
        self.choices = sorted(choices)
        self.close_matches = difflib.get_close_matches(
            asked, self.choices, n=3, cutoff=0.5
        )
        if self.close_matches:
            hint = (
                "did you mean " + " or ".join(repr(m) for m in self.close_matches) + "?"
            )
        else:
            hint = "none is close"
        available = ", ".join(repr(c) for c in self.choices) or "none"
        self.message = f"unknown {what} {asked!r}; {hint} Available: {available}."
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class DuplicateComponentError(ConfigError, RuntimeError):
    """Two plugins provide a component of the same kind and name.

    Raised when that component is asked for (the registry warns once at discovery and
    keeps every other component usable). A :class:`~lightly_derm.errors.ConfigError`
    (its message names both providers and the way out) and a ``RuntimeError``.
    """


class DuplicatePluginError(ConfigError, RuntimeError):
    """Two installed distributions declare a plugin entry point of the same name."""


class ComponentImportError(ImportError, ConfigError):
    """A registered component whose target cannot be imported.

    An ``ImportError`` (as before) and a :class:`~lightly_derm.errors.ConfigError`: the
    message names the component, its plugin and distribution, the target and why.
    """
