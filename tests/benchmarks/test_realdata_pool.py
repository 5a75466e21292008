from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from _realdata import (
    FAILED,
    NOT_RUN,
    OK,
    SKIPPED,
    TIMEOUT,
    Job,
    mean_std,
    read_results,
    rst_table,
    run_jobs,
)

from tests.benchmarks import pool_tasks


def _jobs() -> list[Job]:
    def add_from_a(spec, results):
        return {**spec, "x": results["a"]["result"]["value"]}

    return [
        Job("a", pool_tasks.double, {"x": 3}, priority=(0,)),
        Job("b", pool_tasks.fail, {"x": 1}, priority=(0,)),
        Job("needs_b", pool_tasks.double, {"x": 1}, deps=["b"]),
        Job("after_b", pool_tasks.double, {"x": 5}, after=["b"]),
        Job("from_a", pool_tasks.double, {"x": 0}, deps=["a"], resolve=add_from_a),
        Job("skip_me", pool_tasks.double, {"x": 0}, resolve=lambda spec, results: None),
    ]


def _check_common(results: dict, job_dir: Path) -> None:
    assert results["a"]["status"] == OK and results["a"]["result"]["value"] == 6
    assert (
        results["b"]["status"] == FAILED
        and "ValueError: bad input 1" in results["b"]["error"]
    )
    assert (
        results["needs_b"]["status"] == SKIPPED
        and "dependency b" in results["needs_b"]["error"]
    )
    assert (
        results["after_b"]["status"] == OK
        and results["after_b"]["result"]["value"] == 10
    )
    assert (
        results["from_a"]["status"] == OK and results["from_a"]["result"]["value"] == 12
    )
    assert (
        results["from_a"]["spec"]["x"] == 6
    )  # the resolved spec is what ran and is recorded
    assert results["skip_me"]["status"] == SKIPPED
    on_disk = read_results(job_dir)
    assert {k: on_disk[k]["status"] for k in results} == {
        k: v["status"] for k, v in results.items()
    }
    assert not list(job_dir.glob("*.tmp*"))


def test_inline_runs_in_this_process(tmp_path: Path) -> None:
    seen = []
    results = run_jobs(
        _jobs(),
        0,
        time.time() + 60,
        tmp_path / "jobs",
        on_result=seen.append,
        echo=lambda _: None,
    )
    _check_common(results, tmp_path / "jobs")
    assert results["a"]["result"]["pid"] == os.getpid()
    assert len(seen) == len(results) == 6


def test_inline_past_the_deadline_runs_nothing(tmp_path: Path) -> None:
    results = run_jobs(
        _jobs(), 0, time.time() - 1, tmp_path / "jobs", echo=lambda _: None
    )
    assert {r["status"] for r in results.values()} == {NOT_RUN}


@pytest.mark.slow
def test_worker_processes_deadline_and_crash(tmp_path: Path) -> None:
    """Two spawned workers: dependencies, a crashed worker, a job killed at the deadline.

    The crash comes right after the crashing worker's previous result: with one shared
    result queue, its death could keep the queue's lock and block the other worker's
    result ("b" then timed out about one run in three); each worker now has its own pipe.
    """
    jobs = [
        *_jobs(),
        Job("crash", pool_tasks.die, {}, priority=(1,)),
        Job("after_crash", pool_tasks.double, {"x": 7}, after=["crash"], priority=(2,)),
        Job("long", pool_tasks.sleep, {"seconds": 120}, priority=(3,)),
        Job("never", pool_tasks.double, {"x": 1}, deps=["long"]),
    ]
    start = time.time()
    results = run_jobs(
        jobs,
        2,
        start + 10,
        tmp_path / "jobs",
        log_dir=tmp_path / "logs",
        echo=lambda _: None,
    )
    assert time.time() - start < 40  # the sleeping job was killed, not waited for
    _check_common(
        {k: v for k, v in results.items() if k in {j.id for j in _jobs()}},
        tmp_path / "jobs",
    )
    assert results["a"]["result"]["pid"] != os.getpid()
    assert (
        results["crash"]["status"] == FAILED
        and "exit code 3" in results["crash"]["error"]
    )
    assert results["after_crash"]["status"] == OK  # a replacement worker took over
    assert results["long"]["status"] == TIMEOUT
    assert results["never"]["status"] == NOT_RUN
    assert (
        json.loads((tmp_path / "jobs" / "long.json").read_text())["status"] == TIMEOUT
    )
    assert (tmp_path / "logs" / "worker0.log").exists()


def test_bad_job_lists(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unique"):
        run_jobs(
            [Job("a", pool_tasks.double, {}), Job("a", pool_tasks.double, {})],
            0,
            time.time() + 5,
            tmp_path,
        )
    with pytest.raises(ValueError, match="unknown jobs \\['z'\\]"):
        run_jobs(
            [Job("a", pool_tasks.double, {}, after=["z"])], 0, time.time() + 5, tmp_path
        )


def test_table_helpers() -> None:
    assert mean_std([1.0, 2.0, 3.0]) == "2.000 ± 1.000"  # sample standard deviation
    assert mean_std([0.5]) == "0.500"
    assert mean_std([]) == "—"
    table = rst_table(["a", "b"], [[1.23456, None]], title="T")
    assert table.splitlines() == [
        ".. list-table:: T",
        "   :header-rows: 1",
        "",
        "   * - a",
        "     - b",
        "   * - 1.235",
        "     - —",
    ]


SIGTERM_SCRIPT = """
import sys, time
sys.path[:0] = {paths!r}
from _realdata import Job, run_jobs
from tests.benchmarks import pool_tasks
jobs = [Job("long", pool_tasks.record_pid_and_sleep, {{"pidfile": {pidfile!r}, "seconds": 120}})]
results = run_jobs(jobs, 1, time.time() + 120, {job_dir!r}, echo=lambda _: None)
print("finished", results["long"]["status"])
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("signum", ["SIGTERM", "SIGKILL"])
def test_a_stopped_parent_takes_its_workers_along(tmp_path: Path, signum: str) -> None:
    """SIGTERM (a time-limited command) ends the workers and keeps the records; even
    after SIGKILL, which runs no cleanup, the workers do not outlive the parent."""
    import signal
    import subprocess
    import sys

    from tests.benchmarks.conftest import BENCHMARKS

    repo = str(BENCHMARKS.parent)
    pidfile = tmp_path / "worker.pid"
    script = SIGTERM_SCRIPT.format(
        paths=[str(BENCHMARKS), repo],
        pidfile=str(pidfile),
        job_dir=str(tmp_path / "jobs"),
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=repo
    )
    deadline = time.time() + 30
    while not pidfile.exists() and time.time() < deadline:  # written atomically
        time.sleep(0.2)
    worker = int(pidfile.read_text())
    parent.send_signal(getattr(signal, signum))
    out, _ = parent.communicate(timeout=30)
    if signum == "SIGTERM":
        assert "finished timeout" in out
        assert (
            json.loads((tmp_path / "jobs" / "long.json").read_text())["error"]
            == "interrupted"
        )
    deadline = time.time() + 10
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(worker)
