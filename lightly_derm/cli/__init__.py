"""The ``lightly-derm`` command line.

Each subcommand lives in its own module of this package and provides
``add_parser(subparsers)`` and ``run(args) -> int``. Bad arguments print one clear line
(``lightly-derm: error: ...``) and exit with status 2, as argparse does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lightly_derm._version import __version__
from lightly_derm.cli import plugins

#: The subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS = [plugins]


class CLIError(Exception):
    """An error to show the user as one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    """Returns the ``lightly-derm`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="lightly-derm",
        description="Self-supervised learning for dermatology images.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line and returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (CLIError, KeyError, ValueError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"lightly-derm {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
