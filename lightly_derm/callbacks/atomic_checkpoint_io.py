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
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.plugins.io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.utilities import rank_zero_info

from lightly_derm.errors import LightlyDermError
from lightly_derm.models.checkpoints import check_finite_weights, checkpoint_load_error

try:  # POSIX: a writer holds a lock on its temporary file while it lives
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointWriteError",
    "atomic_save",
    "remove_stale_temporaries",
]

#: The temporary files of :func:`atomic_save`: ``.<name>.<12 hex digits>.tmp``.
TEMPORARY_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")
#: Without file locks (Windows), temporaries older than this (seconds) count as stale.
_STALE_AFTER_S = 24 * 3600


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
    ``*.ckpt`` name). A write that fails for the operating system (a full disk) raises
    one :class:`CheckpointWriteError` naming the file and the reason.

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
            # Locked while it is written and until it is renamed: a temporary whose
            # lock is free belongs to a writer that died (remove_stale_temporaries).
            _lock(file, blocking=True)
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
            if fcntl is not None:  # POSIX renames an open file
                os.replace(temporary, target)
        if fcntl is None:  # pragma: no cover - Windows
            os.replace(temporary, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        os_error = _os_error_in(exc)
        if os_error is None or isinstance(exc, KeyboardInterrupt):
            raise
        # torch.save reports a failed write (a full disk) as a RuntimeError from its
        # C++ writer, raised while handling the OSError: two tracebacks, neither
        # naming the file. One error instead, with the reason and what is left.
        previous = "is unchanged" if target.exists() else "was not written"
        raise CheckpointWriteError(
            os_error.errno or 0,
            f"cannot write checkpoint {target}: "
            f"{os_error.strerror or os_error}; {target.name} {previous}",
        ) from None
    _fsync_directory(target.parent)


class CheckpointWriteError(LightlyDermError, OSError):
    """A checkpoint could not be written (a full disk, no permission).

    The previous file is unchanged. A :class:`~lightly_derm.errors.LightlyDermError`
    (one line) and an ``OSError`` with the original ``errno``.
    """


def _os_error_in(exc: BaseException) -> OSError | None:
    """The ``OSError`` that ``exc`` is, was caused by, or was raised while handling."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _lock(file: IO[bytes], blocking: bool) -> bool:
    """An exclusive lock on ``file`` (POSIX ``flock``); ``False`` when another holds it."""
    if fcntl is None:  # pragma: no cover - Windows
        return True
    flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
    try:
        fcntl.flock(file.fileno(), flags)
    except BlockingIOError:
        return False
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Deletes the temporary files that killed :func:`atomic_save` calls left in ``folder``.

    A save killed mid-write leaves a full-size hidden ``.<name>.<random>.tmp`` beside
    its target. Only files of exactly that name pattern are considered, and only those
    whose writer is gone: a live writer holds a lock on its temporary (POSIX ``flock``,
    released by the operating system when the process dies, even by ``kill -9``), so a
    concurrent save is never disturbed. Without file locks (Windows) a temporary counts
    as stale after a day. Nothing else in ``folder`` is touched.

    Args:
        folder: The checkpoint folder; a missing folder has nothing to remove.

    Returns:
        The files removed.

    Example:
        >>> import pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / ".last.ckpt.0123456789ab.tmp").write_bytes(b"half a checkpoint")
        >>> _ = (folder / "notes.tmp").write_text("mine")
        >>> [p.name for p in remove_stale_temporaries(folder)]
        ['.last.ckpt.0123456789ab.tmp']
        >>> sorted(p.name for p in folder.iterdir())
        ['notes.tmp']
    """
    removed: list[Path] = []
    directory = Path(folder)
    if not directory.is_dir():
        return removed
    for path in sorted(directory.iterdir()):
        if not TEMPORARY_NAME.match(path.name) or not path.is_file():
            continue
        try:
            with open(path, "rb") as file:
                if fcntl is None:  # pragma: no cover - Windows
                    if time.time() - os.fstat(file.fileno()).st_mtime < _STALE_AFTER_S:
                        continue
                elif not _lock(file, blocking=False):
                    continue  # a live writer
                os.unlink(path)
        except FileNotFoundError:  # renamed by its writer meanwhile
            continue
        removed.append(path)
    return removed


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
      A file refused for carrying code, a corrupt file and a checkpoint whose weights
      are NaN or inf raise :class:`~lightly_derm.errors.CheckpointError` naming the
      file and the reason.
    - **Leftovers**: the temporaries of saves that were killed (full-size hidden
      ``.last.ckpt.<random>.tmp`` files) are removed from a checkpoint folder when a
      run resumes from it (``load_checkpoint``) and before the first save into it
      (:func:`remove_stale_temporaries`: only files of that name whose writer is gone).

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
        self._cleaned: set[Path] = set()

    def _clean(self, folder: Path) -> None:
        """Removes stale temporaries from ``folder`` once per run and folder."""
        folder = folder.resolve()
        if folder in self._cleaned:
            return
        self._cleaned.add(folder)
        removed = remove_stale_temporaries(folder)
        if removed:
            rank_zero_info(
                f"removed {len(removed)} temporary file(s) left in {folder} by checkpoint "
                f"saves that were killed: {', '.join(p.name for p in removed[:3])}"
            )

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
        fs = get_filesystem(os.fspath(path))
        if not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, os.fspath(path))
            return
        local = Path(fs._strip_protocol(str(path)))
        self._clean(local.parent)
        atomic_save(checkpoint, local)

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
            CheckpointError: The file carries code (refused), is corrupt, or its
                ``state_dict`` holds NaN or inf.
        """
        if str(path).lower().startswith(("http://", "https://")):
            raise ValueError(
                f"checkpoint {str(path)!r} is a URL; lightly-derm loads local files only "
                "(download it yourself, from a source you trust)"
            )
        if weights_only is None:
            weights_only = self.weights_only
        fs = get_filesystem(os.fspath(path))
        if isinstance(fs, LocalFileSystem):
            local = Path(fs._strip_protocol(str(path)))
            if local.is_file():
                self._clean(local.parent)
        try:
            checkpoint = super().load_checkpoint(
                os.fspath(path), map_location=map_location, weights_only=weights_only
            )
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise checkpoint_load_error(path, exc) from exc
        state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
        if isinstance(state, dict):
            check_finite_weights(state, repr(str(path)))
        return checkpoint
