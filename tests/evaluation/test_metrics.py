from __future__ import annotations

import numpy as np
import pytest
import torch

from lightly_derm.evaluation import (
    accuracy,
    balanced_accuracy,
    binary_auc,
    classification_metrics,
)


def _loop_balanced_accuracy(preds, targets) -> float:
    recalls = []
    for c in sorted(set(targets)):
        members = [i for i, t in enumerate(targets) if t == c]
        recalls.append(sum(preds[i] == c for i in members) / len(members))
    return sum(recalls) / len(recalls)


def _loop_auc(scores, targets) -> float:
    pos = [s for s, t in zip(scores, targets, strict=True) if t == 1]
    neg = [s for s, t in zip(scores, targets, strict=True) if t == 0]
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


@pytest.mark.parametrize("n,num_classes,seed", [(7, 2, 0), (50, 3, 1), (200, 7, 2)])
def test_accuracies_against_loops(n: int, num_classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, num_classes, n)
    targets[:num_classes] = np.arange(num_classes)
    preds = np.where(rng.random(n) < 0.6, targets, rng.integers(0, num_classes, n))
    assert accuracy(preds, targets) == pytest.approx(
        sum(int(p == t) for p, t in zip(preds, targets, strict=True)) / n
    )
    assert balanced_accuracy(preds, targets) == pytest.approx(
        _loop_balanced_accuracy(preds.tolist(), targets.tolist())
    )
    assert balanced_accuracy(
        torch.as_tensor(preds), torch.as_tensor(targets)
    ) == pytest.approx(_loop_balanced_accuracy(preds.tolist(), targets.tolist()))


def test_balanced_accuracy_ignores_absent_classes_in_targets() -> None:
    # class 2 is predicted but never a target: it does not count as a class
    assert balanced_accuracy([0, 2, 1, 1], [0, 0, 1, 1]) == pytest.approx(
        (0.5 + 1.0) / 2
    )


@pytest.mark.parametrize("n,seed,ties", [(5, 0, False), (40, 1, True), (301, 2, True)])
def test_auc_against_pairwise_loop(n: int, seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, n)
    targets[:2] = [0, 1]
    scores = rng.integers(0, 5, n).astype(float) if ties else rng.random(n)
    scores = scores + 0.3 * targets
    assert binary_auc(scores, targets) == pytest.approx(
        _loop_auc(scores.tolist(), targets.tolist())
    )


def test_against_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    targets = rng.integers(0, 4, 120)
    preds = np.where(rng.random(120) < 0.5, targets, rng.integers(0, 4, 120))
    assert balanced_accuracy(preds, targets) == pytest.approx(
        metrics.balanced_accuracy_score(targets, preds)
    )
    binary = targets % 2
    scores = rng.integers(0, 10, 120) + binary
    assert binary_auc(scores, binary) == pytest.approx(
        metrics.roc_auc_score(binary, scores)
    )


def test_classification_metrics() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]])
    result = classification_metrics(probs, torch.tensor([0, 1, 1, 1]), prefix="x_")
    assert result["x_accuracy"] == pytest.approx(0.75)
    assert result["x_balanced_accuracy"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert result["x_auc"] == pytest.approx(
        _loop_auc([0.1, 0.6, 0.3, 0.8], [0, 1, 1, 1])
    )
    assert result["x_num_samples"] == 4
    assert classification_metrics(probs, torch.tensor([1, 1, 1, 1]))["auc"] is None
    three = classification_metrics(torch.eye(3), torch.tensor([0, 1, 2]))
    assert "auc" not in three and three["accuracy"] == 1.0


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: accuracy([0, 1], [0, 1, 1]), "differ in shape"),
        (lambda: accuracy([], []), "empty"),
        (lambda: accuracy([[0, 1]], [[0, 1]]), "1-D"),
        (lambda: accuracy([0.5, 1.0], [0, 1]), "integer"),
        (lambda: balanced_accuracy([0, 1], [0, -1]), "unlabelled"),
        (lambda: binary_auc([0.1, 0.2], [1, 1]), "one class"),
        (lambda: binary_auc([0.1, 0.2], [0, 2]), r"\{0, 1\}"),
        (
            lambda: classification_metrics(torch.rand(3, 2), torch.tensor([0, 1])),
            r"\(N, C\)",
        ),
        (
            lambda: classification_metrics(torch.rand(2, 2), torch.tensor([0, 2])),
            "only 2 classes",
        ),
    ],
)
def test_bad_input(call, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_one_class_tasks_are_refused_with_the_reason() -> None:
    # before: `evaluate --task melanoma` on data without melanoma reported kNN and
    # linear accuracy 1.0000 without a word

    from lightly_derm.errors import DataError
    from lightly_derm.evaluation import (
        Features,
        knn_evaluate,
        linear_probe_evaluate,
        require_two_classes,
    )

    gen = torch.Generator().manual_seed(0)
    train = Features(
        torch.randn(12, 4, generator=gen),
        torch.tensor([0] * 10 + [-1, -1]),
        [None] * 12,
    )
    test = Features(torch.randn(5, 4, generator=gen), torch.zeros(5).long(), [None] * 5)
    for evaluate in (knn_evaluate, linear_probe_evaluate):
        with pytest.raises(
            DataError, match=r"labels hold one class only \(10 labelled"
        ):
            evaluate(train, test, num_classes=2)
    with pytest.raises(DataError, match="class 1 'melanoma'"):
        require_two_classes(np.array([1, 1]), classes=["not_melanoma", "melanoma"])
    with pytest.raises(DataError, match="no labelled sample"):
        require_two_classes([-1, -1])
    require_two_classes(torch.tensor([0, 1, -1]))
