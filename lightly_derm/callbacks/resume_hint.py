"""One line saying how to continue a run that stopped (Ctrl+C, SIGTERM, an error).

Builds on Lightning's ``Callback.on_exception`` hook.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class ResumeHint(Callback):
    """Prints how to continue a run that was interrupted (Ctrl+C, SIGTERM, an error).

    Args:
        checkpoint: The checkpoint ``--resume`` continues from.
        command: The command that continues the run.
        restart: The command that starts it again, said when no checkpoint was
            written yet (there is nothing to continue); default: ``command``.
    """

    def __init__(
        self, checkpoint: str | Path, command: str, restart: str | None = None
    ) -> None:
        self.checkpoint = Path(checkpoint)
        self.command = command
        self.restart = restart if restart is not None else command
        #: The exception that stopped the run (``None`` while it runs or when it ended).
        self.exception: BaseException | None = None

    def on_exception(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        exception: BaseException,
    ) -> None:
        """Says where the run stopped and how to continue it."""
        self.exception = exception
        if not trainer.is_global_zero:
            return
        if self.checkpoint.is_file():
            where = f"the last checkpoint is {self.checkpoint}. Continue with"
            command = self.command
        else:
            where = "no checkpoint was written yet. Start it again with"
            command = self.restart
        print(
            f"\nlightly-derm: training stopped at step {trainer.global_step} "
            f"({type(exception).__name__}); {where}: {command}",
            file=sys.stderr,
        )
