"""What a run prints: counts in words, no Lightning tips, no v_num, no _pytree warning."""

from __future__ import annotations

import logging
import types
import warnings
from pathlib import Path

import pytest

from lightly_derm.jobs.pretrain import _trained, plural
from lightly_derm.jobs.trainer import ProgressBar, quiet_lightning
from tests.cli.conftest import TINY_PRETRAIN
from tests.cli.test_pretrain_cli import run


def test_header_and_end_line_count_in_words(tmp_path: Path, capsys) -> None:
    code, out, err = run(
        capsys, "pretrain", "--out", str(tmp_path), *TINY_PRETRAIN, "--max-steps", "1"
    )
    assert code == 0, err
    assert "1 epoch of 2 batches (stopping at 1 optimizer step)" in out
    assert "done: 1 step in" in out
    assert "1 epochs" not in out and "Tip:" not in out + err


def test_the_pytree_deprecation_is_hidden() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning()
        warnings.warn_explicit(
            "`isinstance(treespec, LeafSpec)` is deprecated",
            FutureWarning,
            "_pytree.py",
            21,
            module="pytorch_lightning.utilities._pytree",
        )
        warnings.warn_explicit(
            "other",
            FutureWarning,
            "_pytree.py",
            22,
            module="pytorch_lightning.utilities._pytree",
        )
    assert [str(w.message) for w in caught] == ["other"]


def test_batches_and_optimizer_steps_apart() -> None:
    def trainer(batches: int, steps: int) -> object:
        progress = types.SimpleNamespace(total=types.SimpleNamespace(completed=batches))
        loop = types.SimpleNamespace(
            epoch_loop=types.SimpleNamespace(batch_progress=progress)
        )
        return types.SimpleNamespace(fit_loop=loop, global_step=steps)

    assert _trained(trainer(18, 72)) == "18 batches (72 optimizer steps)"  # type: ignore[arg-type]
    assert _trained(trainer(1, 1)) == "1 step"  # type: ignore[arg-type]
    assert plural(1, "epoch") == "1 epoch" and plural(2, "batch") == "2 batches"


def test_lightning_tips_are_hidden(caplog: pytest.LogCaptureFixture) -> None:
    quiet_lightning()
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("💡 Tip: For seamless cloud logging, try installing x")
        logger.info("GPU available: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False"]


def test_the_progress_bar_has_no_v_num(monkeypatch) -> None:
    from pytorch_lightning.callbacks import TQDMProgressBar

    monkeypatch.setattr(
        TQDMProgressBar,
        "get_metrics",
        lambda self, t, m: {"v_num": "oard", "loss": 1.0},
    )
    assert ProgressBar().get_metrics(None, None) == {"loss": 1.0}  # type: ignore[arg-type]


def test_the_jobs_log_through_logging(capsys) -> None:
    from lightly_derm.jobs import console

    console.say("pretrain", True, "hello")
    assert capsys.readouterr().out == "lightly-derm pretrain: hello\n"
    logger = logging.getLogger("lightly_derm.jobs")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        logger.setLevel(logging.WARNING)  # silenced, as a notebook would
        console.say("pretrain", True, "quiet")
        logger.setLevel(logging.INFO)
        console.say("pretrain", True, "heard")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["lightly-derm pretrain: heard"]
    assert capsys.readouterr().out == "lightly-derm pretrain: heard\n"


def test_the_loss_of_every_step_is_in_metrics_csv(tmp_path: Path, capsys) -> None:
    import csv

    options = [o for o in TINY_PRETRAIN]
    options[options.index("--epochs") + 1] = "3"  # 2 batches per epoch: 6 steps
    code, _, err = run(capsys, "pretrain", "--out", str(tmp_path), *options)
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    every = {
        int(r["step"]): r["train_loss_per_step"]
        for r in rows
        if r.get("train_loss_per_step")
    }
    assert sorted(every) == list(range(6))
    # Lightning's own rows (every few steps) hold the same values at the same steps
    lightning = {int(r["step"]): r["train_loss"] for r in rows if r.get("train_loss")}
    assert lightning and all(
        float(every[step]) == pytest.approx(float(v)) for step, v in lightning.items()
    )
    assert (tmp_path / "plots" / "loss.png").is_file()
