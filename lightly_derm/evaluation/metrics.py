"""Classification metrics: accuracy, balanced accuracy, binary ROC AUC.

Plain vectorised torch; no dependency beyond torch. Definitions follow scikit-learn's
``accuracy_score``, ``balanced_accuracy_score`` (mean recall over the classes present in
the targets) and ``roc_auc_score`` (ties get half credit, i.e. the Mann–Whitney U
statistic with average ranks), so numbers compare with papers that report those.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightly_derm.errors import DataError


def _as_labels(values: Any, name: str) -> Tensor:
    tensor = torch.as_tensor(
        np.asarray(values) if not isinstance(values, Tensor) else values
    )
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError(f"{name} is empty")
    if tensor.is_floating_point():
        raise TypeError(f"{name} must hold integer class indices, got {tensor.dtype}")
    return tensor.long().cpu()


def _check_targets(targets: Tensor, name: str = "targets") -> None:
    if (targets < 0).any():
        raise ValueError(
            f"{name} hold {int((targets < 0).sum())} negative (unlabelled) entries; "
            "evaluate on labelled samples only"
        )


def require_two_classes(
    targets: Any, what: str = "the training labels", classes: Any = None
) -> None:
    """Refuses an evaluation task whose labelled ``targets`` hold fewer than 2 classes.

    With one class, every classifier — kNN, a linear probe, a fine-tuned head — may
    predict it always and score an accuracy of 1.0 that says nothing (``--task
    melanoma`` on data without melanoma, say); there is nothing to evaluate.
    Unlabelled entries (``-1``) are ignored.

    Args:
        targets: (N,) class indices, ``-1`` = unlabelled.
        what: How to name them in the message.
        classes: The class names, to name the class present.

    Raises:
        DataError: (a ``ValueError``) Fewer than two classes; the message says which
            class is present and why the metrics would be undefined.

    Example:
        >>> require_two_classes([0, 1, -1, 1])
        >>> require_two_classes([0, 0, -1], classes=["not_melanoma", "melanoma"])
        Traceback (most recent call last):
            ...
        lightly_derm.errors.DataError: the training labels hold one class only (2 labelled samples, all class 0 'not_melanoma'): accuracy, balanced accuracy and AUC are undefined (a classifier that always answers that class scores 1.0); give labels with at least two classes (or another --task)
    """
    labels = np.asarray(targets.cpu() if isinstance(targets, Tensor) else targets)
    labelled = labels[labels >= 0]
    present = np.unique(labelled)
    if present.size >= 2:
        return
    if present.size == 0:
        raise DataError(f"{what} hold no labelled sample: there is nothing to evaluate")
    only = int(present[0])
    name = ""
    if classes is not None and 0 <= only < len(classes):
        name = f" {classes[only]!r}"
    raise DataError(
        f"{what} hold one class only ({labelled.size} labelled samples, all class "
        f"{only}{name}): accuracy, balanced accuracy and AUC are undefined (a "
        "classifier that always answers that class scores 1.0); give labels with at "
        "least two classes (or another --task)"
    )


def accuracy(predictions: Any, targets: Any) -> float:
    """The fraction of ``predictions`` equal to ``targets`` (both (N,) class indices).

    Example:
        >>> accuracy([0, 1, 1, 2], [0, 1, 2, 2])
        0.75
    """
    preds = _as_labels(predictions, "predictions")
    target = _as_labels(targets, "targets")
    if preds.shape != target.shape:
        raise ValueError(
            f"predictions {tuple(preds.shape)} and targets {tuple(target.shape)} differ in shape"
        )
    return float((preds == target).double().mean())


def balanced_accuracy(predictions: Any, targets: Any) -> float:
    """The mean per-class recall over the classes present in ``targets``.

    Equals :func:`accuracy` on balanced data; on imbalanced data (ISIC: 2/3 nevi) it
    does not reward predicting the majority class.

    Example:
        >>> balanced_accuracy([0, 0, 0, 0], [0, 0, 0, 1])  # accuracy would be 0.75
        0.5
    """
    preds = _as_labels(predictions, "predictions")
    target = _as_labels(targets, "targets")
    if preds.shape != target.shape:
        raise ValueError(
            f"predictions {tuple(preds.shape)} and targets {tuple(target.shape)} differ in shape"
        )
    _check_targets(target)
    size = int(max(int(target.max()), int(preds.max())) + 1)
    support = torch.bincount(target, minlength=size).double()
    hits = torch.bincount(target[preds == target], minlength=size).double()
    present = support > 0
    return float((hits[present] / support[present]).mean())


def binary_auc(scores: Any, targets: Any) -> float:
    """The area under the ROC curve of ``scores`` (higher = positive) for 0/1 ``targets``.

    Computed as the Mann–Whitney U statistic with average ranks: the probability that a
    random positive scores higher than a random negative, ties counting one half.

    Raises:
        ValueError: ``targets`` are not all 0/1, or hold only one class (AUC undefined).

    Example:
        >>> binary_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        0.75
    """
    score = (
        torch.as_tensor(
            np.asarray(scores) if not isinstance(scores, Tensor) else scores
        )
        .double()
        .cpu()
    )
    target = _as_labels(targets, "targets")
    if score.shape != target.shape:
        raise ValueError(
            f"scores {tuple(score.shape)} and targets {tuple(target.shape)} differ in shape"
        )
    if not bool(((target == 0) | (target == 1)).all()):
        raise ValueError("binary_auc needs targets in {0, 1}")
    positives = int(target.sum())
    negatives = target.numel() - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUC is undefined when the targets hold only one class")
    order = torch.argsort(score)
    sorted_scores = score[order]
    # average rank (1-based) of each tie group
    _, inverse, counts = torch.unique_consecutive(
        sorted_scores, return_inverse=True, return_counts=True
    )
    ends = torch.cumsum(counts, 0).double()
    average_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(score)
    ranks[order] = average_rank[inverse]
    rank_sum = float(ranks[target == 1].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def classification_metrics(
    probabilities: Tensor, targets: Any, prefix: str = ""
) -> dict[str, Any]:
    """Accuracy, balanced accuracy and (binary tasks) AUC from class scores.

    Args:
        probabilities: (N, C) class probabilities or scores; the prediction is the
            argmax, the AUC uses column 1 when C = 2.
        targets: (N,) class indices in ``[0, C)``.
        prefix: Prepended to every key (``"knn_"`` → ``"knn_accuracy"``).

    Returns:
        ``{"accuracy", "balanced_accuracy", "auc", "num_samples"}`` with ``auc`` only
        for C = 2, ``None`` when the targets hold one class.

    Raises:
        ValueError: Shapes disagree, targets are negative (unlabelled) or out of range.
    """
    probs = torch.as_tensor(probabilities)
    target = _as_labels(targets, "targets")
    if probs.ndim != 2 or probs.shape[0] != target.shape[0]:
        raise ValueError(
            f"probabilities must be (N, C) with N = {target.shape[0]}, got {tuple(probs.shape)}"
        )
    _check_targets(target)
    if int(target.max()) >= probs.shape[1]:
        raise ValueError(
            f"a target is {int(target.max())} but there are only {probs.shape[1]} classes"
        )
    preds = probs.argmax(dim=1).cpu()
    result: dict[str, Any] = {
        f"{prefix}accuracy": accuracy(preds, target),
        f"{prefix}balanced_accuracy": balanced_accuracy(preds, target),
    }
    if probs.shape[1] == 2:
        both = bool((target == 0).any() and (target == 1).any())
        result[f"{prefix}auc"] = binary_auc(probs[:, 1], target) if both else None
    result[f"{prefix}num_samples"] = int(target.numel())
    return result
