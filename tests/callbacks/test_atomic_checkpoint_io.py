from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.cloud_io import _atomic_save
from pytorch_lightning.callbacks import ModelCheckpoint

from lightly_derm.callbacks import AtomicCheckpointIO, atomic_save
from lightly_derm.callbacks.atomic_checkpoint_io import _lock, remove_stale_temporaries
from lightly_derm.errors import CheckpointError

REPO = Path(__file__).resolve().parents[2]


def _half_writer(real_save):
    """A torch.save that writes half of the real bytes, then fails (disk full)."""

    def save(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


def test_failure_midway_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "last.ckpt"
    atomic_save({"step": torch.tensor(1), "w": torch.ones(1000)}, path)
    monkeypatch.setattr(torch, "save", _half_writer(torch.save))
    with pytest.raises(OSError, match="No space left"):
        atomic_save({"step": torch.tensor(2), "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left


def test_new_file_permissions_follow_the_umask(tmp_path) -> None:
    atomic_save({"a": torch.zeros(1)}, tmp_path / "sub" / "x.ckpt")
    reference = tmp_path / "reference"
    reference.touch()
    mode = (tmp_path / "sub" / "x.ckpt").stat().st_mode & 0o777
    assert mode == reference.stat().st_mode & 0o777


CHILD = """
import os, sys, time, torch
sys.path.insert(0, {repo!r})
from lightly_derm.callbacks import atomic_save

path = sys.argv[1]
atomic_save({{"version": torch.tensor(1), "w": torch.ones(2_000_000)}}, path)
print("saved", flush=True)
real_save = torch.save

def slow_save(obj, f):  # the real bytes, written slowly: the kill lands mid-write
    import io
    buffer = io.BytesIO()
    real_save(obj, buffer)
    data = buffer.getvalue()
    for start in range(0, len(data), 1 << 16):
        f.write(data[start:start + (1 << 16)])
        f.flush()
        time.sleep(0.05)

torch.save = slow_save
atomic_save({{"version": torch.tensor(2), "w": torch.zeros(2_000_000)}}, path)
print("done", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
@pytest.mark.slow
def test_kill_during_a_save_never_leaves_a_half_written_checkpoint(tmp_path) -> None:
    """A process killed (SIGKILL) while writing: the previous last.ckpt is intact."""
    path = tmp_path / "last.ckpt"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO)))
    child = subprocess.Popen(
        [sys.executable, str(script), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "saved", child.stderr.read()
        deadline = time.monotonic() + 60
        temporaries: list[Path] = []
        while time.monotonic() < deadline:  # wait until the new file is half there
            temporaries = [p for p in tmp_path.glob(".last.ckpt.*.tmp")]
            if temporaries and temporaries[0].stat().st_size > (1 << 18):
                break
            time.sleep(0.01)
        assert temporaries, "the second save never started"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    saved = torch.load(path, weights_only=True)
    assert saved["version"].item() == 1 and torch.equal(
        saved["w"], torch.ones(2_000_000)
    )
    # The partial file is left behind, but never under a *.ckpt name ...
    assert [p.name for p in tmp_path.glob("*.ckpt")] == ["last.ckpt"]
    # ... and the next run removes it: its writer's lock died with the process
    stale = list(tmp_path.glob(".last.ckpt.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size > (1 << 18)
    assert remove_stale_temporaries(tmp_path) == stale
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child.py", "last.ckpt"]


def _cross_device_rename(monkeypatch) -> None:
    """Renames across folders fail with EXDEV, as from /tmp to another file system."""
    real_rename, real_replace = os.rename, os.replace

    def rename(src, dst, *args, **kwargs):
        if os.path.dirname(os.path.abspath(src)) != os.path.dirname(
            os.path.abspath(dst)
        ):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if os.path.dirname(os.path.abspath(src)) != os.path.dirname(
            os.path.abspath(dst)
        ):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(src, dst, *args, **kwargs)

    def copy_half(src, dst, *args, **kwargs):  # killed halfway through the copy
        data = Path(src).read_bytes()
        Path(dst).write_bytes(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(shutil, "copyfile", copy_half)


def test_lightning_default_save_is_not_atomic_across_file_systems(
    tmp_path, monkeypatch
) -> None:
    """Why AtomicCheckpointIO exists: Lightning's temporary file is in the system
    temporary folder; on another file system the commit is a copy onto last.ckpt, and a
    kill during the copy leaves it truncated. (If this starts failing, Lightning fixed
    it and AtomicCheckpointIO may go.)"""
    path = tmp_path / "last.ckpt"
    _atomic_save({"w": torch.ones(100_000)}, path)
    _cross_device_rename(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _atomic_save({"w": torch.zeros(100_000)}, path)
    monkeypatch.undo()
    with pytest.raises(Exception):  # noqa: B017 - any error: the file is truncated
        torch.load(path, weights_only=True)


def test_atomic_io_is_atomic_across_file_systems(tmp_path, monkeypatch) -> None:
    path = tmp_path / "last.ckpt"
    io_plugin = AtomicCheckpointIO()
    io_plugin.save_checkpoint({"w": torch.ones(100_000)}, path)
    _cross_device_rename(monkeypatch)
    monkeypatch.setattr(torch, "save", _half_writer(torch.save))
    with pytest.raises(OSError):
        io_plugin.save_checkpoint({"w": torch.zeros(100_000)}, path)
    monkeypatch.undo()
    assert torch.equal(io_plugin.load_checkpoint(path)["w"], torch.ones(100_000))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_loads_are_weights_only_and_local(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    io_plugin = AtomicCheckpointIO()
    torch.save({"state_dict": {}, "evil": _Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="evil.ckpt' was refused: it carries"):
        io_plugin.load_checkpoint(tmp_path / "evil.ckpt")
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(ValueError, match="is a URL; lightly-derm loads local files"):
        io_plugin.load_checkpoint("https://example.com/model.ckpt")
    with pytest.raises(TypeError, match="storage_options"):
        io_plugin.save_checkpoint({}, tmp_path / "x.ckpt", storage_options={"a": 1})


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_keeps_last_ckpt_when_a_save_fails(tmp_path, monkeypatch) -> None:
    """With the plugin in a Trainer: a save that dies midway leaves the last good
    last.ckpt, and the run resumes from it with weights_only=True."""
    real_save = torch.save
    calls = {"n": 0}

    def flaky(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the third checkpoint: disk full midway
            return _half_writer(real_save)(obj, f, *args, **kwargs)
        return real_save(obj, f, *args, **kwargs)

    def trainer(**kwargs) -> pl.Trainer:
        return pl.Trainer(
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            plugins=[AtomicCheckpointIO()],
            callbacks=[
                ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_last=True)
            ],
            **kwargs,
        )

    loader = torch.utils.data.DataLoader(torch.randn(8, 4), batch_size=2)
    monkeypatch.setattr(torch, "save", flaky)
    with pytest.raises(OSError, match="No space left"):
        trainer(max_steps=4).fit(_Tiny(), loader)
    monkeypatch.undo()
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["global_step"] == 1  # the checkpoint of step 1: the 2nd file written
    assert not list(tmp_path.glob(".*.tmp"))
    resumed = trainer(max_steps=4)
    resumed.fit(_Tiny(), loader, ckpt_path=tmp_path / "last.ckpt")
    assert resumed.global_step == 4


@pytest.mark.skipif(sys.platform == "win32", reason="file locks")
def test_a_live_writers_temporary_and_user_files_are_kept(tmp_path) -> None:
    live = tmp_path / ".last.ckpt.00112233aabb.tmp"
    dead = tmp_path / ".step=3.ckpt.a1b2c3d4e5f6.tmp"
    mine = [".notes.tmp", "x.tmp", ".last.ckpt.tmp", ".a.ckpt.XYZXYZXYZXYZ.tmp"]
    for name in mine:
        (tmp_path / name).write_text("the user's")
    dead.write_bytes(b"half")
    with open(live, "wb") as file:
        assert _lock(file, blocking=True)
        assert remove_stale_temporaries(tmp_path) == [dead]
        assert live.exists()
    assert remove_stale_temporaries(tmp_path) == [live]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(mine)
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_resume_and_first_save_remove_stale_temporaries(tmp_path) -> None:
    stale = tmp_path / ".last.ckpt.0123456789ab.tmp"
    stale.write_bytes(b"x" * 1000)
    (tmp_path / "notes.tmp").write_text("mine")
    loader = torch.utils.data.DataLoader(torch.randn(8, 4), batch_size=2)

    def trainer(**kwargs) -> pl.Trainer:
        return pl.Trainer(
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            plugins=[AtomicCheckpointIO()],
            callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)],
            **kwargs,
        )

    trainer(max_steps=2).fit(_Tiny(), loader)  # first save into the folder
    assert not stale.exists() and (tmp_path / "notes.tmp").exists()
    stale.write_bytes(b"x" * 1000)  # a later save was killed
    io_plugin = AtomicCheckpointIO()
    io_plugin.load_checkpoint(tmp_path / "last.ckpt")  # what a resume does first
    assert not stale.exists() and (tmp_path / "notes.tmp").exists()


def test_checkpoints_with_non_finite_weights_or_corrupt_are_refused(tmp_path) -> None:
    io_plugin = AtomicCheckpointIO()
    state = {
        "layer.weight": torch.tensor([[1.0, float("nan")]]),
        "step": torch.tensor(3),
    }
    torch.save({"state_dict": state}, tmp_path / "nan.ckpt")
    with pytest.raises(CheckpointError) as info:
        io_plugin.load_checkpoint(tmp_path / "nan.ckpt")
    assert str(info.value) == (
        f"checkpoint {str(tmp_path / 'nan.ckpt')!r} has non-finite weights (NaN or inf) "
        "in 1 tensor: layer.weight; it cannot be used (a run that diverged)"
    )
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "nan.ckpt").read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"cut.ckpt' is not a readable PyTorch"):
        io_plugin.load_checkpoint(tmp_path / "cut.ckpt")


def test_disk_full_is_one_error_naming_the_file(tmp_path, monkeypatch) -> None:
    # before: torch's RuntimeError "[enforce fail at inline_container.cc] ..." raised
    # while handling the OSError: a double traceback naming no file
    from lightly_derm.callbacks.atomic_checkpoint_io import CheckpointWriteError

    path = tmp_path / "last.ckpt"
    atomic_save({"w": torch.ones(10)}, path)
    real_save = torch.save

    class _Full(io.RawIOBase):  # the disk fills up after 4 KB
        def __init__(self, file) -> None:
            self.file, self.written = file, 0

        def writable(self) -> bool:
            return True

        def write(self, data) -> int:
            self.written += len(data)
            if self.written > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.file.write(data)

    def save(obj, f, *args, **kwargs):  # the real torch.save, on a filling disk
        return real_save(obj, _Full(f), *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(CheckpointWriteError) as info:
        atomic_save({"w": torch.zeros(100_000)}, path)
    monkeypatch.undo()
    assert str(info.value) == (
        f"[Errno 28] cannot write checkpoint {path}: No space left on device; "
        "last.ckpt is unchanged"
    )
    assert info.value.errno == errno.ENOSPC and info.value.__suppress_context__
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(10))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
