"""The session check of tests/conftest.py sees what a test leaves in a checkout."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import checkout_state


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_checkout_state_sees_new_ignored_and_changed_files(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".gitignore").write_text("*.ckpt\nbuild/\n__pycache__/\n")
    (repo / "code.py").write_text("x = 1\n")
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    before = checkout_state(repo)
    assert before == set()
    (repo / "checkpoints").mkdir()
    (repo / "checkpoints" / "epoch=1-step=10.ckpt").write_bytes(b"")  # ignored by git
    (repo / "build").mkdir()
    (repo / "build" / "lib.txt").write_text("")
    (repo / "out.json").write_text("{}")  # untracked
    (repo / "code.py").write_text("x = 2\n")  # changed
    (repo / "__pycache__").mkdir()
    (repo / "__pycache__" / "code.cpython-311.pyc").write_bytes(
        b""
    )  # a cache: left out
    after = checkout_state(repo)
    assert after is not None
    assert {line[3:] for line in after - before} == {
        "checkpoints/epoch=1-step=10.ckpt",
        "build/lib.txt",
        "out.json",
        "code.py",
    }
    assert checkout_state(tmp_path / "repo" / "checkpoints" / "missing") is None
