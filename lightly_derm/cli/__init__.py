"""The ``lightly-derm`` command line.

Each subcommand lives in its own module of this package and provides
``add_parser(subparsers)`` and ``run(args) -> int``; the work itself is done by the job
functions of :mod:`lightly_derm.jobs`, so the command line is a thin layer over them.
Bad arguments print one clear line (``lightly-derm: error: ...``) and exit with status
2, as argparse does; so do the errors a job raises for bad input (a missing file, an
empty folder, an unknown method, an unreadable image with ``--strict``, ...).
``--debug`` (or ``LIGHTLY_DERM_DEBUG=1``) shows their traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from lightly_derm._version import __version__
from lightly_derm.cli import evaluate, plugins, pretrain, segment

#: The subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS = [pretrain, evaluate, segment, plugins]

#: Environment variable that makes errors show their traceback.
ENV_DEBUG = "LIGHTLY_DERM_DEBUG"


class CLIError(Exception):
    """An error to show the user as one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    """Returns the ``lightly-derm`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="lightly-derm",
        description="Self-supervised learning for dermatology images: pretrain an "
        "encoder, evaluate it, fine-tune lesion segmentation.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the full traceback of an error (or set {ENV_DEBUG}=1)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean bad input, shown as one line."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from lightly_derm.data.image_io import UnreadableImageError

    return (
        CLIError,
        KeyError,  # includes the registry's UnknownComponentError
        ValueError,  # includes UnreadableImageError, MisconfigurationException
        TypeError,
        FileNotFoundError,
        NotADirectoryError,
        PermissionError,
        UnreadableImageError,
        MisconfigurationException,
    )


def error_message(exc: BaseException) -> str:
    """One line for an exception: its message (a DataLoader worker's original error)."""
    from lightly_derm.plugins.errors import UnknownComponentError

    if isinstance(exc, KeyError) and not isinstance(exc, UnknownComponentError):
        text = str(exc.args[0]) if exc.args else type(exc).__name__
    else:
        text = str(exc) or type(exc).__name__
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) > 1 and any("Traceback" in line for line in lines):
        # torch re-raises errors of DataLoader workers with the worker's traceback in
        # the message; its last line is the original error
        return lines[-1]
    return " ".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line and returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get(
        ENV_DEBUG, ""
    ).strip().lower() in ("1", "true", "yes")
    try:
        return int(args.run(args) or 0)
    except _user_errors() as exc:
        if debug:
            raise
        print(
            f"lightly-derm {args.command}: error: {error_message(exc)}",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
