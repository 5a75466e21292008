from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightly_derm.evaluation import Features, LinearProbe, linear_probe_evaluate


def _data(n: int, d: int, c: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = torch.randn(n, d, generator=gen) * 2 + 3 * torch.randn(c, d, generator=gen)[y]
    x = x * torch.linspace(0.5, 20, d)  # unequal scales: standardisation matters
    return x, y


def _loop_gradient(probe: LinearProbe, x, y, c, lam, sample_weight):
    """float64 loops: gradient of Σ w_i CE_i / Σ w + λ/2 ||W||² at the fitted (W, b)."""
    xs = ((x.double() - probe.mean.double()) / probe.std.double()).numpy()
    w = probe.weight.double().numpy()
    b = probe.bias.double().numpy()
    n, d = xs.shape
    total = sum(sample_weight)
    grad_w = lam * w.copy()
    grad_b = np.zeros(c)
    for i in range(n):
        logits = [sum(w[k, j] * xs[i, j] for j in range(d)) + b[k] for k in range(c)]
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        z = sum(exps)
        for k in range(c):
            residual = exps[k] / z - (1.0 if int(y[i]) == k else 0.0)
            grad_b[k] += sample_weight[i] / total * residual
            for j in range(d):
                grad_w[k, j] += sample_weight[i] / total * residual * xs[i, j]
    return grad_w, grad_b


@pytest.mark.parametrize(
    "n,d,c,lam,balanced",
    [(30, 4, 2, 1e-2, False), (45, 6, 3, 1e-3, False), (40, 5, 4, 5e-2, True)],
)
def test_optimality_against_loop_gradient(n, d, c, lam, balanced) -> None:
    x, y = _data(n, d, c, seed=n)
    if balanced:
        y[: n // 2] = 0  # imbalance
    probe = LinearProbe(weight_decay=lam, class_weight="balanced" if balanced else None)
    probe.fit(x, y, num_classes=c)
    counts = torch.bincount(y, minlength=c).tolist()
    weights = [n / (c * counts[int(t)]) if balanced else 1.0 for t in y]
    grad_w, grad_b = _loop_gradient(probe, x, y, c, lam, weights)
    assert np.abs(grad_w).max() < 1e-4 and np.abs(grad_b).max() < 1e-4
    assert probe.converged


def test_matches_scikit_learn() -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    x, y = _data(90, 5, 3, seed=7)
    lam = 1e-2
    probe = LinearProbe(weight_decay=lam).fit(x, y)
    xs = preprocessing.StandardScaler().fit_transform(x.double().numpy())
    # sklearn minimises C Σ CE + ½||W||²; ours is (1/N) Σ CE + λ/2 ||W||²  ⇒  C = 1/(Nλ)
    reference = linear_model.LogisticRegression(
        C=1 / (90 * lam), tol=1e-10, max_iter=10000
    )
    reference.fit(xs, y.numpy())
    expected = reference.predict_proba(
        preprocessing.StandardScaler()
        .fit(x.double().numpy())
        .transform(x.double().numpy())
    )
    np.testing.assert_allclose(
        probe.predict_proba(x).double().numpy(), expected, atol=2e-4
    )


def test_deterministic_and_predicts() -> None:
    x, y = _data(60, 8, 3, seed=1)
    a, b = (
        LinearProbe(weight_decay=1e-2).fit(x, y),
        LinearProbe(weight_decay=1e-2).fit(x, y),
    )
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert (a.predict(x) == y).float().mean() > 0.9
    torch.testing.assert_close(a.predict_proba(x).sum(1), torch.ones(60))


def test_linear_probe_evaluate() -> None:
    x, y = _data(80, 6, 2, seed=3)
    train = Features(
        torch.cat([x[:60], torch.randn(3, 6)]),
        torch.cat([y[:60], torch.full((3,), -1)]),
        [None] * 63,
    )
    test = Features(x[60:], y[60:], [None] * 20)
    result = linear_probe_evaluate(train, test)
    assert set(result) >= {
        "linear_accuracy",
        "linear_balanced_accuracy",
        "linear_auc",
        "linear_converged",
    }
    assert result["linear_accuracy"] > 0.8 and result["linear_num_samples"] == 20


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: LinearProbe(weight_decay=-1), ValueError, "weight_decay"),
        (lambda: LinearProbe(class_weight="auto"), ValueError, "class_weight"),
        (
            lambda: LinearProbe().fit(torch.rand(4, 3), torch.tensor([0, 1, -1, 0])),
            ValueError,
            "unlabelled",
        ),
        (
            lambda: LinearProbe().fit(torch.rand(4, 3), torch.tensor([0, 1, 0])),
            ValueError,
            r"\(N,\)",
        ),
        (lambda: LinearProbe().predict(torch.rand(4, 3)), RuntimeError, "fit"),
        (
            lambda: (
                LinearProbe()
                .fit(torch.rand(4, 3), torch.tensor([0, 1, 0, 1]))
                .predict(torch.rand(2, 5))
            ),
            ValueError,
            r"\(N, 3\)",
        ),
    ],
)
def test_bad_input(call, exc, match: str) -> None:
    with pytest.raises(exc, match=match):
        call()
