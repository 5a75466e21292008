"""What the jobs say: ``lightly-derm <job>: <message>`` lines, from the main process only.

Builds on the :mod:`logging` module (logger ``lightly_derm.jobs``, level INFO) and
Lightning's ``rank_zero_only.rank`` (the process's global rank, 0 without distributed
training), so a DDP run says each line once. By default the logger writes the bare
lines to standard output (:data:`HANDLER`, as Lightning does for its own logger); a
notebook or a service silences or redirects them as any logger::

    import logging
    logging.getLogger("lightly_derm.jobs").setLevel(logging.WARNING)  # silence
    logging.getLogger("lightly_derm.jobs").removeHandler(console.HANDLER)  # redirect:
    logging.getLogger("lightly_derm.jobs").propagate = True  # to the root's handlers
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from lightning_fabric.utilities.rank_zero import rank_zero_only

#: The logger of the jobs' lines.
LOGGER_NAME = "lightly_derm.jobs"
logger = logging.getLogger(LOGGER_NAME)


class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler that writes to ``sys.stdout`` as it is when a line is said.

    So a redirection of ``sys.stdout`` (a notebook cell, ``contextlib.redirect_stdout``,
    a test's capture) sees the lines.
    """

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        """The current ``sys.stdout``."""
        return sys.stdout

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


#: The default handler of :data:`logger` (bare lines to standard output).
HANDLER = StdoutHandler()
HANDLER.setFormatter(logging.Formatter("%(message)s"))
if not logger.handlers:
    logger.addHandler(HANDLER)
    logger.propagate = False
if logger.level == logging.NOTSET:
    logger.setLevel(logging.INFO)

#: Whether the jobs run under the ``lightly-derm`` command line (set by it), so that
#: messages name its flags (``--overwrite``) rather than keywords (``overwrite=True``).
_COMMAND_LINE = False


def set_command_line(value: bool) -> None:
    """Says whether the jobs run under the ``lightly-derm`` command line."""
    global _COMMAND_LINE
    _COMMAND_LINE = bool(value)


def flag(name: str, value: object = True) -> str:
    """How to pass an option here: ``--name`` (value) on the command line, ``name=value`` from Python.

    Example:
        >>> flag("overwrite")
        'overwrite=True'
        >>> flag("out", "runs/x")
        "out='runs/x'"
    """
    if _COMMAND_LINE:
        option = "--" + name.replace("_", "-")
        return option if value is True else f"{option} {value}"
    return f"{name}={value!r}"


def is_main_process() -> bool:
    """Whether this is the process of global rank 0 (the one that writes and prints)."""
    return int(getattr(rank_zero_only, "rank", 0)) == 0


def say(job: str, verbose: bool, message: str) -> None:
    """Logs ``lightly-derm <job>: <message>`` (INFO) on the main process when ``verbose``.

    Example:
        >>> say("pretrain", True, "data: 16 images")
        lightly-derm pretrain: data: 16 images
    """
    if verbose and is_main_process():
        logger.info("lightly-derm %s: %s", job, message)


__all__ = [
    "HANDLER",
    "LOGGER_NAME",
    "StdoutHandler",
    "flag",
    "is_main_process",
    "logger",
    "say",
    "set_command_line",
]
