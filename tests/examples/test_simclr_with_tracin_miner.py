"""The SimCLR + TracIn miner example: lightly's SimCLR model with mined GraVIS groups."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import lightly_derm.loss

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "examples" / "simclr_with_tracin_miner.py"
)


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("simclr_with_tracin_miner", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _batch(size: int = 6, seed: int = 0) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    views = [torch.randn(size, 3, 32, 32, generator=generator) for _ in range(2)]
    return views, torch.zeros(size, dtype=torch.long), [f"{i}.jpg" for i in range(size)]


class RecordingGroupedLoss(nn.Module):
    """Stand-in for a grouping loss: supervised-contrastive over group ids."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.group_ids: list[Tensor] = []

    def forward(self, embeddings: Tensor, group_ids: Tensor) -> Tensor:
        self.group_ids.append(group_ids.clone())
        z = F.normalize(embeddings, dim=1)
        logits = (z @ z.T / 0.1).fill_diagonal_(-1e9)
        positive = group_ids[:, None] == group_ids[None, :]
        positive.fill_diagonal_(False)
        log_prob = logits.log_softmax(dim=1)
        return -(log_prob * positive).sum(1).div(positive.sum(1)).mean()


def test_example_wires_mined_positives_into_groups(monkeypatch) -> None:
    monkeypatch.setattr(
        lightly_derm.loss, "GraVISLoss", RecordingGroupedLoss, raising=False
    )
    example = _load_example()
    torch.manual_seed(0)
    model = example.SimCLR()
    mined: list[Tensor] = []
    forward = model.miner.forward
    monkeypatch.setattr(
        model.miner,
        "forward",
        lambda *a, **k: mined.append(forward(*a, **k)) or mined[-1],
    )
    loss = model.training_step(_batch(), 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.backbone[0].weight.grad is not None
    (groups,) = model.criterion.group_ids
    (indices,) = mined
    images = torch.arange(6).repeat(2)
    # Both views of an image, and of its mined image, share one group.
    assert torch.equal(groups[:6], groups[6:])
    assert torch.equal(groups[images], groups[indices[images, 0]])
    assert not (indices[:, 0] == torch.arange(6)).any()


def test_example_trains_with_gravis_loss() -> None:
    sys.modules.pop("simclr_with_tracin_miner", None)
    example = _load_example()
    torch.manual_seed(0)
    model = example.SimCLR()
    loss = model.training_step(_batch(), 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.backbone[0].weight.grad is not None
