"""Exit statuses: a run stopped by a signal is no success; a closed pipe is quiet."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import TINY_PRETRAIN


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)]
)
def test_a_stopped_run_exits_128_plus_the_signal(
    tmp_path: Path, signum: int, status: int
) -> None:
    out = tmp_path / "run"
    options = [o if o != "1" or i == 0 else o for i, o in enumerate(TINY_PRETRAIN)]
    options[options.index("--epochs") + 1] = "100000"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightly_derm", "pretrain", "--out", str(out)] + options,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # A shell starts background jobs (`pytest ... &`, nohup) with SIGINT ignored,
        # and Python then never raises KeyboardInterrupt: give the run the default.
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoints" / "last.ckpt").is_file():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert "Continue with: lightly-derm pretrain --out" in err
    assert (out / "checkpoints" / "last.ckpt").is_file()  # what it saved survives


@pytest.mark.parametrize("args", [[], ["--json"]])
def test_a_closed_pipe_is_quiet(args: list[str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightly_derm", "plugins", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as `| head` does once it has its lines
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "Broken pipe" not in err, err
