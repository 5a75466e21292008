"""A CSV logger that writes one ``metrics.csv`` per run folder and continues it on resume.

Builds on Lightning's :class:`~pytorch_lightning.loggers.CSVLogger` (same columns: the
logged metrics, ``epoch`` and ``step``; ``hparams.yaml`` beside it). Lightning's logger
deletes an existing ``metrics.csv`` in its folder; this one keeps the rows of the
interrupted run up to the resumed step and appends after them, so the loss curve of a
resumed run is one continuous file.
"""

from __future__ import annotations

import csv
import os
import typing
from pathlib import Path
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

#: The metrics file name (Lightning's).
METRICS_FILE = ExperimentWriter.NAME_METRICS_FILE


class _ContinuingWriter(ExperimentWriter):
    """Lightning's CSV writer, continuing an existing file instead of deleting it."""

    def __init__(self, log_dir: str, keep_through_step: int | None) -> None:
        self._keep_through_step = keep_through_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if self._keep_through_step is None:  # a new run: start a new file
            path.unlink()
            return
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            header = list(reader.fieldnames or [])
            rows = [
                row
                for row in reader
                if _step(row.get("step")) is not None
                and _step(row.get("step")) <= self._keep_through_step  # type: ignore[operator]
            ]
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(header)


def _step(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


class ContinuingCSVLogger(CSVLogger):
    """Writes ``<save_dir>/metrics.csv`` (and ``hparams.yaml``), continuing it on resume.

    Args:
        save_dir: The run folder; the files go directly into it.
        keep_through_step: ``None`` for a new run (an old ``metrics.csv`` is replaced);
            on resume, the logging step stored in the checkpoint (Lightning's
            ``_batches_that_stepped``, the step of the batch the checkpoint was written
            after): rows of later steps — logged after the checkpoint, before the
            interruption — are dropped, the rest kept, and the resumed run appends.
        flush_logs_every_n_steps: How often rows are written (Lightning's).

    Example:
        >>> from lightly_derm.jobs.csv_logger import ContinuingCSVLogger
        >>> logger = ContinuingCSVLogger("runs/demo")
        >>> logger.log_dir
        'runs/demo'
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        keep_through_step: int | None = None,
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        super().__init__(
            os.fspath(save_dir),
            name="",
            version="",
            flush_logs_every_n_steps=flush_logs_every_n_steps,
        )
        self._keep_through_step = keep_through_step

    @property
    def log_dir(self) -> str:
        """The run folder itself (no ``name/version`` subfolders)."""
        return os.path.normpath(self.save_dir)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The writer (created on first use)."""
        if self._experiment is None:
            self._experiment = _ContinuingWriter(self.log_dir, self._keep_through_step)
        return typing.cast(ExperimentWriter, self._experiment)
