"""Fixtures of the command-line tests: one torch thread, tiny runs, a broken image folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.data.images import save_rgb, truncate

#: Options that make a pretraining run tiny: 16 synthetic images of 32 px, 1 epoch.
TINY_PRETRAIN = [
    "--synthetic-images",
    "16",
    "--input-size",
    "32",
    "--batch-size",
    "8",
    "--epochs",
    "1",
    "--embedding-images",
    "16",
    "--no-progress-bar",
    "--no-tensorboard",
]


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """12 RGB images in two class subfolders (a/, b/), one of them truncated."""
    root = tmp_path / "images"
    for i in range(12):
        save_rgb(root / ("a" if i % 2 else "b") / f"img_{i:02d}.png", 40, 48, seed=i)
    truncate(root / "a" / "img_03.png", 0.3)
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny ``pretrain`` run folder (GraVIS, resnet18, 32 px, synthetic)."""
    from lightly_derm.jobs import pretrain

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("tiny_run") / "run"
        pretrain(
            method="gravis",
            out=str(out),
            synthetic_images=16,
            input_size=32,
            batch_size=8,
            epochs=1,
            plots=False,
            progress_bar=False,
            tensorboard=False,
            verbose=False,
        )
    finally:
        torch.set_num_threads(threads)
    return out
