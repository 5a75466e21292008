"""Confusion matrix and per-class recall of a classifier, as numbers and as a figure.

The matrix follows scikit-learn's ``confusion_matrix`` convention (rows: true classes,
columns: predicted classes), computed with one :func:`torch.bincount`; the recall of a
class is its diagonal entry over its row sum, and the mean of the recalls over the
classes with samples is the balanced accuracy of
:func:`~lightly_derm.evaluation.balanced_accuracy`. :func:`confusion_report` gives the
JSON-ready summary (with the classes that have no sample and whether the classifier
predicted a single class), :func:`plot_confusion_matrix` the figure, on matplotlib's
object-oriented API (no pyplot state, safe in threads and without a display).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightly_derm.evaluation.metrics import _as_labels, _check_targets
from lightly_derm.utils.validation import check_int

__all__ = [
    "confusion_matrix",
    "confusion_report",
    "per_class_recall",
    "plot_confusion_matrix",
]


def confusion_matrix(
    predictions: Any, targets: Any, num_classes: int | None = None
) -> Tensor:
    """The (C, C) confusion matrix: entry [t, p] counts samples of class t predicted p.

    Args:
        predictions: Predicted class indices (N,).
        targets: True class indices (N,), none negative.
        num_classes: C; default one more than the largest index seen.

    Returns:
        An int64 tensor (C, C), rows true classes, columns predicted classes.

    Raises:
        ValueError: Shapes differ, an index is negative or not below ``num_classes``.

    Example:
        >>> from lightly_derm.evaluation import confusion_matrix
        >>> confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2]).tolist()
        [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    """
    preds = _as_labels(predictions, "predictions")
    target = _as_labels(targets, "targets")
    if preds.shape != target.shape:
        raise ValueError(
            f"predictions {tuple(preds.shape)} and targets {tuple(target.shape)} differ in shape"
        )
    _check_targets(target)
    _check_targets(preds, "predictions")
    largest = int(torch.maximum(preds.max(), target.max()))
    if num_classes is None:
        num_classes = largest + 1
    elif check_int("num_classes", num_classes) <= largest:
        raise ValueError(
            f"num_classes={num_classes} but predictions/targets hold class {largest}"
        )
    counts = torch.bincount(target * num_classes + preds, minlength=num_classes**2)
    return counts.view(num_classes, num_classes)


def per_class_recall(matrix: Tensor) -> Tensor:
    """Recall of every class: the diagonal over the row sums; NaN for a class without samples.

    Example:
        >>> import torch
        >>> from lightly_derm.evaluation import per_class_recall
        >>> per_class_recall(torch.tensor([[3, 1], [0, 0]])).tolist()
        [0.75, nan]
    """
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(
            f"matrix must be square (C, C), got shape {tuple(matrix.shape)}"
        )
    m = matrix.double()
    support = m.sum(1)
    return torch.where(
        support > 0,
        m.diagonal() / support.clamp_min(1),
        torch.full_like(support, math.nan),
    )


def _names(class_names: Sequence[str] | None, count: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(count)]
    names = [str(n) for n in class_names]
    if len(names) != count:
        raise ValueError(
            f"class_names has {len(names)} names for a {count}-class confusion matrix"
        )
    return names


def confusion_report(
    predictions: Any,
    targets: Any,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """The confusion matrix, per-class recall and warnings as a JSON-ready dict.

    Args:
        predictions: Predicted class indices (N,).
        targets: True class indices (N,).
        class_names: One name per class (default ``"0"``, ``"1"``, …); sets
            ``num_classes`` when that is not given.
        num_classes: C; default ``len(class_names)``, else from the indices.

    Returns:
        ``classes`` (names), ``matrix`` (rows true, columns predicted; lists of ints),
        ``recall`` and ``support`` (per class name; recall ``None`` for a class
        without samples), ``balanced_accuracy`` (mean recall over the classes with
        samples), ``empty_classes`` (names of the classes without samples) and
        ``predicted_classes`` (how many classes were predicted at all: 1 means the
        classifier collapsed to a single class).

    Example:
        >>> from lightly_derm.evaluation import confusion_report
        >>> report = confusion_report([0, 0, 0, 0], [0, 0, 1, 1], ["nevus", "melanoma", "sk"])
        >>> report["recall"], report["empty_classes"], report["predicted_classes"]
        ({'nevus': 1.0, 'melanoma': 0.0, 'sk': None}, ['sk'], 1)
    """
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    matrix = confusion_matrix(predictions, targets, num_classes)
    names = _names(class_names, matrix.shape[0])
    recall = per_class_recall(matrix)
    support = matrix.sum(1)
    present = support > 0
    return {
        "classes": names,
        "matrix": matrix.tolist(),
        "recall": {
            n: (None if math.isnan(r) else float(r))
            for n, r in zip(names, recall.tolist(), strict=True)
        },
        "support": {n: int(s) for n, s in zip(names, support.tolist(), strict=True)},
        "balanced_accuracy": float(recall[present].mean()),
        "empty_classes": [
            n for n, p in zip(names, present.tolist(), strict=True) if not p
        ],
        "predicted_classes": int((matrix.sum(0) > 0).sum()),
    }


def plot_confusion_matrix(
    matrix: Tensor | Sequence[Sequence[int]],
    class_names: Sequence[str] | None = None,
    title: str = "",
    path: str | Path | None = None,
) -> Any:
    """Draws a confusion matrix with each class's recall and sample count.

    Cells are coloured by the row-normalised fraction (the recall on the diagonal) and
    show the count and that fraction; each row's label gives the class, its recall and
    its number of samples ("no samples" for an empty class), and the title the
    balanced accuracy.

    Args:
        matrix: (C, C) counts, rows true classes, columns predicted
            (:func:`confusion_matrix`, or ``confusion_report(...)["matrix"]``).
        class_names: One name per class (default ``"0"``, ``"1"``, …).
        title: A first title line, e.g. the method, backbone and protocol.
        path: Where to save a PNG (parent folders are created); ``None``: not saved.

    Returns:
        The :class:`matplotlib.figure.Figure`.

    Example:
        >>> import torch
        >>> from lightly_derm.evaluation import plot_confusion_matrix
        >>> figure = plot_confusion_matrix(torch.tensor([[5, 1], [2, 2]]), ["nevus", "melanoma"])
        >>> figure.axes[0].get_title().splitlines()[-1]
        'balanced accuracy 0.667'
    """
    from matplotlib.figure import Figure

    counts = torch.as_tensor(matrix).long()
    recall = per_class_recall(counts)
    names = _names(class_names, counts.shape[0])
    support = counts.sum(1)
    fractions = counts.double() / support.clamp_min(1).double().unsqueeze(1)
    size = max(4.0, 0.9 * len(names) + 2.5)
    figure = Figure(figsize=(size + 1.0, size), layout="constrained")
    axis = figure.add_subplot()
    shown = axis.imshow(fractions.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(shown, ax=axis, label="fraction of the true class", shrink=0.8)
    for t in range(len(names)):
        for p in range(len(names)):
            value = float(fractions[t, p])
            axis.text(
                p,
                t,
                f"{int(counts[t, p])}\n{value:.0%}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if value > 0.6 else "black",
            )
    rows = [
        f"{n}\nrecall {float(r):.2f} (n={int(s)})" if s > 0 else f"{n}\nno samples"
        for n, r, s in zip(names, recall, support, strict=True)
    ]
    axis.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    axis.set_yticks(range(len(names)), rows, fontsize=8)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    present = support > 0
    balanced = float(recall[present].mean()) if bool(present.any()) else math.nan
    axis.set_title(
        "\n".join(
            line for line in (title, f"balanced accuracy {balanced:.3f}") if line
        ),
        fontsize=10,
    )
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
    return figure
