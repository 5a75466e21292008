"""Checkpoint files written atomically in place, read with ``weights_only=True``.

Builds on Lightning's :class:`~lightning_fabric.plugins.io.TorchCheckpointIO` (and its
fsspec path for remote storage) and on POSIX ``rename``, which replaces a file
atomically within one file system. Lightning's own atomic save serialises the whole
checkpoint into memory and commits it through an fsspec transaction whose temporary
file lies in the *system* temporary folder (``tempfile.mkstemp()``); when that folder is
on another file system than the checkpoints — a local ``/tmp`` next to network or
scratch storage, the usual cluster layout — the commit is a copy onto the final name,
and a job killed during the copy leaves a truncated ``last.ckpt``. Here the temporary
file is created next to the target, flushed to disk, and renamed over it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.plugins.io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem

__all__ = ["AtomicCheckpointIO", "atomic_save"]


def _fsync_directory(directory: Path) -> None:
    """Makes a rename in ``directory`` durable (POSIX; a no-op where unsupported)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)`` such that ``path`` is never seen half-written.

    The object is streamed into a hidden temporary file in the target's folder
    (``.<name>.<random>.tmp``, created with the permissions an ordinary new file gets),
    which is flushed to disk and then renamed over ``path`` (``os.replace``: atomic on
    one file system); the folder is synced so that the rename survives a crash. A
    failure — or a kill — before the rename leaves the previous ``path`` as it was; a
    failure removes the temporary file (a kill leaves it behind, never under a
    ``*.ckpt`` name).

    Args:
        obj: What ``torch.save`` accepts.
        path: The target file; its folder is created when missing.

    Example:
        >>> import tempfile, torch
        >>> from lightly_derm.callbacks import atomic_save
        >>> path = tempfile.mkdtemp() + "/last.ckpt"
        >>> atomic_save({"step": torch.tensor(3)}, path)
        >>> torch.load(path, weights_only=True)["step"].item()
        3
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(target.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: atomic in-place writes, ``weights_only=True`` reads.

    - **Saving** to a local path uses :func:`atomic_save`: a kill at any moment leaves
      either the previous file or the complete new one under the checkpoint's name
      (``last.ckpt`` included), on any file-system layout, and the checkpoint is
      streamed to disk instead of being held in memory twice. Remote paths
      (``s3://``, …) go through Lightning's fsspec transaction as before.
    - **Loading** (``trainer.fit(ckpt_path=...)``, ``validate``, ``test``) uses
      ``torch.load(weights_only=True)`` unless the caller passes ``weights_only``
      explicitly: a checkpoint can hold tensors and plain containers only, never code
      to run. ``http(s)://`` checkpoints are refused: lightly-derm reads local files
      and never downloads (Lightning would fetch them with ``weights_only=False``).

    Args:
        weights_only: The ``weights_only`` of loads that do not pass one.

    Example:
        >>> import pytorch_lightning as pl
        >>> from lightly_derm.callbacks import AtomicCheckpointIO
        >>> trainer = pl.Trainer(plugins=[AtomicCheckpointIO()], logger=False)
    """

    def __init__(self, weights_only: bool = True) -> None:
        super().__init__()
        self.weights_only = weights_only

    def save_checkpoint(
        self,
        checkpoint: dict[str, Any],
        path: str | os.PathLike[str],
        storage_options: Any | None = None,
    ) -> None:
        """Writes ``checkpoint`` to ``path`` atomically (see the class docstring)."""
        if storage_options is not None:
            raise TypeError(
                "Trainer.save_checkpoint(..., storage_options=...) is not supported by "
                f"{type(self).__name__}"
            )
        fs = get_filesystem(path)
        if not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, path)
            return
        atomic_save(checkpoint, fs._strip_protocol(str(path)))

    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Loads a checkpoint with ``weights_only=True`` by default.

        Raises:
            ValueError: ``path`` is an ``http(s)://`` URL.
            FileNotFoundError: The file does not exist.
        """
        if str(path).lower().startswith(("http://", "https://")):
            raise ValueError(
                f"checkpoint {str(path)!r} is a URL; lightly-derm loads local files only "
                "(download it yourself, from a source you trust)"
            )
        if weights_only is None:
            weights_only = self.weights_only
        return super().load_checkpoint(
            path, map_location=map_location, weights_only=weights_only
        )
