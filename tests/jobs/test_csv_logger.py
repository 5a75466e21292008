from __future__ import annotations

import csv

from lightly_derm.jobs.csv_logger import ContinuingCSVLogger


def rows(path):
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def write(path, steps):
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["epoch", "step", "train_loss"])
        writer.writeheader()
        for step in steps:
            writer.writerow({"epoch": 0, "step": step, "train_loss": step / 10})


def test_a_new_run_replaces_the_file(tmp_path) -> None:
    write(tmp_path / "metrics.csv", range(4))
    logger = ContinuingCSVLogger(tmp_path)
    assert logger.log_dir == str(tmp_path)
    logger.log_metrics({"train_loss": 9.0}, step=0)
    logger.save()
    assert [r["train_loss"] for r in rows(tmp_path / "metrics.csv")] == ["9.0"]


def test_resume_keeps_the_rows_up_to_the_checkpoint_and_appends(tmp_path) -> None:
    # steps 0..5 were logged; the checkpoint was written after step 2
    write(tmp_path / "metrics.csv", range(6))
    logger = ContinuingCSVLogger(tmp_path, keep_through_step=2)
    logger.log_metrics({"train_loss": 0.35}, step=3)
    logger.log_metrics({"train_loss_epoch": 0.2, "epoch": 0}, step=3)  # a new column
    logger.save()
    result = rows(tmp_path / "metrics.csv")
    assert [r["step"] for r in result] == ["0", "1", "2", "3", "3"]
    assert result[1]["train_loss"] == "0.1" and result[3]["train_loss"] == "0.35"
    assert (
        result[4]["train_loss_epoch"] == "0.2" and result[0]["train_loss_epoch"] == ""
    )
    (tmp_path / "hparams.yaml").unlink(missing_ok=True)
    logger.log_hyperparams({"lr": 0.1})
    assert (tmp_path / "hparams.yaml").is_file()
