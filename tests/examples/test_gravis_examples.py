"""The GraVIS examples run (one step, tiny images, FakeData)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _no_workers(monkeypatch):
    """Examples use 2 workers; the test runs in-process."""
    loader = torch.utils.data.DataLoader

    class InProcess(loader):
        def __init__(self, *args, **kwargs):
            kwargs["num_workers"] = 0
            kwargs.pop("persistent_workers", None)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", InProcess)


TINY = ["--input-size", "32", "--batch-size", "4", "--max-steps", "1"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,extra",
    [
        ("gravis_simclr_swap", []),
        ("gravis_byol_heads", ["--num-views", "3"]),
        ("gravis_pretrain", ["--backbone", "resnet18", "--num-workers", "0"]),
    ],
)
def test_example_trains_one_step(name, extra, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    module = _load(name)
    torch.manual_seed(0)
    model = module.main(
        TINY + extra + (["--out", str(tmp_path)] if name == "gravis_pretrain" else [])
    )
    assert torch.isfinite(model.trainer.callback_metrics["train_loss"])
    if name == "gravis_pretrain":
        weights = torch.load(tmp_path / "backbone.pt", weights_only=True)
        assert "conv1.weight" in weights and "layer4.1.bn2.weight" in weights
