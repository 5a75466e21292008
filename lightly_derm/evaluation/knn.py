"""Weighted k-nearest-neighbour classification of frozen features.

The classifier of lightly's :func:`lightly.utils.benchmarking.knn_predict` (Wu et al.,
"Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018):
cosine similarity to a bank of training features, the k most similar vote for their
class with weight ``exp(similarity / temperature)``. lightly's function returns only the
class ranking; the AUC needs the vote scores, so :func:`knn_scores` computes the same
vote and returns it normalised to sum to one per sample (the ranking is lightly's). It
also works in query chunks (memory (chunk, N) instead of (B, N)) and subtracts each row's
largest similarity before ``exp``, so small temperatures do not overflow.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightly_derm.evaluation.features import Features
from lightly_derm.evaluation.metrics import classification_metrics, require_two_classes


def knn_scores(
    query: Tensor,
    bank: Tensor,
    bank_targets: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> Tensor:
    """Class vote scores of ``query`` features from their k nearest ``bank`` features.

    Args:
        query: (B, D) features to classify.
        bank: (N, D) features of the labelled samples.
        bank_targets: (N,) their class indices in ``[0, num_classes)``.
        num_classes: C.
        k: Neighbours per query (at most N; fewer bank samples use all of them).
        temperature: Softness of the similarity weighting.
        chunk_size: Queries per similarity block.

    Returns:
        (B, C) float32 scores, each row summing to 1.

    Raises:
        ValueError: Shapes disagree, ``k``/``temperature`` are not positive, or a bank
            target is outside ``[0, num_classes)``.

    Example:
        >>> import torch
        >>> bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> scores = knn_scores(torch.tensor([[1.0, 0.05]]), bank, torch.tensor([0, 0, 1]), 2, k=2)
        >>> scores.argmax(1).tolist()
        [0]
    """
    if query.ndim != 2 or bank.ndim != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(
            f"query (B, D) and bank (N, D) must share D, got {tuple(query.shape)} and "
            f"{tuple(bank.shape)}"
        )
    if bank_targets.shape != bank.shape[:1]:
        raise ValueError(
            f"bank_targets must be (N,) = ({bank.shape[0]},), got {tuple(bank_targets.shape)}"
        )
    if k < 1 or not temperature > 0:
        raise ValueError(
            f"k and temperature must be positive, got k={k}, temperature={temperature}"
        )
    if bank.shape[0] == 0:
        raise ValueError("the feature bank is empty")
    targets = bank_targets.long().to(bank.device)
    if int(targets.min()) < 0 or int(targets.max()) >= num_classes:
        raise ValueError(
            f"bank_targets must lie in [0, {num_classes}), got {int(targets.min())}..{int(targets.max())}"
        )
    k = min(k, bank.shape[0])
    bank_n = F.normalize(bank.float(), dim=1)
    out = []
    for start in range(0, query.shape[0], chunk_size):
        q = F.normalize(
            query[start : start + chunk_size].float().to(bank.device), dim=1
        )
        similarity = q @ bank_n.T  # (b, N)
        top_sim, top_idx = similarity.topk(k, dim=1)
        weights = torch.exp((top_sim - top_sim[:, :1]) / temperature)
        scores = torch.zeros(q.shape[0], num_classes, device=bank.device)
        scores.scatter_add_(1, targets[top_idx], weights)
        out.append(scores / scores.sum(dim=1, keepdim=True))
    return torch.cat(out) if out else torch.zeros(0, num_classes)


def knn_evaluate(
    train: Features,
    test: Features,
    num_classes: int | None = None,
    k: int = 20,
    temperature: float = 0.1,
) -> dict[str, Any]:
    """The kNN accuracy, balanced accuracy and (binary) AUC of ``test`` against ``train``.

    Unlabelled training samples (target ``-1``) are left out of the bank.

    Args:
        train: Features of the labelled bank (see
            :func:`~lightly_derm.evaluation.extract_features`).
        test: Features to classify; all must be labelled.
        num_classes: C; default the largest target + 1.
        k: Neighbours (20, as DINO's evaluation; lightly's default is 200, which suits
            ImageNet-sized banks).
        temperature: Similarity temperature (lightly's default 0.1).

    Returns:
        ``{"knn_accuracy", "knn_balanced_accuracy", "knn_auc" (binary), "knn_num_samples",
        "knn_k", "knn_temperature"}``.

    Raises:
        DataError: The labelled bank holds fewer than two classes (the metrics would be
            undefined; see :func:`~lightly_derm.evaluation.require_two_classes`).
    """
    bank = train.labelled()
    if bank.targets.numel() == 0:
        raise ValueError("the training features have no labelled sample")
    require_two_classes(bank.targets, "the training (bank) labels")
    if num_classes is None:
        num_classes = int(max(int(bank.targets.max()), int(test.targets.max()))) + 1
    scores = knn_scores(
        test.features, bank.features, bank.targets, num_classes, k, temperature
    )
    result = classification_metrics(scores, test.targets, prefix="knn_")
    result["knn_k"] = min(k, bank.targets.numel())
    result["knn_temperature"] = temperature
    return result
