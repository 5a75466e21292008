from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lightly_derm.evaluation import stratified_subset


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.37, 1.0])
def test_per_class_counts(fraction: float) -> None:
    targets = np.array([0] * 500 + [1] * 60 + [2] * 7 + [-1] * 40)
    np.random.default_rng(0).shuffle(targets)
    subset = stratified_subset(targets, fraction, seed=3)
    counts = Counter(targets[subset].tolist())
    for c, n in ((0, 500), (1, 60), (2, 7)):
        expected = min(n, max(1, int(np.floor(fraction * n + 0.5))))
        assert counts[c] == expected
    assert -1 not in counts
    assert np.all(np.diff(subset) > 0) and subset.dtype == np.int64


def test_nested_across_fractions_and_seeded() -> None:
    targets = np.arange(1000) % 5
    previous: set[int] = set()
    for fraction in (0.01, 0.1, 0.5, 1.0):
        current = set(stratified_subset(targets, fraction, seed=1).tolist())
        assert previous <= current
        previous = current
    assert previous == set(range(1000))
    a = stratified_subset(targets, 0.1, seed=1)
    assert np.array_equal(a, stratified_subset(targets, 0.1, seed=1))
    assert not np.array_equal(a, stratified_subset(targets, 0.1, seed=2))


def test_min_per_class() -> None:
    targets = np.array([0] * 100 + [1] * 3)
    subset = stratified_subset(targets, 0.01, min_per_class=2)
    assert Counter(targets[subset].tolist()) == {0: 2, 1: 2}


@pytest.mark.parametrize(
    "args,match",
    [
        (([0, 1], 0.0), "fraction"),
        (([0, 1], 1.5), "fraction"),
        (([-1, -1], 0.5), "no labelled"),
        (([0.0, 1.0], 0.5), "integer"),
        (([[0, 1]], 0.5), "1-D"),
    ],
)
def test_bad_input(args, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        stratified_subset(*args)
    with pytest.raises(ValueError, match="min_per_class"):
        stratified_subset([0, 1], 0.5, min_per_class=0)
