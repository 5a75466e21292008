"""Resuming a run exactly: random states in checkpoints, the data position restored.

Builds on Lightning's callback state (``Callback.state_dict`` / ``load_state_dict``,
stored in the checkpoint under ``"callbacks"``), the state getters of torch, NumPy and
Python's :mod:`random`, and Lightning's resumable-DataLoader protocol. Lightning does
not checkpoint random states: a run resumed from a checkpoint draws different random
numbers than the run that wrote it (FG-SSL's jigsaw permutations, dropout, anything in
``training_step`` that samples). And when ``configure_optimizers`` reads
``trainer.estimated_stepping_batches`` (as BYOL and AP-BYOL do, to size their
schedules), Lightning 2.6 loads the training DataLoader *before* it restores the
checkpoint's loop state, and then never hands the DataLoader its saved position.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn

__all__ = ["ExactResume", "get_rng_states", "set_rng_states"]


def get_rng_states() -> dict[str, Any]:
    """The global random states of torch (CPU and CUDA), NumPy and :mod:`random`.

    In plain types and tensors only, so that a checkpoint holding them loads with
    ``torch.load(weights_only=True)`` (NumPy's state array becomes an int64 tensor).
    """
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": version,
            "internal": list(internal),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restores states from :func:`get_rng_states`."""
    torch.set_rng_state(states["torch"].cpu())
    numpy = states["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    python = states["python"]
    random.setstate(
        (python["version"], tuple(python["internal"]), python["gauss_next"])
    )
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            rank_zero_warn(
                f"the checkpoint holds CUDA random states of {len(cuda)} devices but "
                f"{torch.cuda.device_count()} are visible; CUDA states are not restored"
            )


class ExactResume(Callback):
    """Makes a run resumed from a checkpoint continue exactly as the interrupted one.

    Two things that Lightning 2.6 does not do:

    - **Random states.** The global generators (torch CPU and CUDA, NumPy,
      :mod:`random`) go into every checkpoint, and are restored just before the first
      batch after resuming — once Lightning is done setting up, which itself draws
      random numbers (e.g. for a DataLoader's shuffling). So ``training_step`` draws the
      same numbers as in the interrupted run. Under DDP every process's states are
      gathered into the checkpoint and each gets its own back (same world size).
    - **Data position.** A resumable training DataLoader
      (:class:`~lightly_derm.data.ResumableDataLoader`, or any with ``state_dict`` /
      ``load_state_dict``) gets its saved position even when the DataLoader was loaded
      before the checkpoint's loop state was restored (``estimated_stepping_batches`` in
      ``configure_optimizers``), in which case Lightning skips it silently.

    With :class:`~lightly_derm.data.ResumableDataLoader` (whose augmentations draw from
    per-sample seeds, so loading never touches the global generators) a run resumed
    from a mid-epoch checkpoint ends with the same weights as an uninterrupted run, bit
    for bit, on the CPU with ``Trainer(deterministic=True)`` (tested for every
    registered method). With an ordinary ``DataLoader`` the random states are still
    restored, but the epoch restarts from its first batches, as Lightning does.

    Example:
        >>> import pytorch_lightning as pl
        >>> from lightly_derm.callbacks import ExactResume
        >>> trainer = pl.Trainer(callbacks=[ExactResume()], logger=False)
    """

    def __init__(self) -> None:
        super().__init__()
        self._trainer: pl.Trainer | None = None
        self._pending: dict[str, Any] | None = None

    def setup(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
    ) -> None:
        """Keeps the trainer (its world size and rank are needed when saving)."""
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        """The random states of every process, captured now (when a checkpoint is saved)."""
        states = get_rng_states()
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, states)
            return {"per_rank": gathered}
        return {"per_rank": [states]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keeps the states to restore before the next training batch."""
        per_rank = state_dict.get("per_rank") or []
        if not per_rank:
            return
        trainer = self._trainer
        rank = trainer.global_rank if trainer is not None else 0
        world_size = trainer.world_size if trainer is not None else 1
        if len(per_rank) != world_size:
            rank_zero_warn(
                f"the checkpoint holds random states of {len(per_rank)} processes, this "
                f"run has {world_size}; every process starts from those of process 0"
            )
            rank = 0
        self._pending = per_rank[rank]

    def on_train_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        """Hands the training DataLoader its saved position if Lightning did not."""
        fit_loop = trainer.fit_loop
        pending = getattr(fit_loop, "_combined_loader_states_to_load", None)
        if not pending or not fit_loop.restarting:
            return
        load = getattr(fit_loop, "_load_combined_loader_states", None)
        fetcher = getattr(fit_loop, "_data_fetcher", None)
        if load is None or fetcher is None:  # another Lightning version
            rank_zero_warn(
                "ExactResume: cannot restore the training DataLoader's position with "
                f"pytorch_lightning {pl.__version__}; the epoch restarts from its start"
            )
            return
        load()
        iter(fetcher)  # a new iterator, starting at the restored position

    def on_train_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Restores the checkpoint's states before the first batch after resuming."""
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None
