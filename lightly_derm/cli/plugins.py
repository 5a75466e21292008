"""``lightly-derm plugins``: the registered components and where they come from."""

from __future__ import annotations

import json
import sys
import typing
import warnings
from typing import Any

from jsonargparse import ArgumentParser

from lightly_derm.plugins.component import KINDS
from lightly_derm.plugins.errors import PluginLoadWarning

COLUMNS = ("kind", "name", "distribution", "version", "description")
#: One line for ``lightly-derm --help``.
SUMMARY = "list the registered components"


def parser() -> ArgumentParser:
    """The parser of the ``plugins`` subcommand."""
    from lightly_derm.cli.options import HelpFormatter

    result = ArgumentParser(
        description="List every registered component: kind, name, distribution, "
        "version and a one-line description. Plugins that failed to load are reported "
        "on stderr.",
        formatter_class=HelpFormatter,
    )
    result.add_argument(
        "--kind", choices=KINDS, default=None, help="only this kind (default: all)"
    )
    result.add_argument(
        "--json", action="store_true", default=None, help="print a JSON list of objects"
    )
    result.add_argument("--debug", action="store_true", default=None, help="unused")
    return result


def format_table(rows: list[dict[str, Any]]) -> str:
    """Formats rows as a plain-text table with a header line."""
    cells = [[str(row.get(c) or "-") for c in COLUMNS] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(COLUMNS)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip()
    ]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in cells
    ]
    return "\n".join(lines)


def run(values: dict[str, Any]) -> int:
    """Prints the registered components (``values``: the parsed ``kind`` and ``json``)."""
    from lightly_derm import registry

    with warnings.catch_warnings(record=True) as caught:
        # Plugin warnings are reported once below, as one line each.
        warnings.simplefilter("always", PluginLoadWarning)
        infos = registry.list(values.get("kind"))
        failures = typing.cast("list[Any]", registry.failures)
    notes: dict[str, None] = {}
    for warning in caught:
        if issubclass(warning.category, PluginLoadWarning):
            notes[str(warning.message)] = None
        else:
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    for failure in failures:
        notes.pop(str(failure), None)
    rows = []
    for info in infos:
        try:
            rows.append(info.as_dict())
        except ImportError as exc:  # a component whose module cannot be imported
            row = {c: getattr(info, c) for c in COLUMNS[:-1]}
            row["description"] = f"(cannot be imported: {exc})"
            rows.append(row)
    if values.get("json"):
        rows += [
            {
                "kind": None,
                "name": failure.plugin,
                "distribution": failure.distribution,
                "version": failure.version,
                "description": None,
                "error": str(failure),
            }
            for failure in failures
        ]
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows) if rows else "No components are registered.")
    for text in [*map(str, failures), *notes]:
        print(f"lightly-derm: warning: {text}", file=sys.stderr)
    return 0
