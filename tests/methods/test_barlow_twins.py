from __future__ import annotations

import warnings

import pytest
import torch
from PIL import Image

from lightly_derm.data import GroupedViewCollate
from lightly_derm.methods import BarlowTwins


def reference_barlow_twins(z_a: torch.Tensor, z_b: torch.Tensor, lam: float) -> float:
    """Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij², C of biasedly standardised columns, float64."""
    a, b = z_a.double(), z_b.double()
    a = (a - a.mean(0)) / (a.var(0, unbiased=False) + 1e-5).sqrt()
    b = (b - b.mean(0)) / (b.var(0, unbiased=False) + 1e-5).sqrt()
    n, d = a.shape
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = float(sum(a[k, i] * b[k, j] for k in range(n)).detach()) / n
            total += (1 - c) ** 2 if i == j else lam * c**2
    return total


def test_loss_of_the_two_views() -> None:
    torch.manual_seed(0)
    model = BarlowTwins(
        backbone="resnet18", hidden_dim=16, output_dim=8, lambda_param=0.1
    )
    samples = [([torch.rand(3, 32, 32) for _ in range(2)], 0) for _ in range(4)]
    batch = GroupedViewCollate()(samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        loss = model.training_step(batch, 0)
        z_a, z_b = model.project(batch.view(0)), model.project(batch.view(1))
    assert loss.item() == pytest.approx(reference_barlow_twins(z_a, z_b, 0.1), rel=1e-4)
    three = GroupedViewCollate()([([torch.rand(3, 32, 32)] * 3, 0)] * 2)
    with pytest.raises(ValueError, match="2 views per image, got 3"):
        model.training_step(three, 0)
    views = model.default_transform(input_size=32)(Image.new("RGB", (40, 30)))
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2
