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


DATA_RUN = [
    "--input-size",
    "32",
    "--batch-size",
    "4",
    "--epochs",
    "1",
    "--max-steps",
    "1",
    "--backbone",
    "resnet18",
    "--num-workers",
    "0",
    "--embedding-images",
    "0",
    "--no-plots",
    "--no-progress-bar",
    "--no-tensorboard",
]


def test_resume_refuses_other_data(
    image_folder: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import yaml

    monkeypatch.chdir(image_folder.parent)
    out = tmp_path / "run"
    code, _, err = run(
        capsys, "pretrain", "--data", image_folder.name, "--out", str(out), *DATA_RUN
    )
    assert code == 0, err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"] == str(image_folder)  # absolute, not as given
    assert saved["data_fingerprint"]["files"] == 12
    # the saved configuration is still a valid --config file
    code, _, err = run(
        capsys, "pretrain", "--config", str(out / "config.yaml"), "--print-config"
    )
    assert code == 0, err
    # the same data: resuming is accepted
    code, _, err = run(capsys, "pretrain", "--out", str(out), "--resume")
    assert code == 0, err
    # a file replaced by another of a different size: refused, naming the data
    (image_folder / "a" / "img_01.png").write_bytes(b"other")
    code, _, err = run(capsys, "pretrain", "--out", str(out), "--resume")
    assert code == 2
    line = one_error_line(err)
    assert f"the data at {image_folder} differ from the run's" in line
