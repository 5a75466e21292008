"""Validation-selected settings of the frozen-feature protocols: kNN k, probe L2 and class weights.

SSL papers fix the kNN's k and the linear probe's regularisation, or tune them on the
test split. Here they are chosen on a validation split and only then scored on test:
:func:`select_knn` tries each k of :func:`~lightly_derm.evaluation.knn_evaluate`,
:func:`select_linear_probe` each weight decay and class weighting of
:class:`~lightly_derm.evaluation.LinearProbe` (``class_weight="balanced"`` is
scikit-learn's class-balanced loss), and both keep the setting with the best validation
score. On imbalanced data such as DermaMNIST (two thirds naevi) plain accuracy rewards
predicting the majority class, so the criterion can be class-balanced:
``"balanced_accuracy"`` or ``"mean"`` (the mean of accuracy and balanced accuracy, the
default). Ties go to the first candidate in the order given.

Example:
    >>> import torch
    >>> from lightly_derm.evaluation import Features, select_knn
    >>> x = torch.cat([torch.randn(30, 4) + 3, torch.randn(30, 4) - 3])
    >>> y = torch.arange(60) // 30
    >>> train = Features(x[::2], y[::2], [""] * 30)
    >>> val = Features(x[1::2], y[1::2], [""] * 30)
    >>> select_knn(train, val, ks=(1, 5))["knn_k"]
    1
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from lightly_derm.evaluation.features import Features
from lightly_derm.evaluation.knn import knn_evaluate
from lightly_derm.evaluation.linear_probe import LinearProbe
from lightly_derm.evaluation.metrics import classification_metrics

SelectionMetric = Literal["accuracy", "balanced_accuracy", "mean"]
#: The selection criteria.
SELECTION_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "mean")


def selection_score(
    metrics: Mapping[str, Any], prefix: str = "", metric: SelectionMetric = "mean"
) -> float:
    """The criterion of ``metrics`` (keys ``<prefix>accuracy``, ``<prefix>balanced_accuracy``).

    Raises:
        ValueError: An unknown ``metric``.

    Example:
        >>> selection_score({"accuracy": 0.8, "balanced_accuracy": 0.4})
        0.6000000000000001
    """
    if metric not in SELECTION_METRICS:
        raise ValueError(
            f"selection metric must be one of {', '.join(SELECTION_METRICS)}, got "
            f"{metric!r}"
        )
    accuracy = float(metrics[f"{prefix}accuracy"])
    balanced = float(metrics[f"{prefix}balanced_accuracy"])
    if metric == "accuracy":
        return accuracy
    if metric == "balanced_accuracy":
        return balanced
    return 0.5 * (accuracy + balanced)


def _check_candidates(name: str, values: Sequence[Any]) -> list[Any]:
    values = list(values)
    if not values:
        raise ValueError(f"{name} needs at least one candidate")
    return values


def select_knn(
    train: Features,
    val: Features,
    ks: Sequence[int] = (10, 20, 50, 100),
    num_classes: int | None = None,
    temperature: float = 0.1,
    metric: SelectionMetric = "mean",
) -> dict[str, Any]:
    """The k of :func:`~lightly_derm.evaluation.knn_evaluate` with the best validation score.

    Args:
        train: The labelled bank.
        val: Validation features (all labelled).
        ks: Candidate neighbour counts.
        num_classes: C; default from the targets.
        temperature: The kNN temperature.
        metric: The criterion (see :func:`selection_score`).

    Returns:
        ``{"knn_k": best k, "metric": metric, "scores": {k: validation score}}``.
    """
    ks = _check_candidates("ks", ks)
    scores: dict[int, float] = {}
    for k in ks:
        result = knn_evaluate(
            train, val, num_classes, k=int(k), temperature=temperature
        )
        scores[int(k)] = selection_score(result, "knn_", metric)
    best = max(scores, key=lambda k: (scores[k], -ks.index(k)))
    return {"knn_k": best, "metric": metric, "scores": scores}


def select_linear_probe(
    train: Features,
    val: Features,
    weight_decays: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
    class_weights: Sequence[Literal["balanced"] | None] = (None, "balanced"),
    num_classes: int | None = None,
    metric: SelectionMetric = "mean",
    max_iter: int = 500,
) -> dict[str, Any]:
    """The :class:`~lightly_derm.evaluation.LinearProbe` settings with the best validation score.

    Every pair of weight decay and class weighting is fitted on ``train`` (labelled
    samples) and scored on ``val``.

    Returns:
        ``{"linear_weight_decay", "linear_class_weight", "metric", "scores"}`` where
        ``scores`` maps ``"<weight decay>/<class weight>"`` to the validation score.
    """
    weight_decays = _check_candidates("weight_decays", weight_decays)
    class_weights = _check_candidates("class_weights", class_weights)
    bank = train.labelled()
    if bank.targets.numel() == 0:
        raise ValueError("the training features have no labelled sample")
    if num_classes is None:
        num_classes = int(max(int(bank.targets.max()), int(val.targets.max()))) + 1
    scores: dict[str, float] = {}
    best: tuple[float, float, str | None] | None = None
    for weight_decay in weight_decays:
        for class_weight in class_weights:
            probe = LinearProbe(
                float(weight_decay), max_iter=max_iter, class_weight=class_weight
            )
            probe.fit(bank.features, bank.targets, num_classes)
            metrics = classification_metrics(
                probe.predict_proba(val.features).cpu(), val.targets, prefix="linear_"
            )
            score = selection_score(metrics, "linear_", metric)
            scores[f"{float(weight_decay):g}/{class_weight}"] = score
            if best is None or score > best[0]:
                best = (score, float(weight_decay), class_weight)
    assert best is not None
    return {
        "linear_weight_decay": best[1],
        "linear_class_weight": best[2],
        "metric": metric,
        "scores": scores,
    }


__all__ = [
    "SELECTION_METRICS",
    "SelectionMetric",
    "select_knn",
    "select_linear_probe",
    "selection_score",
]
