"""Runs a function in several CPU processes with torch.distributed (gloo).

Use for "distributed equals single process" tests::

    def work(rank: int, world_size: int, data) -> dict[str, Tensor]:
        ...  # torch.distributed is initialised here
        return {"loss": loss.detach(), "grad": x.grad}

    results = run_distributed(work, world_size=2, args=(data,))  # one dict per rank

``work`` must be a module-level function (it is pickled into spawned processes).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(
    rank: int,
    world_size: int,
    port: int,
    out: str,
    fn: Callable,
    args: tuple,
    timeout_s: float | None = None,
) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    timeout = timedelta(seconds=timeout_s) if timeout_s is not None else None
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timeout)
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def lightning_env(rank: int, world_size: int) -> None:
    """Inside ``work``: a Lightning ``Trainer(strategy="ddp", devices=world_size)`` then
    joins the existing process group instead of launching processes of its own.

    Prefer this to ``strategy="ddp_spawn"`` in tests: Lightning's spawned workers leave
    the gloo group alive at exit, and its threads can abort the process
    ("terminate called without an active exception") after the work succeeded.
    """
    os.environ.update(
        LOCAL_RANK=str(rank), NODE_RANK="0", WORLD_SIZE=str(world_size), RANK=str(rank)
    )


def run_distributed(
    fn: Callable[..., Any],
    world_size: int = 2,
    args: tuple = (),
    timeout_s: float | None = None,
) -> list[Any]:
    """Runs ``fn(rank, world_size, *args)`` in ``world_size`` processes; returns each result.

    ``timeout_s`` bounds every collective (gloo's default is 30 minutes), so that a
    process that fails while the others wait in a collective ends the run quickly.
    """
    with tempfile.TemporaryDirectory() as out:
        mp.start_processes(
            _entry,
            args=(world_size, _free_port(), out, fn, args, timeout_s),
            nprocs=world_size,
            join=True,
            start_method="spawn",
        )
        return [
            torch.load(Path(out) / f"rank{r}.pt", weights_only=False)
            for r in range(world_size)
        ]
