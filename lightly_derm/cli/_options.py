"""Options shared by the job subcommands: ``--config``/``--print_config``, hardware, ``--debug``.

Builds on :mod:`argparse` and :mod:`lightly_derm.jobs.config`. A job option is an
argparse argument whose ``dest`` is a field of the job's configuration dataclass and
whose default is ``None``; the options given on the command line override those of the
``--config`` YAML file, and the job fills in the rest.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # the jobs import torch; the parser must build without it
    from lightly_derm.jobs.config import JobConfig

C = TypeVar("C", bound="JobConfig")

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--print_config``."""
    group = parser.add_argument_group("configuration")
    group.add_argument(
        "--config",
        metavar="FILE",
        help="a YAML file of options (the keys are the option names, - or _); options "
        "given on the command line override it",
    )
    group.add_argument(
        "--print_config",
        "--print-config",
        dest="print_config",
        action="store_true",
        help="print the effective configuration as YAML (every default filled in) and "
        "exit; save it and pass it back with --config",
    )


def add_hardware_options(parser: argparse.ArgumentParser) -> None:
    """Lightning's ``--accelerator``, ``--devices``, ``--strategy``, ``--precision``."""
    group = parser.add_argument_group("hardware (Lightning Trainer)")
    group.add_argument(
        "--accelerator",
        choices=ACCELERATORS,
        help="default: auto (a GPU if there is one)",
    )
    group.add_argument(
        "--devices", help="how many devices, or which: 1, 4, '0,1', auto (default)"
    )
    group.add_argument(
        "--strategy", help="auto (default), ddp, ddp_find_unused_parameters_true, ..."
    )
    group.add_argument(
        "--precision",
        help="32-true, 16-mixed, bf16-mixed, ...; default bf16-mixed on a CUDA GPU that "
        "has it, else 32-true",
    )


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    """``--debug``: show tracebacks (also ``LIGHTLY_DERM_DEBUG=1``)."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of an error (or set LIGHTLY_DERM_DEBUG=1)",
    )


def bool_option(parser: Any, name: str, help: str) -> None:
    """``--name`` / ``--no-name`` with default ``None`` (unset)."""
    parser.add_argument(name, action=argparse.BooleanOptionalAction, help=help)


def read_config_file(args: argparse.Namespace) -> dict[str, Any]:
    """The mapping in ``--config``, or an empty one."""
    from lightly_derm.jobs.config import load_yaml_mapping

    path = getattr(args, "config", None)
    return load_yaml_mapping(path) if path else {}


def job_config(
    config_cls: type[C],
    args: argparse.Namespace,
    file_values: Mapping[str, Any] | None = None,
) -> C:
    """The configuration from the ``--config`` file and the command line (which wins).

    Raises:
        ValueError: The file has a key that is not an option (named, with close matches).
    """
    source = f"config file {args.config}" if getattr(args, "config", None) else "config"
    config = config_cls.from_mapping(file_values or {}, source=source)
    given = {
        name: getattr(args, name)
        for name in config_cls.field_names()
        if getattr(args, name, None) is not None
    }
    return config.updated(given, source="the command line")
