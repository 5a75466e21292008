from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightly_derm.evaluation import (
    Features,
    select_knn,
    select_linear_probe,
    selection_score,
)


def _features(x: torch.Tensor, y: torch.Tensor) -> Features:
    return Features(x, y, [None] * len(y))


def _data(
    n: int, d: int, c: int, seed: int, imbalance: float = 0.0, separation: float = 1.5
):
    """Gaussian classes; ``imbalance`` of the samples moved to class 0."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    y[: int(imbalance * n)] = 0
    means = separation * torch.randn(c, d, generator=gen)
    x = torch.randn(n, d, generator=gen) + means[y]
    return x, y


def _accuracies(pred: np.ndarray, y: np.ndarray, c: int) -> tuple[float, float]:
    accuracy = float((pred == y).mean())
    recalls = [float((pred[y == k] == k).mean()) for k in range(c) if (y == k).any()]
    return accuracy, float(np.mean(recalls))


def _criterion(accuracy: float, balanced: float, metric: str) -> float:
    return {"accuracy": accuracy, "balanced_accuracy": balanced}.get(
        metric, 0.5 * (accuracy + balanced)
    )


def _loop_knn_predict(query, bank, targets, c, k, t) -> np.ndarray:
    """float64 loops: cosine top-k, votes exp(sim / t) per class, argmax."""
    out = []
    for q in query.double():
        sims = sorted(
            (
                (float(q @ b) / (float(q.norm()) * float(b.norm())), int(label))
                for b, label in zip(bank.double(), targets, strict=True)
            ),
            key=lambda s: -s[0],
        )
        votes = [0.0] * c
        for sim, label in sims[: min(k, len(sims))]:
            votes[label] += math.exp(sim / t)
        out.append(int(np.argmax(votes)))
    return np.asarray(out)


@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy", "mean"])
def test_selection_score(metric: str) -> None:
    scores = {"x_accuracy": 0.9, "x_balanced_accuracy": 0.3}
    assert selection_score(scores, "x_", metric) == pytest.approx(  # type: ignore[arg-type]
        _criterion(0.9, 0.3, metric)
    )


def test_selection_score_rejects_unknown_metric() -> None:
    with pytest.raises(ValueError, match="selection metric must be one of"):
        selection_score({"accuracy": 1, "balanced_accuracy": 1}, metric="f1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "n,d,c,ks,metric,imbalance",
    [
        (40, 4, 2, (1, 3, 15), "accuracy", 0.0),
        (60, 6, 3, (2, 10, 30, 100), "balanced_accuracy", 0.5),
        (45, 5, 4, (5, 1, 20), "mean", 0.3),
    ],
)
def test_select_knn_against_loop_reference(n, d, c, ks, metric, imbalance) -> None:
    xa, ya = _data(n + n // 2, d, c, seed=n, imbalance=imbalance)
    order = torch.randperm(len(ya), generator=torch.Generator().manual_seed(n))
    x, y, xv, yv = xa[order[:n]], ya[order[:n]], xa[order[n:]], ya[order[n:]]
    gen = torch.Generator().manual_seed(0)
    xv = xv + 0.5 * torch.randn(xv.shape, generator=gen)  # harder than train
    chosen = select_knn(
        _features(x, y),
        _features(xv, yv),
        ks,
        num_classes=c,
        temperature=0.1,
        metric=metric,
    )
    expected = {}
    for k in ks:
        pred = _loop_knn_predict(xv, x, y.tolist(), c, k, 0.1)
        expected[k] = _criterion(*_accuracies(pred, yv.numpy(), c), metric)
    assert chosen["scores"] == pytest.approx(expected, abs=1e-9)
    best = max(expected.values())
    assert chosen["knn_k"] == next(
        k for k in ks if expected[k] == best
    )  # first on ties


def test_select_linear_probe_against_scikit_learn() -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    metrics = pytest.importorskip("sklearn.metrics")
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    c = 3
    xa, ya = _data(240, 6, c, seed=3, imbalance=0.8, separation=0.7)
    order = torch.randperm(240, generator=torch.Generator().manual_seed(3))
    x, y, xv, yv = xa[order[:150]], ya[order[:150]], xa[order[150:]], ya[order[150:]]
    decays, weights = (1e-3, 1e-1, 3.0), (None, "balanced")
    chosen = select_linear_probe(
        _features(x, y),
        _features(xv, yv),
        decays,
        weights,
        num_classes=c,
        metric="mean",
    )
    scaler = preprocessing.StandardScaler().fit(x.double().numpy())
    expected = {}
    for decay in decays:
        for weight in weights:
            # sklearn: C Σ w_i CE_i + ½||W||²; the probe: Σ w_i CE_i / Σ w_i + λ/2 ||W||²
            # and Σ w_i = N for both weightings  ⇒  C = 1 / (N λ)
            reference = linear_model.LogisticRegression(
                C=1 / (len(y) * decay), class_weight=weight, tol=1e-10, max_iter=10000
            ).fit(scaler.transform(x.double().numpy()), y.numpy())
            pred = reference.predict(scaler.transform(xv.double().numpy()))
            accuracy = metrics.accuracy_score(yv.numpy(), pred)
            balanced = metrics.balanced_accuracy_score(yv.numpy(), pred)
            expected[f"{decay:g}/{weight}"] = 0.5 * (accuracy + balanced)
    # both solvers reach the same optimum; a validation point on the boundary may flip
    for key, value in expected.items():
        assert chosen["scores"][key] == pytest.approx(value, abs=1.5 / len(yv))
    key = f"{chosen['linear_weight_decay']:g}/{chosen['linear_class_weight']}"
    assert expected[key] >= max(expected.values()) - 1.5 / len(yv)
    # the class-balanced loss wins the class-balanced criterion on imbalanced data
    assert max(v for k, v in expected.items() if k.endswith("balanced")) > max(
        v for k, v in expected.items() if k.endswith("None")
    )
    assert chosen["linear_class_weight"] == "balanced"


def test_select_linear_probe_ignores_unlabelled_training_samples() -> None:
    xa, ya = _data(60, 3, 2, seed=5)
    x, y, xv, yv = xa[:40], ya[:40], xa[40:], ya[40:]
    y_unlabelled = y.clone()
    y_unlabelled[::4] = -1
    a = select_linear_probe(
        _features(x, y_unlabelled), _features(xv, yv), (1e-2,), (None,)
    )
    keep = y_unlabelled >= 0
    b = select_linear_probe(
        _features(x[keep], y[keep]), _features(xv, yv), (1e-2,), (None,)
    )
    assert a["scores"] == b["scores"]


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda t, v: select_knn(t, v, ks=()), "ks needs at least one candidate"),
        (
            lambda t, v: select_linear_probe(t, v, weight_decays=()),
            "weight_decays needs at least one",
        ),
        (
            lambda t, v: select_linear_probe(t, v, class_weights=()),
            "class_weights needs at least one",
        ),
        (
            lambda t, v: select_linear_probe(
                _features(t.features, torch.full_like(t.targets, -1)), v
            ),
            "no labelled sample",
        ),
    ],
)
def test_bad_input(call, match: str) -> None:
    x, y = _data(10, 2, 2, seed=0)
    with pytest.raises(ValueError, match=match):
        call(_features(x, y), _features(x, y))
