"""The run folder of a job: what lightly-derm wrote there, and one run at a time.

Builds on :func:`fcntl.flock` (an advisory OS lock, released by the kernel when the
process ends in any way, ``kill -9`` included) and a JSON record. What it adds:

- **A record of what the run wrote** (``.lightly-derm-run.json``): the files and
  folders lightly-derm creates in the folder, added *before* they are written (and the
  new files of its subfolders, such as TensorBoard event files, when the run ends).
  ``overwrite`` deletes exactly these and nothing else, so a user's own
  ``plots/fig1.png`` or ``checkpoints/model_final.pt`` in the same folder survive; a
  folder without the record holds no lightly-derm run, whatever else it contains.
- **A lock** (``.lightly-derm.lock``) held for the run's life: a second run into the
  same folder is refused with one line naming the holder (pid, host, command).
- **The job that wrote it**: a record names its job (``segment``, ``evaluate``), so a
  job never clears a folder that holds another job's run (a ``pretrain`` run folder
  given as ``segment --out`` stays as it is).

:meth:`RunFolder.start` is the whole protocol of a job that writes known outputs:
refuse files at its output names that no run recorded, lock, refuse (or with
``overwrite`` clear) an earlier run's results, and record the outputs before writing.

Example:
    >>> import tempfile
    >>> from lightly_derm.jobs.run_folder import RunFolder
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with RunFolder(tmp + "/run", command="demo") as run:
    ...         run.record(["config.yaml"])
    ...         _ = (run.path / "config.yaml").write_text("method: gravis")
    ...         print("config.yaml" in run.recorded())
    True
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from lightly_derm.errors import ConfigError
from lightly_derm.jobs.console import flag

#: The record of the files and folders lightly-derm wrote in a run folder.
RECORD_FILE = ".lightly-derm-run.json"
#: The lock file of a run folder (locked while a run writes there).
LOCK_FILE = ".lightly-derm.lock"


def check_out(out: str | os.PathLike[str] | None, option: str = "--out") -> Path:
    """``out`` as a path, refused with one line when it is empty or an existing file.

    Example:
        >>> check_out("")
        Traceback (most recent call last):
        ...
        lightly_derm.errors.ConfigError: --out is empty; give the run folder, e.g. --out runs/demo
    """
    if out is None or not str(out).strip():
        raise ConfigError(
            f"{option} is empty; give the run folder, e.g. {option} runs/demo"
        )
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{option} {path} is a file, not a folder; choose a folder for the run"
        )
    return path


def _read(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A folder's record (``written``: paths, ``job``: its job or ``None``), or ``None``."""
    path = Path(folder) / RECORD_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable run record ({exc})") from exc
    written = data.get("written") if isinstance(data, dict) else None
    job = data.get("job") if isinstance(data, dict) else None
    if (
        not isinstance(written, list)
        or not all(isinstance(p, str) for p in written)
        or not isinstance(job, (str, type(None)))
    ):
        raise ConfigError(f"{path}: not a lightly-derm run record")
    return {"written": list(written), "job": job}


def read_record(folder: str | os.PathLike[str]) -> list[str] | None:
    """The paths (relative, ``/``-separated) of a folder's record, or ``None`` without one."""
    record = _read(folder)
    return None if record is None else record["written"]


def read_job(folder: str | os.PathLike[str]) -> str | None:
    """The job named by a folder's record (``None``: no record, or one that names none)."""
    record = _read(folder)
    return None if record is None else record["job"]


def _holds_files(written: Iterable[str]) -> bool:
    """Whether a record lists more than its own lock, record and folder."""
    return any(p not in (LOCK_FILE, RECORD_FILE, ".") for p in written)


def holds_run(folder: str | os.PathLike[str], marker: str) -> bool:
    """Whether ``folder`` holds a lightly-derm run: its record lists ``marker`` and it exists."""
    written = read_record(folder)
    return (
        written is not None and marker in written and (Path(folder) / marker).exists()
    )


def _inside(folder: Path, relative: str) -> Path | None:
    """``folder / relative`` when it stays inside ``folder`` (a record is not trusted blindly)."""
    target = folder / relative
    try:
        resolved_parent = target.parent.resolve()
    except OSError:
        return None
    if (
        not resolved_parent.is_relative_to(folder.resolve())
        or ".." in Path(relative).parts
    ):
        return None
    return target


class RunFolder:
    """A locked run folder that records what the run writes into it.

    Use it as a context manager: entering creates the folder, takes the lock (or
    raises :class:`~lightly_derm.errors.ConfigError` naming the holder) and leaving
    records the new files of the recorded subfolders and releases the lock.

    Args:
        path: The run folder.
        command: What holds the lock, for the message another run gets (default: this
            process's command line).
        job: The job that writes the folder (``"segment"``, ``"evaluate"``), kept in
            the record; a folder whose record names another job is never cleared.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        command: str | None = None,
        job: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.command = command if command is not None else shlex.join(sys.argv)
        self.job = job
        self._lock: IO[str] | None = None
        self._before: dict[str, set[str]] = {}

    # ------------------------------------------------------------------ lock
    def __enter__(self) -> RunFolder:
        if self._lock is None:  # not locked yet (by start)
            self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.record_new_files()
        finally:
            self.release()

    def acquire(self) -> None:
        """Creates the folder (recording it when new) and locks it.

        Raises:
            ConfigError: Another process holds the lock (its pid, host and command
                are named).
        """
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 - held for the run
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            try:
                info = json.loads(holder)
                holder = f"pid {info.get('pid')} on {info.get('host')}: {info.get('command')}"
            except ValueError:
                pass
            raise ConfigError(
                f"{self.path} is in use by another lightly-derm run ({holder}); wait "
                "for it to end or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": self.command,
                }
            )
        )
        handle.flush()
        self._lock = handle
        self.record([LOCK_FILE, RECORD_FILE] + (["."] if created else []))

    def release(self) -> None:
        """Releases the lock (also done by the OS when the process ends)."""
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def start(
        self,
        outputs: Iterable[str],
        *,
        marker: str,
        overwrite: bool,
        what: str,
        folders: Iterable[str] = (),
    ) -> RunFolder:
        """Prepares the folder for a job that writes ``outputs``; the lock is held after.

        In this order: files at the names of ``outputs`` that no lightly-derm run
        recorded are refused (they are the user's, or a run's from before the record
        existed); the folder is locked (:meth:`acquire`); a record naming another job
        is refused; an earlier run whose ``marker`` exists is refused unless
        ``overwrite``; what the earlier run recorded is deleted (:meth:`clear`: after
        ``overwrite``, or the leftovers of a run that ended before its ``marker``);
        ``outputs`` and ``folders`` (subfolders, created) are recorded before anything
        is written.

        Args:
            outputs: The files the job writes, relative to the folder (``marker`` among
                them).
            marker: The output that shows a finished run (e.g. ``results.json``).
            overwrite: Replace a finished run.
            what: What a finished run holds, for messages (``"segmentation results"``).
            folders: Subfolders the job writes into; their new files are recorded when
                the run ends.

        Returns:
            ``self``, locked; use it as a context manager (or :meth:`release`).

        Raises:
            ConfigError: Files no run recorded at the output names, another process
                holding the lock, another job's run, or a finished run without
                ``overwrite`` (one line each, naming the way out).

        Example:
            >>> import tempfile
            >>> from lightly_derm.jobs.run_folder import RunFolder
            >>> folder = tempfile.mkdtemp()
            >>> options = dict(marker="results.json", what="demo results")
            >>> with RunFolder(folder, job="demo").start(
            ...     ["results.json"], overwrite=False, **options
            ... ) as run:
            ...     _ = (run.path / "results.json").write_text("{}")
            >>> RunFolder(folder, job="demo").start(
            ...     ["results.json"], overwrite=False, **options
            ... )  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            lightly_derm.errors.ConfigError: ... already holds demo results; ...
        """
        outputs = [Path(p).as_posix() for p in outputs]
        recorded = set(read_record(self.path) or [])
        foreign = [p for p in outputs if (self.path / p).exists() and p not in recorded]
        if foreign:
            shown = ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else "")
            raise ConfigError(
                f"{self.path} holds files no lightly-derm run recorded writing "
                f"({shown}); a run would replace them, so choose another "
                f"{flag('out', 'DIR')} or move them away (lightly-derm deletes only "
                "what it recorded writing)"
            )
        self.acquire()
        try:
            self._check_job()
            if holds_run(self.path, marker) and not overwrite:
                raise ConfigError(
                    f"{self.path} already holds {what}; replace them with "
                    f"{flag('overwrite')} or choose another {flag('out', 'DIR')}"
                )
            self.clear()
            self.record(outputs)
            for relative in folders:
                self.folder(relative)
        except BaseException:
            self.release()
            raise
        return self

    # ---------------------------------------------------------------- record
    def recorded(self) -> list[str]:
        """The paths the record lists (empty without a record)."""
        return [p for p in read_record(self.path) or [] if p not in (".",)]

    def record(self, paths: Iterable[str]) -> None:
        """Adds ``paths`` (relative to the folder) to the record; call before writing them.

        A subfolder listed here that does not exist yet is created and recorded as
        lightly-derm's; the new files that appear in recorded subfolders during the
        run are added when the run ends (:meth:`record_new_files`).
        """
        written = read_record(self.path) or []
        for given in paths:
            # a trailing "/" marks a folder (its new files are recorded at the end)
            relative = Path(given).as_posix() + (
                "/" if str(given).endswith("/") else ""
            )
            if relative not in written:
                written.append(relative)
            target = self.path / relative
            if relative.endswith("/") or (target.is_dir() and relative != "."):
                self._before.setdefault(
                    relative.rstrip("/"), set(self._listing(relative.rstrip("/")))
                )
        self._write(written)

    def folder(self, relative: str) -> Path:
        """Records the subfolder ``relative`` (created and recorded as lightly-derm's when new)."""
        target = self.path / relative
        entries = [f"{relative}/"] if target.is_dir() else [relative, f"{relative}/"]
        if not target.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        self.record(entries)
        return target

    def _listing(self, relative: str) -> list[str]:
        root = self.path / relative
        if not root.is_dir():
            return []
        return [
            p.relative_to(self.path).as_posix() for p in root.rglob("*") if p.is_file()
        ]

    def record_new_files(self) -> None:
        """Adds the files that appeared in the recorded subfolders since they were recorded."""
        if not self._before or not self.path.is_dir():
            return
        new = [
            path
            for folder, before in self._before.items()
            for path in self._listing(folder)
            if path not in before
        ]
        if new:
            written = read_record(self.path) or []
            self._write(written + [p for p in new if p not in written])

    def _check_job(self) -> None:
        """Refuses a record of files that another job wrote."""
        current = _read(self.path)
        if current is None or not _holds_files(current["written"]):
            return
        job = current["job"]
        if job != self.job:
            theirs = f"a lightly-derm {job} run" if job else "another lightly-derm run"
            article = "an" if str(self.job)[:1] in tuple("aeiou") else "a"
            ours = f"{article} {self.job} run" if self.job else "this run"
            raise ConfigError(
                f"{self.path} holds {theirs}, not {ours}; choose another "
                f"{flag('out', 'DIR')}"
            )

    def _write(self, written: list[str]) -> None:
        path = self.path / RECORD_FILE
        current = _read(self.path)
        # a record keeps the job that wrote its files until they are cleared
        job = (
            current["job"]
            if current is not None and _holds_files(current["written"])
            else self.job
        )
        record: dict[str, Any] = {"written": written}
        if job is not None:
            record["job"] = job
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, path)

    def clear(self) -> list[str]:
        """Deletes what the record lists (files, then subfolders lightly-derm created when empty).

        Nothing else is touched: a file the user put into the folder or into a
        subfolder survives, and so does the subfolder holding it.

        Returns:
            The paths deleted.

        Raises:
            ConfigError: The record names another job than this folder's ``job`` (a
                ``segment`` run's folder is not cleared by another job).
        """
        self._check_job()
        removed: list[str] = []
        written = read_record(self.path) or []
        keep = {LOCK_FILE, RECORD_FILE, "."}
        folders = sorted(
            {p.rstrip("/") for p in written if p.endswith("/")},
            key=lambda p: -len(Path(p).parts),
        )
        for relative in written:
            if relative in keep or relative.endswith("/"):
                continue
            target = _inside(self.path, relative)
            if target is None or relative.rstrip("/") in folders:
                continue
            if target.is_file() or target.is_symlink():
                target.unlink()
                removed.append(relative)
        created = {p for p in written if not p.endswith("/")}
        for relative in folders:
            target = _inside(self.path, relative)
            if target is None or relative not in created or not target.is_dir():
                continue
            with contextlib.suppress(OSError):  # not empty: the user's files are in it
                target.rmdir()
                removed.append(relative + "/")
        self._before = {}
        self._write([p for p in written if p in keep])
        return removed

    @staticmethod
    def holder(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
        """The pid, host and command written by the last run that locked ``folder``."""
        try:
            return dict(json.loads((Path(folder) / LOCK_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None


__all__ = [
    "LOCK_FILE",
    "RECORD_FILE",
    "RunFolder",
    "check_out",
    "holds_run",
    "read_job",
    "read_record",
]
