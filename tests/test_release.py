"""The documented release check (scripts/release_check.sh) builds and checks the package."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import lightly_derm

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "release_check.sh"


@pytest.mark.slow
def test_release_check_builds_checked_sdist_and_wheel(tmp_path: Path) -> None:
    pytest.importorskip("build")
    pytest.importorskip("twine")
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout")
    out = tmp_path / "dist"
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(SCRIPT), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "release_check: ok" in result.stdout
    version = lightly_derm.__version__
    wheel = out / f"lightly_derm-{version}-py3-none-any.whl"
    assert (out / f"lightly_derm-{version}.tar.gz").is_file()
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.message_from_bytes(
            archive.read(f"lightly_derm-{version}.dist-info/METADATA")
        )
    assert metadata["Name"] == "lightly-derm"
    assert metadata["Version"] == version
    assert metadata["Requires-Python"] == ">=3.10"
    requires = metadata.get_all("Requires-Dist")
    assert any(r.startswith("torch>=") for r in requires)
    assert any(r.startswith("lightly>=") for r in requires)


def test_release_check_names_missing_tools(tmp_path: Path) -> None:
    """Without build/twine the script stops with one line saying what to install."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\n[ "$1" = "-c" ] && exit 1\nexit 0\n')
    fake.chmod(0o755)
    result = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "dist")],
        env={**os.environ, "PYTHON": str(fake)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "has no 'build'; pip install build twine" in result.stderr
