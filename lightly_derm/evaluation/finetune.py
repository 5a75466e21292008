"""Low-label fine-tuning: train backbone + linear head on a labelled fraction, then score.

Builds on lightly's :class:`~lightly.utils.benchmarking.FinetuneClassifier` (SGD with
momentum, learning rate scaled by batch size / 256, cosine schedule; SimCLR's
fine-tuning settings) trained by a Lightning :class:`~pytorch_lightning.Trainer`, on a
:func:`~lightly_derm.evaluation.stratified_subset` of the training data. What it adds:
the subset, a copy of the backbone so the caller's weights stay as they are, and the
dermatology metrics (balanced accuracy, AUC) on the test data.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightly.utils.benchmarking import FinetuneClassifier
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from lightly_derm.evaluation.features import extract_features
from lightly_derm.evaluation.metrics import classification_metrics, require_two_classes
from lightly_derm.evaluation.subsets import stratified_subset
from lightly_derm.models.backbones import feature_dim as measure_feature_dim


def finetune_evaluate(
    backbone: nn.Module,
    train_dataset: Dataset[Any],
    test_dataset: Dataset[Any],
    fraction: float = 1.0,
    num_classes: int | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 0.05,
    seed: int = 0,
    num_workers: int = 0,
    trainer_kwargs: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """Fine-tunes a copy of ``backbone`` with a linear head on a labelled fraction.

    Args:
        backbone: Maps (B, C, H, W) images to (B, D) features; it is copied, not changed.
        train_dataset: Yields ``(image tensor, target[, filename])`` with a training
            transform; needs a ``targets`` attribute (all lightly-derm datasets have one)
            for the stratified subset. Unlabelled samples are never used.
        test_dataset: Yields ``(image tensor, target[, filename])`` with an evaluation
            transform; every target must be labelled.
        fraction: The labelled fraction in (0, 1] (e.g. 0.01, 0.1, 1.0), stratified, at
            least one image per class.
        num_classes: C; default ``len(train_dataset.classes)`` or the largest target + 1.
        epochs: Training epochs over the subset.
        batch_size: Batch size (per device).
        lr: lightly's base learning rate (scaled by batch size × devices / 256).
        seed: Seeds the subset, the head's initialisation and the shuffling.
        num_workers: DataLoader workers.
        trainer_kwargs: Passed to :class:`pytorch_lightning.Trainer` (``accelerator``,
            ``devices``, ``precision``, ``enable_progress_bar``, …); by default no logger
            and no checkpoints.
        device: Where to score ``test_dataset`` (e.g. ``"cuda"``); default the CPU,
            where Lightning leaves the model after training.
        autocast_dtype: Score under :func:`torch.autocast` with this dtype (e.g.
            ``torch.bfloat16`` on a GPU).
        return_predictions: Also return the predicted classes of the test images (for
            a confusion matrix, :func:`~lightly_derm.evaluation.confusion_report`).

    Returns:
        ``{"finetune_accuracy", "finetune_balanced_accuracy", "finetune_auc" (binary),
        "finetune_num_samples", "finetune_fraction", "finetune_num_train",
        "finetune_epochs"}``; with ``return_predictions`` also
        ``"finetune_predictions"``: the (N,) int64 tensor of the predicted classes (the
        argmax of the logits) of the test images, in their order.

    Raises:
        ValueError: ``train_dataset`` has no ``targets``, or a bad ``fraction``.
        DataError: Its labels hold fewer than two classes (see
            :func:`~lightly_derm.evaluation.require_two_classes`).
    """
    targets = getattr(train_dataset, "targets", None)
    if targets is None:
        raise ValueError(
            "train_dataset needs a targets attribute (an (N,) array of class indices) to "
            "draw the stratified subset"
        )
    targets = np.asarray(targets)
    require_two_classes(
        targets, "the training labels", getattr(train_dataset, "classes", None)
    )
    indices = stratified_subset(targets, fraction, seed=seed)
    if num_classes is None:
        classes = getattr(train_dataset, "classes", None)
        num_classes = len(classes) if classes else int(targets.max()) + 1
    subset = Subset(train_dataset, indices.tolist())
    # A final batch of one image breaks BatchNorm in training mode.
    drop_last = len(subset) > batch_size and len(subset) % batch_size == 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = copy.deepcopy(backbone)
        classifier = FinetuneClassifier(
            model,
            batch_size_per_device=batch_size,
            lr=lr,
            feature_dim=measure_feature_dim(model),
            num_classes=num_classes,
            topk=(1,),
        )
        loader = DataLoader(
            subset,
            batch_size=batch_size,
            shuffle=True,
            drop_last=drop_last,
            num_workers=num_workers,
            generator=torch.Generator().manual_seed(seed),
        )
        options: dict[str, Any] = {
            "max_epochs": epochs,
            "logger": False,
            "enable_checkpointing": False,
            "enable_model_summary": False,
        }
        options.update(trainer_kwargs or {})
        trainer = pl.Trainer(**options)
        trainer.fit(classifier, loader)
    logits = extract_features(
        classifier,
        test_dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        autocast_dtype=autocast_dtype,
    )
    result = classification_metrics(
        logits.features.softmax(dim=1), logits.targets, prefix="finetune_"
    )
    result.update(
        finetune_fraction=fraction,
        finetune_num_train=len(subset),
        finetune_epochs=epochs,
    )
    if return_predictions:
        result["finetune_predictions"] = logits.features.argmax(dim=1).cpu()
    return result
