"""The error contract and its advice: one line naming the cause, and advice that works."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

import lightly_derm
from lightly_derm.callbacks.non_finite_loss import NonFiniteLossError
from lightly_derm.cli import is_user_error
from lightly_derm.jobs import console, pretrain
from tests.cli.conftest import TINY_PRETRAIN
from tests.cli.test_pretrain_cli import one_error_line, run


def run_advice(capsys, line: str, marker: str) -> int:
    """Runs the command an error line advises (after ``marker``)."""
    command = line.split(marker, 1)[1].strip()
    argv = shlex.split(command)
    assert argv[0] == "lightly-derm"
    return run(capsys, *argv[1:], "--no-progress-bar")[0]


def test_a_run_that_failed_before_its_first_checkpoint(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "run")
    code, _, err = run(
        capsys, "pretrain", "--out", out, "--strategy", "bogus", *TINY_PRETRAIN
    )
    assert code == 2, err
    code, _, err = run(capsys, "pretrain", "--out", out, "--resume")
    assert code == 2
    assert "start it again without --resume" in one_error_line(err)
    code, _, err = run(capsys, "pretrain", "--out", out, *TINY_PRETRAIN)  # as advised
    assert code == 0, err


def test_a_corrupt_last_checkpoint_on_resume(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert run(capsys, "pretrain", "--out", str(out), *TINY_PRETRAIN)[0] == 0
    (out / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    code, _, err = run(capsys, "pretrain", "--out", str(out), "--resume")
    assert code == 2
    line = one_error_line(err)
    assert f"cannot resume {out}" in line and "last.ckpt" in line
    assert run_advice(capsys, line, "start the run again with:") == 0
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)


class Poison(pl.Callback):
    """Makes every weight NaN before the second batch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 1:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))


def test_the_non_finite_loss_advice_works(tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "run"
    monkeypatch.setattr(console, "_COMMAND_LINE", True)
    options = dict(
        synthetic_images=16, input_size=32, batch_size=8, epochs=1,
        embedding_images=0, progress_bar=False, tensorboard=False,
    )  # fmt: skip
    with pytest.raises(NonFiniteLossError) as info:
        pretrain(out=str(out), callbacks=[Poison()], verbose=False, **options)
    message = str(info.value)
    assert "--overwrite --method-args lr=0.005" in message  # GraVIS's demo lr / 10
    assert run_advice(capsys, message, "start again:") == 0
    assert "lr: 0.005" in (out / "config.yaml").read_text()


def test_from_python_the_advice_names_keywords(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("method: gravis\n")
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match=r"start it again without resume=True"):
        pretrain(out=str(tmp_path), resume=True, verbose=False)


def test_method_args_of_the_wrong_type_name_the_argument(capsys) -> None:
    code, _, err = run(capsys, "pretrain", "--method-args", "lr=abc", "--print-config")
    assert code == 2
    assert "argument 'lr' of method 'gravis' must be a float" in one_error_line(err)


def test_a_checkpoint_carrying_code_is_named_as_such(tmp_path: Path, capsys) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "evil": Evil()}, path)
    code, out, err = run(
        capsys, "segment", "--checkpoint", str(path), "--out", str(tmp_path / "s")
    )
    assert code == 2 and "pwned" not in out
    line = one_error_line(err)
    assert "was refused" in line and "pickled code" in line
    assert "cannot tell which ResNet" not in line


def test_a_key_error_in_lightly_derm_is_a_bug() -> None:
    package = Path(lightly_derm.__file__).parent / "jobs" / "pretrain.py"
    try:
        exec(compile("{}['missing']", str(package), "exec"))
    except KeyError as exc:
        assert not is_user_error(exc)
    try:
        exec(compile("raise ValueError('bad --x')", str(package), "exec"))
    except ValueError as exc:
        assert is_user_error(exc)
