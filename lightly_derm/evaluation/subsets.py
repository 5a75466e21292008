"""Low-label subsets: a stratified fraction of the labelled samples, nested across fractions.

Builds on :class:`numpy.random.Generator`. The low-label protocol of SSL papers
(SimCLR's 1 % / 10 % ImageNet subsets) with the class balance kept, which matters on
imbalanced dermatology data where a plain random 1 % may miss a class entirely.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def stratified_subset(
    targets: Any,
    fraction: float,
    seed: int = 0,
    min_per_class: int = 1,
) -> np.ndarray:
    """Indices of a stratified random ``fraction`` of the labelled samples.

    From every class ``c`` with ``n_c`` samples, ``max(min_per_class, round(fraction ·
    n_c))`` samples are taken (at most ``n_c``). Each class is shuffled once per
    ``seed``, independently of ``fraction``, and the subset takes a prefix, so subsets of
    one seed are nested: the 1 % subset lies inside the 10 % subset. Unlabelled samples
    (target ``-1``) are never chosen.

    Args:
        targets: (N,) integer targets (``dataset.targets``), ``-1`` = unlabelled.
        fraction: In (0, 1]; 1 selects every labelled sample.
        seed: Random seed.
        min_per_class: The least number of samples of each class (≥ 1).

    Returns:
        Sorted int64 indices into ``targets``.

    Raises:
        ValueError: ``fraction`` is outside (0, 1], ``min_per_class`` < 1, ``targets``
            is not 1-D integers, or no sample is labelled.

    Example:
        >>> targets = [0] * 90 + [1] * 10
        >>> subset = stratified_subset(targets, 0.1, seed=0)
        >>> len(subset), sorted({targets[i] for i in subset})
        (10, [0, 1])
        >>> set(subset) <= set(stratified_subset(targets, 0.5, seed=0))
        True
    """
    array = np.asarray(targets)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"targets must be a 1-D integer array, got {array.dtype} of shape {array.shape}"
        )
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if min_per_class < 1:
        raise ValueError(f"min_per_class must be ≥ 1, got {min_per_class}")
    classes = np.unique(array[array >= 0])
    if classes.size == 0:
        raise ValueError("no labelled sample (all targets are -1)")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes.tolist():
        members = np.flatnonzero(array == c)
        order = rng.permutation(members)
        count = min(
            members.size,
            max(min_per_class, int(np.floor(fraction * members.size + 0.5))),
        )
        chosen.append(order[:count])
    return np.sort(np.concatenate(chosen)).astype(np.int64)
