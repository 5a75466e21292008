from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from lightly.utils.benchmarking import knn_predict

from lightly_derm.evaluation import Features, knn_evaluate, knn_scores


def _loop_scores(query, bank, bank_targets, num_classes, k, t):
    """float64 reference: one query at a time, plain Python over the neighbours."""
    out = torch.zeros(query.shape[0], num_classes, dtype=torch.float64)
    q = query.double()
    b = bank.double()
    for i in range(q.shape[0]):
        sims = []
        for j in range(b.shape[0]):
            cos = float(q[i] @ b[j]) / (float(q[i].norm()) * float(b[j].norm()))
            sims.append((cos, int(bank_targets[j])))
        sims.sort(key=lambda s: -s[0])
        for cos, label in sims[:k]:
            out[i, label] += math.exp(cos / t)
        out[i] /= out[i].sum()
    return out


@pytest.mark.parametrize(
    "b,n,d,c,k,t,chunk",
    [
        (3, 5, 4, 2, 3, 0.1, 1024),
        (17, 40, 8, 3, 10, 0.1, 4),
        (9, 25, 16, 5, 25, 0.5, 2),
        (4, 6, 3, 3, 50, 0.07, 3),
    ],
)
def test_against_loop_reference(b, n, d, c, k, t, chunk) -> None:
    gen = torch.Generator().manual_seed(b * n)
    query, bank = torch.randn(b, d, generator=gen), torch.randn(n, d, generator=gen)
    labels = torch.randint(0, c, (n,), generator=gen)
    scores = knn_scores(query, bank, labels, c, k=k, temperature=t, chunk_size=chunk)
    expected = _loop_scores(query, bank, labels, c, min(k, n), t)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores.double(), expected, atol=2e-5, rtol=1e-4)


def test_ranking_matches_lightly_knn_predict() -> None:
    gen = torch.Generator().manual_seed(0)
    query, bank = (
        torch.randn(30, 16, generator=gen),
        torch.randn(100, 16, generator=gen),
    )
    labels = torch.randint(0, 4, (100,), generator=gen)
    ours = knn_scores(query, bank, labels, 4, k=15, temperature=0.1)
    lightly = knn_predict(
        F.normalize(query, dim=1),
        F.normalize(bank, dim=1).T,
        labels,
        4,
        knn_k=15,
        knn_t=0.1,
    )
    assert torch.equal(ours.argmax(1), lightly[:, 0])


def test_small_temperature_does_not_overflow() -> None:
    gen = torch.Generator().manual_seed(1)
    scores = knn_scores(
        torch.randn(5, 8, generator=gen),
        torch.randn(20, 8, generator=gen),
        torch.randint(0, 3, (20,), generator=gen),
        3,
        k=5,
        temperature=1e-3,
    )
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores.sum(1), torch.ones(5))


def test_knn_evaluate_separable_and_unlabelled_bank() -> None:
    gen = torch.Generator().manual_seed(2)
    centres = torch.tensor([[5.0, 0, 0], [0, 5.0, 0]])
    train_y = torch.tensor([0, 1] * 20 + [-1] * 5)
    train_x = centres[train_y.clamp_min(0)] + torch.randn(45, 3, generator=gen)
    train_x[-5:] = centres[1] + torch.randn(
        5, 3, generator=gen
    )  # unlabelled, near class 1
    test_y = torch.tensor([0, 1] * 10)
    test_x = centres[test_y] + torch.randn(20, 3, generator=gen)
    result = knn_evaluate(
        Features(train_x, train_y, [None] * 45),
        Features(test_x, test_y, [None] * 20),
        k=7,
    )
    assert result["knn_accuracy"] == 1.0 and result["knn_auc"] == 1.0
    assert result["knn_k"] == 7 and result["knn_num_samples"] == 20


@pytest.mark.parametrize(
    "args,match",
    [
        (
            (torch.rand(2, 3), torch.rand(4, 5), torch.zeros(4, dtype=torch.long), 2),
            "share D",
        ),
        (
            (torch.rand(2, 3), torch.rand(4, 3), torch.zeros(3, dtype=torch.long), 2),
            "bank_targets",
        ),
        (
            (torch.rand(2, 3), torch.rand(4, 3), torch.tensor([0, 1, 2, 0]), 2),
            r"\[0, 2\)",
        ),
    ],
)
def test_bad_input(args, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        knn_scores(*args)
    with pytest.raises(ValueError, match="positive"):
        knn_scores(
            torch.rand(2, 3), torch.rand(4, 3), torch.zeros(4, dtype=torch.long), 2, k=0
        )
