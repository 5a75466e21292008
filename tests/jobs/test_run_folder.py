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
