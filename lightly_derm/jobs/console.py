"""What the jobs print: ``lightly-derm <job>: <message>`` lines, from the main process only.

Builds on Lightning's ``rank_zero_only.rank`` (the process's global rank, 0 without
distributed training), so a DDP run prints each line once.
"""

from __future__ import annotations

from lightning_fabric.utilities.rank_zero import rank_zero_only


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


__all__ = ["is_main_process", "say"]
