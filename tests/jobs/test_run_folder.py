"""The run folder: its record of what lightly-derm wrote, and its lock."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lightly_derm.errors import ConfigError
from lightly_derm.jobs.run_folder import (
    LOCK_FILE,
    RECORD_FILE,
    RunFolder,
    check_out,
    holds_run,
    read_job,
    read_record,
)


def test_clear_deletes_only_what_the_record_lists(tmp_path: Path) -> None:
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "fig1.png").write_bytes(b"user")
    (tmp_path / "notes.txt").write_text("user")
    with RunFolder(tmp_path, command="test") as run:
        run.record(["config.yaml", "plots/loss.png"])
        run.folder("plots")
        run.folder("checkpoints")
        (tmp_path / "config.yaml").write_text("method: gravis\n")
        (tmp_path / "plots" / "loss.png").write_bytes(b"run")
        (tmp_path / "checkpoints" / ".last.ckpt.123.tmp").write_bytes(b"run")
    assert holds_run(tmp_path, "config.yaml")
    assert "checkpoints/.last.ckpt.123.tmp" in run.recorded()  # found at the end
    # a user file put into a folder the run created survives its clearing
    (tmp_path / "checkpoints" / "mine.pt").write_bytes(b"user")
    with RunFolder(tmp_path, command="test") as run:
        removed = run.clear()
    assert sorted(removed) == [
        "checkpoints/.last.ckpt.123.tmp",
        "config.yaml",
        "plots/loss.png",
    ]
    assert (tmp_path / "plots" / "fig1.png").read_bytes() == b"user"
    assert (tmp_path / "checkpoints" / "mine.pt").read_bytes() == b"user"
    assert (tmp_path / "notes.txt").read_text() == "user"
    assert not holds_run(tmp_path, "config.yaml")


def test_a_record_cannot_delete_outside_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / RECORD_FILE).write_text(json.dumps({"written": ["../outside.txt"]}))
    with RunFolder(folder, command="test") as run:
        assert run.clear() == []
    assert outside.read_text() == "keep"


def test_a_folder_without_a_record_holds_no_run(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("method: gravis\n")
    assert not holds_run(tmp_path, "config.yaml")


@pytest.mark.parametrize("out", ["", "  "])
def test_an_empty_out_is_refused(out: str) -> None:
    with pytest.raises(ConfigError, match="--out is empty"):
        check_out(out)


def test_an_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_out(tmp_path / "f")


def test_a_second_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from lightly_derm.jobs.run_folder import RunFolder
                with RunFolder({str(tmp_path)!r}, command="lightly-derm pretrain A"):
                    print("locked", flush=True)
                    sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from lightly_derm.jobs.run_folder import RunFolder\n"
                f"RunFolder({str(tmp_path)!r}, command='B').acquire()",
            ],
            capture_output=True,
            text=True,
        )
        assert second.returncode != 0
        assert f"pid {holder.pid}" in second.stderr
        assert "lightly-derm pretrain A" in second.stderr
        assert "in use by another lightly-derm run" in second.stderr
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
    # released when the holder ends: the folder can be locked again
    with RunFolder(tmp_path, command="C"):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["command"] == "C"


START = {"marker": "results.json", "what": "demo results"}
OUTPUTS = ["results.json", "sub/metrics.csv"]


def _finish(folder: Path, overwrite: bool = False) -> None:
    """A job run in ``folder``: records, then writes its outputs and a file in sub/."""
    with RunFolder(folder, job="demo").start(
        OUTPUTS, overwrite=overwrite, folders=["sub"], **START
    ) as run:
        for name in (*OUTPUTS, "sub/events.1"):
            (run.path / name).write_text("run")


def test_start_refuses_a_finished_run_and_overwrite_keeps_the_users_files(
    tmp_path: Path,
) -> None:
    _finish(tmp_path)
    assert set(read_record(tmp_path) or []) >= {*OUTPUTS, "sub/events.1", "sub/"}
    assert read_job(tmp_path) == "demo"
    (tmp_path / "sub" / "mine.txt").write_text("user")
    with pytest.raises(ConfigError, match=r"already holds demo results; replace them"):
        RunFolder(tmp_path, job="demo").start(OUTPUTS, overwrite=False, **START)
    assert (tmp_path / "results.json").read_text() == "run"
    # overwrite: the earlier files are deleted before the new run writes
    with RunFolder(tmp_path, job="demo").start(
        OUTPUTS, overwrite=True, folders=["sub"], **START
    ):
        assert not (tmp_path / "results.json").exists()
        assert not (tmp_path / "sub" / "events.1").exists()
        assert (tmp_path / "sub" / "mine.txt").read_text() == "user"


def test_start_refuses_unrecorded_files_at_its_output_names(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "results.json").write_text("user")
    (tmp_path / "sub" / "metrics.csv").write_text("user")
    for overwrite in (False, True):
        with pytest.raises(ConfigError) as info:
            RunFolder(tmp_path, job="demo").start(OUTPUTS, overwrite=overwrite, **START)
        assert str(info.value) == (
            f"{tmp_path} holds files no lightly-derm run recorded writing "
            "(results.json, sub/metrics.csv); a run would replace them, so choose "
            "another out='DIR' or move them away (lightly-derm deletes only what it "
            "recorded writing)"
        )
    # nothing written, not even the lock
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "metrics.csv",
        "results.json",
        "sub",
    ]


def test_no_job_clears_another_jobs_run(tmp_path: Path) -> None:
    # a run without a job name (pretrain's) is not cleared by a named job
    with RunFolder(tmp_path / "pretrain", command="test") as run:
        run.record(["config.yaml"])
        (run.path / "config.yaml").write_text("method: gravis\n")
    with pytest.raises(ConfigError, match="holds another lightly-derm run, not a demo"):
        RunFolder(tmp_path / "pretrain", job="demo").start(
            ["config.yaml", *OUTPUTS], overwrite=True, **START
        )
    assert (tmp_path / "pretrain" / "config.yaml").is_file()
    # and a named job's run is not cleared by another job, or by a run without a name
    _finish(tmp_path / "demo")
    for job in ("other", None):
        with RunFolder(tmp_path / "demo", job=job) as run:
            with pytest.raises(ConfigError, match="holds a lightly-derm demo run"):
                run.clear()
    assert (tmp_path / "demo" / "results.json").read_text() == "run"
    assert read_job(tmp_path / "demo") == "demo"


JOBS = {
    # the job, a function it calls after taking the lock (stalled in the holder), and
    # options that make it tiny
    "segment": (
        "lightly_derm.jobs.segment",
        "segmentation_data",
        ["--synthetic-images", "8", "--synthetic-val-images", "4", "--epochs", "1"],
    ),
    "evaluate": (
        "lightly_derm.evaluation",
        "extract_features",
        ["--synthetic-images", "8", "--synthetic-test-images", "4", "--fractions"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("job", sorted(JOBS))
def test_a_second_job_in_a_running_jobs_folder_is_refused(
    tmp_path: Path, capsys, job: str
) -> None:
    from tests.cli.test_pretrain_cli import one_error_line, run

    module, stalled, options = JOBS[job]
    out = tmp_path / "out"
    argv = [job, "--out", str(out), "--input-size", "32", *options]
    # the holder: the real job, stalled once it holds the folder
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import os, sys, importlib
                module = importlib.import_module({module!r})

                def stalled(*args, **kwargs):
                    print("running", flush=True)
                    sys.stdin.readline()
                    os._exit(0)

                setattr(module, {stalled!r}, stalled)
                from lightly_derm.cli import main
                sys.argv = ["lightly-derm", *{argv!r}]
                main({argv!r})
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        lines = iter(holder.stdout.readline, "")
        assert "running" in (line.strip() for line in lines)  # its messages before
        record = (out / RECORD_FILE).read_text()
        code, _, err = run(capsys, *argv, "--overwrite")
        assert code == 2
        line = one_error_line(err)
        assert "is in use by another lightly-derm run" in line
        assert f"pid {holder.pid} " in line and f"lightly-derm {job} --out" in line
        assert (out / RECORD_FILE).read_text() == record  # nothing of it touched
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
