from __future__ import annotations

import math

import pytest
import torch
from lightly.loss import NegativeCosineSimilarity

from lightly_derm.loss import AdditionalPositiveLoss


def _reference(
    p: torch.Tensor, z: torch.Tensor, indices: torch.Tensor | None
) -> list[float]:
    """Loops in float64: −mean over s≠t and the chosen j of cos(p_i^s, z_j^t)."""
    views, batch, _ = p.shape
    out = []
    for i in range(batch):
        chosen = [i] if indices is None else indices[i].tolist()
        total, count = 0.0, 0
        for s in range(views):
            for t in range(views):
                if s == t:
                    continue
                for j in chosen:
                    a, b = p[s, i].double(), z[t, j].double()
                    total += float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))
                    count += 1
        out.append(-total / count)
    return out


@pytest.mark.parametrize(
    ("views", "batch", "targets", "dim", "k"),
    [(2, 5, 5, 8, None), (2, 4, 9, 3, 1), (3, 6, 6, 4, 2), (4, 3, 7, 5, 3)],
)
def test_matches_loop_reference(
    views: int, batch: int, targets: int, dim: int, k
) -> None:
    generator = torch.Generator().manual_seed(views * 10 + batch)
    p = torch.randn(views, batch, dim, generator=generator)
    z = torch.randn(views, targets, dim, generator=generator)
    indices = (
        None
        if k is None
        else torch.randint(0, targets, (batch, k), generator=generator)
    )
    loss_fn = AdditionalPositiveLoss()
    per_sample = loss_fn(list(p), list(z), indices, reduction="none")
    expected = torch.tensor(_reference(p, z, indices))
    torch.testing.assert_close(
        per_sample.double(), expected.double(), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(loss_fn(p, z, indices), per_sample.mean())


def test_without_indices_it_is_lightly_byol_loss() -> None:
    generator = torch.Generator().manual_seed(0)
    p0, p1, z0, z1 = (torch.randn(6, 16, generator=generator) for _ in range(4))
    ncs = NegativeCosineSimilarity()
    expected = 0.5 * (ncs(p0, z1) + ncs(p1, z0))
    torch.testing.assert_close(AdditionalPositiveLoss()([p0, p1], [z0, z1]), expected)


def test_gradients_reach_predictions_only_and_float32_under_autocast() -> None:
    p = torch.randn(2, 4, 8, requires_grad=True)
    z = torch.randn(2, 4, 8, requires_grad=True)
    AdditionalPositiveLoss()(p, z, torch.tensor([[1], [0], [3], [2]])).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = AdditionalPositiveLoss()(p.bfloat16(), z.bfloat16(), reduction="none")
    assert loss.dtype == torch.float32
    double = AdditionalPositiveLoss()(p.double(), z.double(), reduction="none")
    assert double.dtype == torch.float64


def test_bad_input() -> None:
    loss_fn = AdditionalPositiveLoss()
    p, z = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    with pytest.raises(ValueError, match="at least 2 views"):
        loss_fn(p[:1], z[:1])
    with pytest.raises(ValueError, match="V and D must match"):
        loss_fn(p, torch.randn(2, 4, 7))
    with pytest.raises(ValueError, match="targets need B = 4 samples, got 5"):
        loss_fn(p, torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"indices must be an int tensor \(4, k\)"):
        loss_fn(p, z, torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 4\)"):
        loss_fn(p, z, torch.full((4, 1), 4))
    with pytest.raises(ValueError, match="reduction must be"):
        loss_fn(p, z, reduction="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one shape"):
        loss_fn([torch.randn(4, 8), torch.randn(3, 8)], z)
    with pytest.raises(ValueError, match=r"\(V, B, D\)"):
        loss_fn(torch.randn(4, 8), z)
    with pytest.raises(
        TypeError, match="predictions must be floating-point, got.*int64"
    ):
        loss_fn(p.long(), z)
    with pytest.raises(TypeError, match="targets must be floating-point"):
        loss_fn(p, z.long())
    with pytest.raises(
        ValueError, match=r"B > 0 samples of D > 0 features.*\(2, 0, 8\)"
    ):
        loss_fn(p[:, :0], z[:, :0])


def test_identical_embeddings_are_finite_and_nan_stays_nan() -> None:
    """AdditionalPositiveLoss is not a registered plugin, so not in the input contracts."""
    loss_fn = AdditionalPositiveLoss()
    for z in (torch.ones(2, 4, 8), torch.zeros(2, 4, 8)):
        p = z.clone().requires_grad_(True)
        loss = loss_fn(p, z, torch.tensor([[1], [0], [3], [2]]))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(p.grad).all()
    nan = torch.randn(2, 4, 8)
    nan[0, 1, 2] = float("nan")
    assert torch.isnan(loss_fn(nan, torch.randn(2, 4, 8)))
