"""What the jobs print: ``lightly-derm <job>: <message>`` lines, from the main process only.

Builds on Lightning's ``rank_zero_only.rank`` (the process's global rank, 0 without
distributed training), so a DDP run prints each line once.
"""

from __future__ import annotations

from lightning_fabric.utilities.rank_zero import rank_zero_only

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
    """Prints ``lightly-derm <job>: <message>`` on the main process when ``verbose``.

    Example:
        >>> say("pretrain", True, "data: 16 images")
        lightly-derm pretrain: data: 16 images
    """
    if verbose and is_main_process():
        print(f"lightly-derm {job}: {message}", flush=True)


__all__ = ["flag", "is_main_process", "say", "set_command_line"]
