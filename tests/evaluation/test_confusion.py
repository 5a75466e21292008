from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightly_derm.evaluation import (
    balanced_accuracy,
    confusion_matrix,
    confusion_report,
    per_class_recall,
    plot_confusion_matrix,
)


def _loop_confusion(preds: list[int], targets: list[int], c: int) -> list[list[int]]:
    matrix = [[0] * c for _ in range(c)]
    for p, t in zip(preds, targets, strict=True):
        matrix[t][p] += 1
    return matrix


def _loop_recall(preds: list[int], targets: list[int], c: int) -> list[float]:
    out = []
    for k in range(c):
        rows = [p for p, t in zip(preds, targets, strict=True) if t == k]
        out.append(sum(p == k for p in rows) / len(rows) if rows else math.nan)
    return out


@pytest.mark.parametrize("n,c", [(1, 1), (7, 3), (200, 7), (50, 2)])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_loop_reference(n: int, c: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, c, n).tolist()
    preds = rng.integers(0, c, n).tolist()
    matrix = confusion_matrix(preds, targets, num_classes=c)
    assert matrix.dtype == torch.int64
    assert matrix.tolist() == _loop_confusion(preds, targets, c)
    recall = per_class_recall(matrix).tolist()
    for got, want in zip(recall, _loop_recall(preds, targets, c), strict=True):
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)
    report = confusion_report(preds, targets, num_classes=c)
    assert report["balanced_accuracy"] == pytest.approx(
        balanced_accuracy(preds, targets)
    )
    assert report["support"] == {str(k): targets.count(k) for k in range(c)}


def test_matches_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    targets, preds = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    np.testing.assert_array_equal(
        confusion_matrix(preds, targets, 5).numpy(),
        metrics.confusion_matrix(targets, preds, labels=range(5)),
    )


def test_report_flags_empty_classes_and_collapse() -> None:
    report = confusion_report(
        torch.tensor([0, 0, 0, 0]),
        torch.tensor([0, 0, 0, 1]),
        class_names=["nevus", "melanoma", "seborrheic keratosis"],
    )
    assert report["matrix"] == [[3, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert report["recall"] == {
        "nevus": 1.0,
        "melanoma": 0.0,
        "seborrheic keratosis": None,
    }
    assert report["empty_classes"] == ["seborrheic keratosis"]
    assert report["predicted_classes"] == 1
    assert report["balanced_accuracy"] == 0.5
    import json

    json.dumps(report, allow_nan=False)  # JSON-ready: no NaN


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix([0, 1], [0])
    with pytest.raises(
        ValueError, match="num_classes=2 but predictions/targets hold class 2"
    ):
        confusion_matrix([0, 2], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="targets hold 1 negative"):
        confusion_matrix([0, 1], [0, -1])
    with pytest.raises(TypeError, match="integer class indices"):
        confusion_matrix([0.0, 1.0], [0, 1])
    with pytest.raises(ValueError, match="class_names has 2 names for a 3-class"):
        confusion_report([0, 1, 2], [0, 1, 2], class_names=["a", "b"], num_classes=3)
    with pytest.raises(ValueError, match="matrix must be square"):
        per_class_recall(torch.zeros(2, 3))


def test_plot_labels_recall_and_saves(tmp_path) -> None:
    from PIL import Image

    matrix = torch.tensor([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    path = tmp_path / "plots" / "confusion.png"
    figure = plot_confusion_matrix(
        matrix, ["nevus", "melanoma", "sk"], title="gravis, kNN", path=path
    )
    axis = figure.axes[0]
    assert axis.get_title() == "gravis, kNN\nbalanced accuracy 0.775"
    rows = [t.get_text() for t in axis.get_yticklabels()]
    assert rows == [
        "nevus\nrecall 0.80 (n=10)",
        "melanoma\nrecall 0.75 (n=4)",
        "sk\nno samples",
    ]
    cells = {t.get_text() for t in axis.texts}
    assert "8\n80%" in cells and "3\n75%" in cells
    width, height = Image.open(path).size
    assert width >= 500 and height >= 400
