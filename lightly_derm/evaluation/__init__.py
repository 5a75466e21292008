"""Evaluation of pretrained backbones: features, kNN, linear probe, low-label fine-tuning."""

from lightly_derm.evaluation.confusion import (
    confusion_matrix,
    confusion_report,
    per_class_recall,
    plot_confusion_matrix,
)
from lightly_derm.evaluation.features import Features, extract_features
from lightly_derm.evaluation.finetune import finetune_evaluate
from lightly_derm.evaluation.knn import knn_evaluate, knn_scores
from lightly_derm.evaluation.linear_probe import LinearProbe, linear_probe_evaluate
from lightly_derm.evaluation.metrics import (
    accuracy,
    balanced_accuracy,
    binary_auc,
    classification_metrics,
    require_two_classes,
)
from lightly_derm.evaluation.selection import (
    SELECTION_METRICS,
    select_knn,
    select_linear_probe,
    selection_score,
)
from lightly_derm.evaluation.subsets import stratified_subset

__all__ = [
    "SELECTION_METRICS",
    "Features",
    "LinearProbe",
    "accuracy",
    "balanced_accuracy",
    "binary_auc",
    "classification_metrics",
    "confusion_matrix",
    "confusion_report",
    "extract_features",
    "finetune_evaluate",
    "knn_evaluate",
    "knn_scores",
    "linear_probe_evaluate",
    "per_class_recall",
    "plot_confusion_matrix",
    "require_two_classes",
    "select_knn",
    "select_linear_probe",
    "selection_score",
    "stratified_subset",
]
