"""Errors and warnings raised by the plugin system."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PluginLoadWarning(UserWarning):
    """A plugin failed to import or to list its components; the others still load."""


class UnknownComponentError(KeyError):
    """An unknown component kind or name was asked for.

    A subclass of ``KeyError`` so that ``except KeyError`` keeps working; unlike a
    plain ``KeyError`` its message is printed as it is, not as a quoted repr.

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


class DuplicateComponentError(RuntimeError):
    """Two plugins provide a component of the same kind and name."""


class DuplicatePluginError(RuntimeError):
    """Two installed distributions declare a plugin entry point of the same name."""
