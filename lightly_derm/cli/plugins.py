"""``lightly-derm plugins``: the registered components and where they come from."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

from lightly_derm.plugins.component import KINDS
from lightly_derm.plugins.errors import PluginLoadWarning

COLUMNS = ("kind", "name", "distribution", "version", "description")


def add_parser(subparsers: Any) -> None:
    """Adds the ``plugins`` subcommand."""
    parser = subparsers.add_parser(
        "plugins",
        help="list the registered components",
        description="List every registered component: kind, name, distribution, version "
        "and a one-line description. Plugins that failed to load are reported on stderr.",
    )
    parser.add_argument("--kind", choices=KINDS, help="only this kind")
    parser.add_argument(
        "--json", action="store_true", help="print a JSON list of objects"
    )
    parser.set_defaults(run=run)


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


def run(args: argparse.Namespace) -> int:
    """Prints the registered components."""
    from lightly_derm import registry

    with warnings.catch_warnings():
        # Failures are reported once below, not as Python warnings.
        warnings.simplefilter("ignore", PluginLoadWarning)
        infos = registry.list(args.kind)
        failures = registry.failures
    rows = []
    for info in infos:
        try:
            rows.append(info.as_dict())
        except ImportError as exc:  # a component whose module cannot be imported
            row = {c: getattr(info, c) for c in COLUMNS[:-1]}
            row["description"] = f"(cannot be imported: {exc})"
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows) if rows else "No components are registered.")
    for failure in failures:
        print(f"warning: {failure}", file=sys.stderr)
    return 0
