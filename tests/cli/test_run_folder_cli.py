"""The run folder from the command line: overwrite, the lock, resume's data check, advice."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import TINY_PRETRAIN
from tests.cli.test_pretrain_cli import one_error_line, run


def test_overwrite_keeps_the_users_files(tmp_path: Path, capsys) -> None:
    out = tmp_path / "project"
    (out / "plots").mkdir(parents=True)
    (out / "checkpoints").mkdir()
    (out / "plots" / "fig1.png").write_bytes(b"my figure")
    (out / "checkpoints" / "model_final.pt").write_bytes(b"my model")
    code, _, err = run(capsys, "pretrain", "--out", str(out), *TINY_PRETRAIN)
    assert code == 0, err
    assert (out / "plots" / "loss.png").is_file()
    code, _, err = run(
        capsys, "pretrain", "--out", str(out), "--overwrite", *TINY_PRETRAIN
    )
    assert code == 0, err
    assert (out / "plots" / "fig1.png").read_bytes() == b"my figure"
    assert (out / "checkpoints" / "model_final.pt").read_bytes() == b"my model"
    assert (out / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_users_config_yaml_is_not_a_run(tmp_path: Path, capsys, overwrite) -> None:
    (tmp_path / "config.yaml").write_text("my: settings\n")
    code, _, err = run(
        capsys, "pretrain", "--out", str(tmp_path), *overwrite, *TINY_PRETRAIN
    )
    assert code == 2
    assert "holds files no lightly-derm run recorded writing (config.yaml)" in (
        one_error_line(err)
    )
    assert (tmp_path / "config.yaml").read_text() == "my: settings\n"


@pytest.mark.parametrize("kind", ["empty", "file"])
def test_a_bad_out_is_one_line(tmp_path: Path, capsys, monkeypatch, kind) -> None:
    monkeypatch.chdir(tmp_path)
    if kind == "file":
        (tmp_path / "f").write_text("x")
    out = "" if kind == "empty" else "f"
    code, _, err = run(capsys, "pretrain", "--out", out, *TINY_PRETRAIN)
    assert code == 2
    expected = "--out is empty" if kind == "empty" else "is a file, not a folder"
    assert expected in one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == (
        [] if kind == "empty" else ["f"]
    )
