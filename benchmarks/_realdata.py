"""Shared machinery of the real-data benchmarks (dermamnist.py, isic_segmentation.py).

- :func:`run_jobs`: runs independent jobs concurrently in spawned worker processes (one
  CUDA context each, so several small models share one GPU), honours dependencies and a
  wall-clock deadline, and writes every finished job's JSON as soon as it arrives, so a
  timeout keeps what finished.
- :func:`environment`: device, software versions and commit, for the results files.
- :func:`markdown_table` / :func:`rst_table`: ready-to-paste tables.

Nothing here imports torch at module level: the worker processes import what their jobs
need.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Job states in the results.
OK, FAILED, TIMEOUT, SKIPPED, NOT_RUN = "ok", "failed", "timeout", "skipped", "not_run"


@dataclass
class Job:
    """One unit of work: ``fn(spec)`` in a worker process, returning a JSON-able dict.

    Attributes:
        id: Unique name; also the result file's name.
        fn: A module-level function (picklable by reference).
        spec: Its argument (JSON-able).
        priority: Lower runs first among ready jobs.
        deps: Ids of jobs that must finish with status ``ok`` first; if one does not,
            this job is ``skipped``.
        after: Ids of jobs that must finish first, whatever their status (e.g. a
            tuning sweep whose failure only means falling back to a default).
        resolve: Called in the parent just before dispatch with ``(spec, results)``;
            returns the final spec (e.g. a checkpoint path or a tuned setting from a
            dependency's result), or ``None`` to skip the job.
    """

    id: str
    fn: Callable[[dict[str, Any]], dict[str, Any]]
    spec: dict[str, Any]
    priority: tuple[Any, ...] = (0,)
    deps: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    resolve: (
        Callable[[dict[str, Any], dict[str, dict[str, Any]]], dict[str, Any] | None]
        | None
    ) = None


def write_json(path: Path, data: Any) -> None:
    """Writes JSON atomically (temporary file + rename): a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def read_results(job_dir: Path) -> dict[str, dict[str, Any]]:
    """All job results written under ``job_dir`` (``<id>.json``)."""
    results = {}
    for path in sorted(job_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        results[data.get("id", path.stem)] = data
    return results


def _call(job_id: str, fn: Callable[..., Any], spec: dict[str, Any]) -> dict[str, Any]:
    start = time.time()
    try:
        result = fn(spec)
        status, error = OK, None
    except Exception:  # noqa: BLE001 - any failure is reported, not raised
        result, status, error = None, FAILED, traceback.format_exc(limit=20)
    return {
        "id": job_id,
        "status": status,
        "error": error,
        "job_wall_s": round(time.time() - start, 2),
        "spec": spec,
        "result": result,
    }


def _die_with_parent() -> None:
    """Ends this process when the parent dies, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``).

    A watchdog thread checking the parent's pid covers other systems.
    """
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while True:
            time.sleep(2)
            if os.getppid() != parent:
                os._exit(1)

    import threading

    threading.Thread(target=watch, daemon=True).start()


def _worker(inbox: Any, outbox: Any, log_path: str) -> None:
    """Worker process: own process group, output to a log file, jobs from ``inbox``.

    Results go back through the worker's own pipe (``outbox``), written synchronously:
    a shared ``multiprocessing.Queue`` writes from a feeder thread under a lock shared by
    all workers, and a worker that dies right after a put (a crash, the OOM killer) can
    take the lock with it and block every other worker's results.
    """
    os.setpgrp()  # the parent ends the whole group (DataLoader workers included)
    _die_with_parent()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    while True:
        item = inbox.get()
        if item is None:
            return
        job_id, fn, spec = item
        print(f"=== {time.strftime('%H:%M:%S')} start {job_id}", flush=True)
        outbox.send(_call(job_id, fn, spec))
        print(f"=== {time.strftime('%H:%M:%S')} end {job_id}", flush=True)


def _end_group(process: Any) -> None:
    if process.pid is None or not process.is_alive():
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
    process.join(timeout=5)


def run_jobs(
    jobs: Sequence[Job],
    workers: int,
    deadline: float,
    job_dir: Path,
    log_dir: Path | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Runs ``jobs`` with at most ``workers`` at a time until done or ``deadline``.

    ``workers=0`` runs them one after another in this process (debugging, tests).
    Results (see :func:`_call`) are written to ``job_dir/<id>.json`` as they arrive;
    at the deadline running jobs are killed (``timeout``) and unstarted ones recorded
    as ``not_run``.

    Returns:
        Job id → result.
    """
    job_dir = Path(job_dir)
    ids = [job.id for job in jobs]
    if len(set(ids)) != len(ids):
        raise ValueError("job ids must be unique")
    known = set(ids)
    for job in jobs:
        missing = [d for d in (*job.deps, *job.after) if d not in known]
        if missing:
            raise ValueError(f"job {job.id} depends on unknown jobs {missing}")
    pending = {job.id: job for job in jobs}
    results: dict[str, dict[str, Any]] = {}

    def record(result: dict[str, Any]) -> None:
        results[result["id"]] = result
        write_json(job_dir / f"{result['id']}.json", result)
        line = f"[{time.strftime('%H:%M:%S')}] {result['status']:>7} {result['id']} ({result.get('job_wall_s', 0):.0f} s)"
        if result["status"] == FAILED and result.get("error"):
            line += "\n" + result["error"].strip().splitlines()[-1]
        echo(line)
        if on_result is not None:
            on_result(result)

    def next_ready() -> Job | None:
        """The best ready job; skips (and records) jobs whose dependencies failed."""
        while True:
            ready = []
            for job in pending.values():
                states = [
                    results[d]["status"] if d in results else None for d in job.deps
                ]
                if any(s is not None and s != OK for s in states):
                    bad = [
                        d
                        for d, s in zip(job.deps, states, strict=True)
                        if s not in (None, OK)
                    ]
                    pending.pop(job.id)
                    record(
                        {
                            "id": job.id,
                            "status": SKIPPED,
                            "error": f"dependency {bad[0]} did not finish",
                            "spec": job.spec,
                            "result": None,
                        }
                    )
                    break
                if all(s == OK for s in states) and all(
                    a in results for a in job.after
                ):
                    ready.append(job)
            else:
                if not ready:
                    return None
                job = min(ready, key=lambda j: j.priority)
                pending.pop(job.id)
                if job.resolve is not None:
                    spec = job.resolve(job.spec, results)
                    if spec is None:
                        record(
                            {
                                "id": job.id,
                                "status": SKIPPED,
                                "error": "resolve skipped it",
                                "spec": job.spec,
                                "result": None,
                            }
                        )
                        continue
                    job.spec = spec
                return job

    def finish_unstarted(status: str, reason: str) -> None:
        for job in list(pending.values()):
            record(
                {
                    "id": job.id,
                    "status": status,
                    "error": reason,
                    "spec": job.spec,
                    "result": None,
                }
            )
        pending.clear()

    if workers <= 0:
        while pending:
            if time.time() >= deadline:
                finish_unstarted(NOT_RUN, "time budget spent before it started")
                break
            job = next_ready()
            if job is None:
                break
            record(_call(job.id, job.fn, job.spec))
        return results

    log_dir = Path(log_dir or job_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    pool: list[dict[str, Any]] = []
    stop = [False]

    def start_worker(index: int) -> dict[str, Any]:
        inbox = ctx.Queue()
        results_in, results_out = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=_worker,
            args=(inbox, results_out, str(log_dir / f"worker{index}.log")),
            daemon=False,
        )
        process.start()
        results_out.close()  # the child's end only: its death reads as EOF here
        return {
            "process": process,
            "inbox": inbox,
            "conn": results_in,
            "job": None,
            "index": index,
        }

    def worker_died(i: int) -> None:
        slot = pool[i]
        slot["process"].join(timeout=5)
        code = slot["process"].exitcode
        job = slot["job"]
        record(
            {
                "id": job.id,
                "status": FAILED,
                "error": f"worker process died (exit code {code}); see {log_dir}/worker{slot['index']}.log",
                "spec": job.spec,
                "result": None,
            }
        )
        slot["conn"].close()
        pool[i] = start_worker(slot["index"] + workers)

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt) if _main_thread() else None
    pool = [start_worker(i) for i in range(workers)]
    try:
        while True:
            for slot in pool:
                if slot["job"] is None and pending:
                    job = next_ready()
                    if job is None:
                        break
                    slot["job"] = job
                    slot["inbox"].put((job.id, job.fn, job.spec))
            busy = [slot for slot in pool if slot["job"] is not None]
            if not busy:  # nothing runs and nothing could start: done (or stuck)
                finish_unstarted(SKIPPED, "its dependencies never finished")
                break
            remaining = deadline - time.time()
            if remaining <= 0 or stop[0]:
                for slot in busy:
                    _end_group(slot["process"])
                    job = slot["job"]
                    record(
                        {
                            "id": job.id,
                            "status": TIMEOUT,
                            "error": "interrupted"
                            if stop[0]
                            else "killed at the time budget",
                            "spec": job.spec,
                            "result": None,
                        }
                    )
                    slot["job"] = None
                finish_unstarted(
                    NOT_RUN,
                    "interrupted before it started"
                    if stop[0]
                    else "time budget spent before it started",
                )
                break
            try:
                ready = wait([slot["conn"] for slot in busy], min(1.0, remaining))
                for i, slot in enumerate(pool):
                    if slot["job"] is None or slot["conn"] not in ready:
                        continue
                    try:
                        result = slot["conn"].recv()
                    except (EOFError, OSError):  # the worker died mid-job
                        worker_died(i)
                        continue
                    slot["job"] = None
                    record(result)
                if not ready:  # a worker that died without closing its pipe yet
                    for i, slot in enumerate(pool):
                        if slot["job"] is not None and not slot["process"].is_alive():
                            worker_died(i)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop as at the deadline
                echo(
                    "interrupted: stopping the running jobs, keeping the finished ones"
                )
                stop[0] = True
    finally:
        for slot in pool:
            if slot["process"].is_alive() and slot["job"] is None:
                slot["inbox"].put(None)
        for slot in pool:
            slot["process"].join(timeout=10)
            _end_group(slot["process"])
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return results


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ------------------------------------------------------------------------ environment
def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001
        return None


def environment(device: str) -> dict[str, Any]:
    """Hardware and software of this run (device name, versions, commit, CPUs)."""
    import torch

    info: dict[str, Any] = {
        "device": device,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
    }
    for name in (
        "torchvision",
        "lightly",
        "pytorch-lightning",
        "monai",
        "lightly-derm",
    ):
        info[name] = _version(name)
    try:
        import lightly_derm

        info["lightly-derm"] = lightly_derm.__version__
    except Exception:  # noqa: BLE001
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    try:
        root = Path(__file__).resolve().parents[1]
        info["commit"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        info["commit_dirty"] = bool(dirty)
    except Exception:  # noqa: BLE001
        info["commit"] = None
    return info


def command_line() -> str:
    """The command that started this process, as a shell line."""
    script = os.path.relpath(sys.argv[0]) if sys.argv and sys.argv[0] else "?"
    return "python " + " ".join(shlex.quote(a) for a in [script, *sys.argv[1:]])


def describe_environment(env: dict[str, Any]) -> str:
    """One line: device, CPUs, versions, commit."""
    device = env.get("gpu") or env.get("device")
    parts = [
        f"device {device}" + (f" (CUDA {env['cuda']})" if env.get("cuda") else ""),
        f"{env.get('cpus')} CPUs",
        f"torch {env.get('torch')}",
    ]
    parts += [
        f"{k} {env[k]}"
        for k in (
            "torchvision",
            "lightly",
            "pytorch-lightning",
            "monai",
            "lightly-derm",
        )
        if env.get(k)
    ]
    if env.get("commit"):
        parts.append(
            f"commit {env['commit']}"
            + (" (+ local changes)" if env.get("commit_dirty") else "")
        )
    return "; ".join(parts)


# ------------------------------------------------------------------------------ tables
def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers rounded, ``None``/NaN as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.{digits}f}"
    return str(value)


def mean_std(values: Iterable[float], digits: int = 3) -> str:
    """``"0.812 ± 0.034"`` (sample standard deviation), ``"0.812"`` for one value."""
    data = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not data:
        return "—"
    mean = sum(data) / len(data)
    if len(data) == 1:
        return f"{mean:.{digits}f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in data) / (len(data) - 1))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def rst_preamble(header: dict[str, Any], smoke_text: str) -> list[str]:
    """The lines that open a results fragment: smoke warning, command, environment."""
    lines = []
    if header.get("smoke"):
        lines += [".. warning::", "", f"   {smoke_text}", ""]
    lines += ["Command::", "", f"    {header['command']}", ""]
    lines += [f"Environment: {describe_environment(header['environment'])}.", ""]
    if header.get("total_wall_s"):
        lines += [f"Total wall time of the run: {header['total_wall_s']:.0f} s.", ""]
    return lines


def rst_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = ""
) -> str:
    """A reStructuredText ``list-table`` (pastes into docs/results.rst as it is)."""
    lines = [f".. list-table:: {title}".rstrip(), "   :header-rows: 1", ""]
    for row in [list(headers), *rows]:
        cells = [fmt(c) for c in row]
        lines.append(f"   * - {cells[0]}")
        lines += [f"     - {c}" for c in cells[1:]]
    return "\n".join(lines)
