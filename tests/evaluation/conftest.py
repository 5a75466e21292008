"""Fixtures of the evaluation tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Runs each test with one intra-op thread (restored afterwards).

    The problems here are tiny (tens of samples); on a loaded machine, OpenMP threads
    waiting for each other made a 60×8 L-BFGS solve take seconds instead of milliseconds.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
