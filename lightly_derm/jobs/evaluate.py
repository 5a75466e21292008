"""The evaluation job: kNN, linear probe and low-label fine-tuning of a pretrained backbone.

Builds on :mod:`lightly_derm.evaluation` (:func:`~lightly_derm.evaluation.extract_features`,
:func:`~lightly_derm.evaluation.knn_evaluate`,
:func:`~lightly_derm.evaluation.linear_probe_evaluate`,
:func:`~lightly_derm.evaluation.finetune_evaluate`,
:func:`~lightly_derm.evaluation.stratified_subset`),
:func:`~lightly_derm.jobs.load_backbone` and :func:`~lightly_derm.data.make_dataset`.
What the job adds: the train/test split of the data (the official one where the source
has one, else a seeded stratified split), the backbone from any checkpoint or run folder,
and the results as ``results.json`` and a Markdown table.

Example:
    >>> from lightly_derm.jobs import evaluate
    >>> results = evaluate(checkpoint="runs/demo")  # doctest: +SKIP
    >>> results["linear"]["linear_balanced_accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset, Subset

from lightly_derm.errors import ConfigError
from lightly_derm.evaluation.selection import SELECTION_METRICS
from lightly_derm.jobs.checkpoints import (
    CONFIG_FILE,
    checkpoint_normalization,
    find_checkpoint,
    is_named_weights,
    load_backbone,
    run_config,
    run_folder,
)
from lightly_derm.jobs.config import RunConfig, option
from lightly_derm.jobs.console import is_main_process, say
from lightly_derm.jobs.plots import PLOT_FILES, plot_embedding
from lightly_derm.jobs.pretrain import check_backbone_name, with_transform
from lightly_derm.jobs.run_folder import RunFolder, check_out
from lightly_derm.jobs.trainer import trainer_options
from lightly_derm.models.backbones import (
    CIFAR_SUFFIX,
    SMALL_INPUT_SIZE,
    backbone_for_input_size,
    build_backbone,
)
from lightly_derm.models.imagenet import input_normalization
from lightly_derm.transforms import eval_transform, finetune_transform
from lightly_derm.utils.validation import Range

#: Words that mark the built-in data wherever results show.
SYNTHETIC_SOURCE = (
    "built-in synthetic lesions (procedurally generated, not patient data)"
)
#: The backbone of a random-init evaluation (no ``checkpoint``, no ``backbone``):
#: built-in synthetic data, other data; a ResNet gets its stem by the input size.
RANDOM_INIT_BACKBONES: tuple[str, str] = ("resnet18", "resnet50")


@dataclasses.dataclass
class EvaluateConfig(RunConfig):
    """The options of :func:`evaluate` (the ``lightly-derm evaluate`` command line).

    Options that are ``None`` take the pretraining run's value (``input_size``,
    ``synthetic_classes``), else the preset's (:attr:`PRESETS`), or one derived as
    described.

    Attributes:
        checkpoint: A checkpoint file (Lightning checkpoint of any method, backbone or
            torchvision state dict), a ``pretrain`` run folder, or named weights
            (``imagenet:efficientnet-lite0``: ImageNet transfer without SSL). The
            images get the input scaling of the weights the run started from
            (:func:`~lightly_derm.jobs.checkpoints.checkpoint_normalization`). Not
            set: an untrained backbone (random init) is evaluated.
        backbone: Any backbone name (``resnet18``, ``resnet18-cifar``,
            ``efficientnet-lite0``, ``monai:efficientnet-b0``, ``timm:<model>``); not
            set: found from the checkpoint. A ResNet named without a stem gets the
            stem of the checkpoint's weights (``-cifar`` for a 3 × 3 ``conv1``).
            Without a checkpoint: not set gives :data:`RANDOM_INIT_BACKBONES` with
            the stem ``pretrain`` chooses for the input size
            (:func:`~lightly_derm.models.backbone_for_input_size`: ``-cifar`` below
            64 px).
        data: Labelled data (see :func:`~lightly_derm.data.make_dataset`); split as the
            source defines (MedMNIST/DermaMNIST, ``train/`` + ``test/`` folders), else
            by a seeded stratified split. Not set: the built-in synthetic lesions (train
            and test streams) and the demo preset.
        labels: A labels CSV for an image folder.
        task: One class of the labels CSV as a one-vs-rest binary task (AUC).
        input_size: Image side in pixels; not set: the pretraining run's, else the
            preset's.
        test_fraction: For data without predefined splits: the stratified share held
            out for testing.
        fractions: Labelled fractions to fine-tune on (``[]``: no fine-tuning).
        knn_k: Neighbours of the weighted kNN classifier; a list: the candidates, one
            chosen on validation data (see ``selection_metric``).
        knn_temperature: Its temperature.
        linear_weight_decay: L2 of the linear probe; a list: chosen on validation data.
        linear_class_weight: ``"none"`` or ``"balanced"`` (class-balanced loss) for the
            linear probe; a list: chosen on validation data.
        selection_metric: The validation criterion of the choices:
            ``"accuracy"``, ``"balanced_accuracy"`` or ``"mean"`` of the two. The
            validation data is the source's ``val`` split when it also has a ``test``
            split (DermaMNIST, MedMNIST), else a stratified ``test_fraction`` of the
            training images; the final scores refit on all training images.
        finetune_epochs: Fine-tuning epochs.
        finetune_batch_size: Fine-tuning batch size.
        finetune_lr: Fine-tuning base learning rate (lightly's scaling).
        batch_size: Batch size of the feature pass.
        strict: Unreadable images are an error (instead of skipped with a warning).
        decode_size: Decode JPEGs at reduced size (0: full); not set: twice the input
            size.
        synthetic_images: Synthetic data: training images.
        baseline: Also score an untrained backbone of the same architecture (random
            init) with the same protocols, settings and data (a ``random-init`` row).
        limit: Use only the first N images of the training and of the test data (tiny
            runs; first in the data's order).
        synthetic_test_images: Synthetic data: test images.
        synthetic_classes: Synthetic data: classes.
        devices: Lightning's devices for fine-tuning: how many, or which.
        plots: Draw the embedding plot of the test features.
        out: The output folder; not set: ``<run folder>/evaluation`` for a run's
            checkpoint, else ``evaluation``.
    """

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "demo": {
            "input_size": 64,
            "finetune_epochs": 3,
            "num_workers": 0,
            "synthetic_images": 512,
            "synthetic_test_images": 256,
            "synthetic_classes": 3,
        },
        "data": {"input_size": 224, "finetune_epochs": 20},
    }

    checkpoint: str | None = None
    backbone: str | None = None
    data: str | None = None
    labels: str | None = option(needs="data")
    task: str | None = option(needs="data")
    input_size: int | None = option(rule=Range.int(8))
    test_fraction: float = option(0.2, Range.unit_interval(high_open=True))
    fractions: list[float] = option(
        factory=lambda: [0.01, 0.1, 1.0],
        rule=Range.unit_interval(),
        item="each fine-tuning fraction",
    )
    knn_k: int | list[int] = option(20, Range.int(1), item="each knn_k")
    knn_temperature: float = option(0.1, Range.positive())
    linear_weight_decay: float | list[float] = option(
        1e-3, Range(low=0.0), item="each linear_weight_decay"
    )
    linear_class_weight: str | list[str] = "none"
    selection_metric: str = "mean"
    finetune_epochs: int | None = option(rule=Range.int(1))
    finetune_batch_size: int = option(64, Range.int(2))
    finetune_lr: float = option(0.05, Range.positive())
    batch_size: int = option(256, Range.int(1))
    devices: int | str = 1
    strict: bool = False
    decode_size: int | None = option(rule=Range.int(0))
    limit: int | None = option(rule=Range.int(2))
    baseline: bool = False
    synthetic_images: int | None = option(rule=Range.int(2), only="demo")
    synthetic_test_images: int | None = option(rule=Range.int(1), only="demo")
    synthetic_classes: int | None = option(rule=Range.int(2), only="demo")

    def resolved(self) -> EvaluateConfig:
        """Every default filled in and every option checked (see :func:`resolve_evaluate_config`)."""
        return resolve_evaluate_config(self)

    @property
    def synthetic(self) -> bool:
        """Whether the evaluation uses the built-in synthetic lesions."""
        return self.data is None

    @classmethod
    def normalize(cls, mapping: Mapping[str, Any], source: str) -> dict[str, Any]:
        """Also reads one number as ``fractions``."""
        values = super().normalize(mapping, source)
        if isinstance(values.get("fractions"), (int, float)):
            values["fractions"] = [values["fractions"]]
        return values


def resolve_evaluate_config(config: EvaluateConfig) -> EvaluateConfig:
    """Fills the defaults of ``config`` and checks its options (reads no images).

    Raises:
        FileNotFoundError: The checkpoint or the data do not exist.
        ConfigError: An option out of range (named).
    """
    checkpoint = os.fspath(config.checkpoint) if config.checkpoint is not None else None
    named = checkpoint is not None and is_named_weights(checkpoint)
    if checkpoint is not None and not named:
        find_checkpoint(checkpoint)  # raises FileNotFoundError with the reason
    if config.data is not None and not Path(config.data).expanduser().exists():
        raise FileNotFoundError(f"data not found: {config.data}")
    # the pretraining run's values come before the preset's
    saved = (run_config(checkpoint) if checkpoint and not named else None) or {}
    inherited = ("input_size", "synthetic_classes") if config.synthetic else ()
    c = dataclasses.replace(
        config,
        checkpoint=checkpoint,
        **{
            k: saved[k]
            for k in inherited
            if getattr(config, k) is None and saved.get(k) is not None
        },
    )
    c = c.with_preset().check()
    assert c.input_size is not None  # every preset sets it
    if checkpoint is None:
        c = dataclasses.replace(
            c, backbone=random_init_backbone(c.backbone, c.input_size, c.synthetic)
        )
    if c.backbone is not None:
        check_backbone_name(c.backbone)
    _candidates(c.knn_k), _candidates(c.linear_weight_decay)  # none empty
    weights = [str(w).lower() for w in _candidates(c.linear_class_weight)]
    if any(w not in ("none", "balanced") for w in weights):
        raise ConfigError(
            f"linear_class_weight must be 'none' or 'balanced', got {weights}"
        )
    if c.selection_metric not in SELECTION_METRICS:
        raise ConfigError(
            f"selection_metric must be one of {', '.join(SELECTION_METRICS)}, got "
            f"{c.selection_metric!r}"
        )
    c = dataclasses.replace(
        c, linear_class_weight=weights if len(weights) > 1 else weights[0]
    )
    assert c.input_size is not None
    if c.out is None:
        run = run_folder(checkpoint) if checkpoint and not named else None
        out = os.fspath(run / "evaluation") if run is not None else "evaluation"
    else:
        out = os.fspath(c.out)
    return dataclasses.replace(
        c,
        fractions=[float(f) for f in c.fractions],
        decode_size=c.decode_size if c.decode_size is not None else 2 * c.input_size,
        out=out,
        **c.resolved_run_options(),
    ).check()


def random_init_backbone(backbone: str | None, input_size: int, synthetic: bool) -> str:
    """The backbone of an evaluation without a checkpoint: ``backbone``, else the default.

    The default is :data:`RANDOM_INIT_BACKBONES` with the stem ``pretrain`` chooses
    when no backbone is named
    (:func:`~lightly_derm.models.backbone_for_input_size`: the small-image ``-cifar``
    stem below 64 px input); a named backbone is kept as named.

    Example:
        >>> from lightly_derm.jobs.evaluate import random_init_backbone
        >>> random_init_backbone(None, 28, synthetic=False)
        'resnet50-cifar'
        >>> random_init_backbone("resnet18", 28, synthetic=True)
        'resnet18'
    """
    if backbone is not None:
        return backbone
    default = RANDOM_INIT_BACKBONES[0 if synthetic else 1]
    return backbone_for_input_size(default, input_size)


def stem_note(backbone: str, input_size: int) -> str:
    """Why a ResNet chosen for a random init (no checkpoint, none named) has its stem.

    For the run's messages; empty for a backbone that is not a torchvision ResNet.

    Example:
        >>> from lightly_derm.jobs.evaluate import stem_note
        >>> stem_note("resnet18-cifar", 32)[:22]
        'the small-image stem ('
    """
    if backbone.endswith(CIFAR_SUFFIX):
        return (
            f"the small-image stem (3 x 3 conv1, no max-pool), as pretrain chooses it "
            f"for {input_size} px input (below {SMALL_INPUT_SIZE} px); "
            f"--backbone {backbone.removesuffix(CIFAR_SUFFIX)} for the ImageNet stem"
        )
    # a torchvision ResNet without a stem suffix (it would get one for tiny images)
    if backbone_for_input_size(backbone, 1) == backbone + CIFAR_SUFFIX:
        return (
            f"the ImageNet stem, as pretrain chooses it for {input_size} px input "
            f"({SMALL_INPUT_SIZE} px or more)"
        )
    return ""


def _normalization(config: EvaluateConfig) -> dict[str, list[float]]:
    """The input normalisation of the checkpoint's weights (ImageNet's without one)."""
    if config.checkpoint is None:
        return input_normalization(None)
    return checkpoint_normalization(str(config.checkpoint))


def _candidates(value: Any) -> list[Any]:
    """A list of the candidates of an option that takes one value or a list."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ConfigError("an option given as a list needs at least one value")
    return values


def _class_weight(name: str) -> str | None:
    return None if name == "none" else name


class LabelledSubset(Subset):  # type: ignore[type-arg]
    """A :class:`torch.utils.data.Subset` that keeps ``targets`` and ``classes``."""

    def __init__(self, dataset: Dataset[Any], indices: Sequence[int]) -> None:
        super().__init__(dataset, list(indices))
        targets = np.asarray(getattr(dataset, "targets", []))
        self.targets = targets[np.asarray(self.indices, dtype=np.int64)]
        self.classes = list(getattr(dataset, "classes", []) or [])


def _labelled(dataset: Dataset[Any]) -> LabelledSubset:
    targets = np.asarray(getattr(dataset, "targets", []))
    return LabelledSubset(dataset, np.flatnonzero(targets >= 0).tolist())


def evaluation_datasets(
    config: EvaluateConfig,
) -> tuple[Dataset[Any], Dataset[Any], Dataset[Any], str]:
    """``(train, test, train for fine-tuning, split description)`` of a resolved config.

    ``train`` and ``test`` have the deterministic evaluation transform, the fine-tuning
    set the augmenting one; all are labelled only.

    Raises:
        ValueError: The data has no labels, or too few for a split.
    """
    from lightly_derm.data import dataset_splits, make_dataset
    from lightly_derm.evaluation import stratified_subset

    assert config.input_size is not None
    normalize = _normalization(config)
    plain = eval_transform(config.input_size, normalize)
    common: dict[str, Any] = {
        "strict": bool(config.strict),
        "decode_size": config.decode_size or None,
    }
    if config.synthetic:
        synthetic: dict[str, Any] = {
            "image_size": max(config.input_size, 16),
            "num_classes": config.synthetic_classes or 3,
            "seed": config.seed or 0,
        }
        train = make_dataset(
            None, num_images=config.synthetic_images or 2, **synthetic, split="train"
        )
        test = make_dataset(
            None,
            num_images=config.synthetic_test_images or 1,
            **synthetic,
            split="test",
        )
        split = "synthetic train and test streams (disjoint, same distribution)"
    else:
        splits = dataset_splits(config.data)
        extra = {**common, "task": config.task}
        if splits:
            test_split = "test" if "test" in splits else "val"
            train = make_dataset(config.data, config.labels, split="train", **extra)
            test = make_dataset(config.data, config.labels, split=test_split, **extra)
            split = (
                f"the source's own splits: train for fitting, {test_split} for scoring"
            )
        else:
            full = make_dataset(config.data, config.labels, **extra)
            targets = np.asarray(getattr(full, "targets", []))
            _require_labels(targets, str(config.data))
            labelled = np.flatnonzero(targets >= 0)
            if labelled.size < 4:
                raise ValueError(
                    f"{config.data} has {labelled.size} labelled images; evaluation needs "
                    "a few per class to split into train and test"
                )
            test_idx = stratified_subset(
                targets, float(config.test_fraction or 0.2), seed=config.seed or 0
            )
            train_idx = np.setdiff1d(labelled, test_idx)
            train = LabelledSubset(full, train_idx.tolist())
            test = LabelledSubset(full, test_idx.tolist())
            split = (
                f"stratified split of the labelled images: {config.test_fraction:.0%} "
                f"for scoring, seed {config.seed}"
            )
    if config.limit is not None:
        train, test = _first(train, config.limit), _first(test, config.limit)
        split += f"; the first {config.limit} images of each"
    for name, part in (("training", train), ("test", test)):
        _require_labels(np.asarray(getattr(part, "targets", [])), f"the {name} data")
    train_eval = _labelled(_transformed(train, plain))
    test_eval = _labelled(_transformed(test, plain))
    train_tune = _labelled(
        _transformed(train, finetune_transform(config.input_size, normalize=normalize))
    )
    return train_eval, test_eval, train_tune, split


def _first(dataset: Dataset[Any], count: int) -> Dataset[Any]:
    """The first ``count`` images of ``dataset`` (a :class:`LabelledSubset`)."""
    size = len(dataset)  # type: ignore[arg-type]
    if size <= count:
        return dataset
    if isinstance(dataset, LabelledSubset):
        return LabelledSubset(dataset.dataset, dataset.indices[:count])
    return LabelledSubset(dataset, range(count))


def _transformed(dataset: Dataset[Any], transform: Any) -> Dataset[Any]:
    if isinstance(dataset, LabelledSubset):
        return LabelledSubset(
            with_transform(dataset.dataset, transform), dataset.indices
        )
    return with_transform(dataset, transform)


def _require_labels(targets: np.ndarray, what: str) -> None:
    if targets.size == 0 or not (targets >= 0).any():
        raise ValueError(
            f"{what} has no labels; evaluate needs labelled images: give --labels CSV, "
            "a folder with class subfolders, or a MedMNIST/DermaMNIST source"
        )
    if targets.ndim != 1:
        raise ValueError(
            f"{what} has multi-label targets {targets.shape}; pick one class with --task"
        )


def _feature_device(config: EvaluateConfig) -> torch.device:
    if config.accelerator in ("gpu", "cuda") or (
        config.accelerator == "auto" and torch.cuda.is_available()
    ):
        return torch.device("cuda")
    if config.accelerator == "mps":
        return torch.device("mps")
    return torch.device("cpu")


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hides Lightning's per-Trainer info lines (hardware, tips) for repeated fits."""
    loggers = [
        logging.getLogger(name)
        for name in (
            "pytorch_lightning.utilities.rank_zero",
            "lightning.pytorch.utilities.rank_zero",
        )
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def evaluate(
    config: EvaluateConfig | Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
    verbose: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Evaluates a pretrained backbone: frozen-feature kNN and linear probe, fine-tuning.

    Writes ``results.json``, ``results.md`` (a Markdown table), ``config.yaml``,
    ``plots/embedding.png`` (PCA of the test features by class, titled with the method
    and backbone) and ``plots/confusion_<protocol>.png`` (``knn``, ``linear`` and
    ``finetune_<fraction>``: the confusion matrix with each class's recall,
    :func:`~lightly_derm.evaluation.plot_confusion_matrix`) into ``out``. Without a
    checkpoint an untrained backbone is evaluated (random init).

    ``out`` is a run folder (:class:`~lightly_derm.jobs.run_folder.RunFolder`): locked
    while the job runs (a second job there is refused, naming the holder), with a record
    of what the job wrote; ``overwrite`` deletes only what that record lists.

    Args:
        config: An :class:`EvaluateConfig` or a mapping of its options.
        overwrite: Replace the results of an earlier evaluation in ``out`` (otherwise
            an error); only the files it recorded writing are deleted.
        verbose: Print progress and the table.
        **options: Options of :class:`EvaluateConfig`; they override ``config``.

    Returns:
        The content of ``results.json``: ``checkpoint``, ``backbone``, ``input_size``,
        ``data`` (source, split, sizes, classes), ``knn`` and ``linear`` (the metric
        dictionaries of :func:`~lightly_derm.evaluation.knn_evaluate` and
        :func:`~lightly_derm.evaluation.linear_probe_evaluate`: ``*_accuracy``,
        ``*_balanced_accuracy``, ``*_auc`` for two classes, ...), ``finetune`` (one
        :func:`~lightly_derm.evaluation.finetune_evaluate` dictionary per fraction, keyed
        ``"0.01"``, ``"0.1"``, ``"1"``), ``confusion`` (per protocol,
        :func:`~lightly_derm.evaluation.confusion_report`), ``warnings``, ``baseline``
        (with ``baseline``: the same for the random init) and ``out``.

    Raises:
        FileNotFoundError: The checkpoint or the data do not exist.
        ValueError: Unlabelled data, a checkpoint without a backbone, or a bad option.
        ConfigError: Results already in ``out`` (without ``overwrite``), files at the
            job's output names that no run recorded, another job running in ``out``.
    """
    requested = EvaluateConfig.create(config, options, "evaluate")
    cfg = resolve_evaluate_config(requested)
    out = check_out(cfg.out)
    run: RunFolder | None = None
    if is_main_process():
        run = RunFolder(out, job="evaluate").start(
            evaluation_outputs(cfg),
            marker="results.json",
            overwrite=overwrite,
            what="evaluation results",
            folders=["plots"] if cfg.plots else [],
        )
    with run if run is not None else contextlib.nullcontext():
        return _evaluate(cfg, out, verbose, requested.backbone is None)


def evaluation_outputs(config: EvaluateConfig) -> list[str]:
    """The files :func:`evaluate` writes into its ``out`` for a resolved ``config``.

    Example:
        >>> from lightly_derm.jobs.evaluate import EvaluateConfig, evaluation_outputs
        >>> evaluation_outputs(EvaluateConfig(fractions=[0.1], plots=False))
        ['config.yaml', 'results.json', 'results.md']
        >>> evaluation_outputs(EvaluateConfig(fractions=[0.1]))[3:]  # doctest: +NORMALIZE_WHITESPACE
        ['plots/embedding.png', 'plots/confusion_knn.png', 'plots/confusion_linear.png',
         'plots/confusion_finetune_0.1.png']
    """
    files = [CONFIG_FILE, "results.json", "results.md"]
    if not config.plots:
        return files
    files.append(f"plots/{PLOT_FILES['embedding']}")
    protocols = ["knn", "linear", *(_finetune_key(f) for f in config.fractions)]
    suffixes = [""] + (
        [RANDOM_INIT_SUFFIX] if config.baseline and config.checkpoint else []
    )
    files += [f"plots/confusion_{p}{s}.png" for s in suffixes for p in protocols]
    return files


#: The suffix of the random-init (``baseline``) confusion plots.
RANDOM_INIT_SUFFIX = "_random_init"


def _finetune_key(fraction: float) -> str:
    """The protocol name of fine-tuning on ``fraction`` (``finetune_0.1``)."""
    return f"finetune_{float(fraction):g}"


def _evaluate(
    cfg: EvaluateConfig, out: Path, verbose: bool, default_backbone: bool
) -> dict[str, Any]:
    from lightly_derm.evaluation import (
        confusion_report,
        extract_features,
        finetune_evaluate,
        knn_evaluate,
        linear_probe_evaluate,
    )

    pl.seed_everything(int(cfg.seed or 0), workers=True, verbose=False)
    assert cfg.input_size is not None  # resolved
    checkpoint: str | Path | None = None
    if cfg.checkpoint is None:
        name = str(cfg.backbone)
        torch.manual_seed(int(cfg.seed or 0))  # as the baseline of a checkpoint
        backbone = build_backbone(name)
        note = stem_note(name, cfg.input_size) if default_backbone else ""
        say(
            "evaluate",
            verbose,
            f"no --checkpoint: an untrained {name} (random init)"
            + (f"; {note}" if note else ""),
        )
        if cfg.baseline:
            say(
                "evaluate",
                verbose,
                "--baseline adds nothing without --checkpoint: the random init is "
                "what is evaluated",
            )
    else:
        checkpoint = (
            str(cfg.checkpoint)
            if is_named_weights(str(cfg.checkpoint))
            else find_checkpoint(str(cfg.checkpoint))
        )
        backbone, name = load_backbone(checkpoint, cfg.backbone)
        say("evaluate", verbose, f"backbone {name} from {checkpoint}")
    train, test, train_tune, split = evaluation_datasets(cfg)
    classes = list(getattr(train, "classes", []) or [])
    num_classes = len(classes) or int(
        max(np.max(train.targets), np.max(test.targets)) + 1  # type: ignore[attr-defined]
    )
    source = SYNTHETIC_SOURCE if cfg.synthetic else str(cfg.data)
    say(
        "evaluate",
        verbose,
        f"data: {source}; {len(train)} training and {len(test)} test images, "  # type: ignore[arg-type]
        f"{num_classes} classes; {split}",
    )
    device = _feature_device(cfg)
    autocast = (
        torch.bfloat16
        if "bf16" in str(cfg.precision) and device.type == "cuda"
        else None
    )
    feature_options: dict[str, Any] = {
        "batch_size": cfg.batch_size,
        "num_workers": cfg.num_workers,
        "device": device,
        "autocast_dtype": autocast,
        "channels_last": device.type == "cuda",
    }
    train_features = extract_features(
        backbone,
        train,
        progress="features (train)" if cfg.progress_bar else False,
        **feature_options,
    )
    test_features = extract_features(
        backbone,
        test,
        progress="features (test)" if cfg.progress_bar else False,
        **feature_options,
    )
    results: dict[str, Any] = {
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "backbone": name,
        "method": _method_name(cfg.checkpoint),
        "input_size": cfg.input_size,
        "data": {
            "source": source,
            "synthetic": cfg.synthetic,
            "labels": cfg.labels,
            "task": cfg.task,
            "split": split,
            "train_images": len(train),  # type: ignore[arg-type]
            "test_images": len(test),  # type: ignore[arg-type]
            "classes": classes,
        },
    }
    knn_k, weight_decay = cfg.knn_k, cfg.linear_weight_decay
    class_weight = cfg.linear_class_weight
    if any(isinstance(v, list) for v in (knn_k, weight_decay, class_weight)):
        results["selection"] = select_settings(
            cfg, backbone, train_features, num_classes, feature_options
        )
        knn_k = results["selection"]["knn_k"]
        weight_decay = results["selection"]["linear_weight_decay"]
        class_weight = results["selection"]["linear_class_weight"]
        say(
            "evaluate",
            verbose,
            f"chosen on {results['selection']['data']} by {cfg.selection_metric}: "
            f"kNN k={knn_k}, linear weight decay {weight_decay:g}, class weight "
            f"{class_weight}",
        )

    def score(
        model: torch.nn.Module, train_f: Any, test_f: Any, label: str = ""
    ) -> dict[str, Any]:
        """kNN, linear probe, fine-tuning of ``model`` and their confusion matrices."""
        scored: dict[str, Any] = {}
        scored["knn"] = knn_evaluate(
            train_f,
            test_f,
            num_classes=num_classes,
            k=int(knn_k),  # type: ignore[arg-type]
            temperature=float(cfg.knn_temperature or 0.1),
        )
        scored["linear"] = linear_probe_evaluate(
            train_f,
            test_f,
            num_classes=num_classes,
            weight_decay=float(weight_decay),  # type: ignore[arg-type]
            class_weight=_class_weight(str(class_weight)),  # type: ignore[arg-type]
        )
        say("evaluate", verbose, _one_line(f"{label}kNN", scored["knn"], "knn_"))
        say(
            "evaluate",
            verbose,
            _one_line(f"{label}linear probe", scored["linear"], "linear_"),
        )
        scored["confusion"] = confusion_reports(
            train_f,
            test_f,
            num_classes,
            classes,
            knn_k=int(knn_k),  # type: ignore[arg-type]
            knn_temperature=float(cfg.knn_temperature or 0.1),
            linear_weight_decay=float(weight_decay),  # type: ignore[arg-type]
            linear_class_weight=_class_weight(str(class_weight)),
        )
        scored["finetune"] = {}
        for fraction in cfg.fractions or []:
            say(
                "evaluate",
                verbose,
                f"{label}fine-tuning on {_percent(fraction)} of the labelled training images",
            )
            with warnings.catch_warnings(), _quiet_lightning():
                warnings.filterwarnings(
                    "ignore", message=".*does not have many workers.*"
                )
                # lightly's FinetuneClassifier has a validation_step; scoring is done here
                warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
                scores = finetune_evaluate(
                    model,
                    train_tune,
                    test,
                    fraction=fraction,
                    num_classes=num_classes,
                    epochs=int(cfg.finetune_epochs or 1),
                    batch_size=int(cfg.finetune_batch_size or 64),
                    lr=float(cfg.finetune_lr or 0.05),
                    seed=int(cfg.seed or 0),
                    num_workers=int(cfg.num_workers or 0),
                    trainer_kwargs=trainer_options(
                        accelerator=str(cfg.accelerator),
                        devices=cfg.devices,  # type: ignore[arg-type]
                        strategy=str(cfg.strategy),
                        precision=cfg.precision,
                        progress_bar=bool(cfg.progress_bar),
                    ),
                    return_predictions=True,
                )
            predicted = scores.pop("finetune_predictions")
            scored["confusion"][_finetune_key(fraction)] = confusion_report(
                predicted,
                test_f.targets.cpu(),
                classes or [str(i) for i in range(num_classes)],
                num_classes,
            )
            scored["finetune"][f"{fraction:g}"] = scores
            say(
                "evaluate",
                verbose,
                _one_line(
                    f"{label}fine-tune {_percent(fraction)}", scores, "finetune_"
                ),
            )
        scored["warnings"] = _warnings(scored["confusion"])
        for line in scored["warnings"]:
            warnings.warn(label + line, stacklevel=2)
        return scored

    results.update(score(backbone, train_features, test_features))
    if cfg.baseline and cfg.checkpoint is not None:
        torch.manual_seed(int(cfg.seed or 0))
        untrained = build_backbone(name)
        say(
            "evaluate",
            verbose,
            f"baseline: an untrained {name} (random init; the checkpoint's "
            "architecture, stem included, so that only the weights differ)",
        )
        baseline = score(
            untrained,
            extract_features(untrained, train, **feature_options),
            extract_features(untrained, test, **feature_options),
            "random init: ",
        )
        results["baseline"] = baseline
    results["out"] = str(out)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / CONFIG_FILE)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        table = results_markdown(results)
        (out / "results.md").write_text(table)
        if cfg.plots:
            _plot_confusions(results, out / "plots")
            try:
                plot_embedding(
                    test_features.features,
                    out / "plots" / PLOT_FILES["embedding"],
                    targets=test_features.targets,
                    classes=classes,
                    title=f"{results['method']} {name} features of the test images "
                    f"({'synthetic lesions' if cfg.synthetic else Path(str(cfg.data)).name}), PCA",
                )
            except Exception as exc:  # plots must not fail the job
                warnings.warn(f"could not draw the embedding plot: {exc}", stacklevel=2)
        if verbose:
            print("\n" + table)
        say(
            "evaluate",
            verbose,
            f"wrote {out}/ (results.json, results.md, config.yaml, plots/)",
        )
    return results


def _method_name(checkpoint: str | None) -> str:
    """The method that made the checkpoint's backbone, for titles."""
    if checkpoint is None:
        return "random init"
    if is_named_weights(checkpoint):
        return f"{checkpoint} (no SSL)"
    saved = run_config(checkpoint) or {}
    method = saved.get("method")
    return str(method) if method else "pretrained"


def confusion_reports(
    train: Any,
    test: Any,
    num_classes: int,
    classes: Sequence[str],
    knn_k: int,
    knn_temperature: float,
    linear_weight_decay: float,
    linear_class_weight: str | None,
) -> dict[str, dict[str, Any]]:
    """The test confusion matrix of the kNN and the linear-probe protocols.

    The predictions are those of :func:`~lightly_derm.evaluation.knn_evaluate` and
    :func:`~lightly_derm.evaluation.linear_probe_evaluate` with the same settings
    (:func:`~lightly_derm.evaluation.knn_scores`; a
    :class:`~lightly_derm.evaluation.LinearProbe` fitted again, deterministically, on
    the same features); each report is
    :func:`~lightly_derm.evaluation.confusion_report`'s.
    """
    from lightly_derm.evaluation import LinearProbe, confusion_report, knn_scores

    bank = train.labelled()
    names = list(classes) or [str(i) for i in range(num_classes)]
    knn = knn_scores(
        test.features, bank.features, bank.targets, num_classes, knn_k, knn_temperature
    ).argmax(1)
    probe = LinearProbe(
        linear_weight_decay,
        class_weight=linear_class_weight,  # type: ignore[arg-type]
    )
    probe.fit(bank.features, bank.targets, num_classes)
    linear = probe.predict(test.features)
    return {
        protocol: confusion_report(
            predicted.cpu(), test.targets.cpu(), names, num_classes
        )
        for protocol, predicted in (("knn", knn), ("linear", linear))
    }


def _warnings(confusion: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Warnings about empty test classes and protocols that predict one class."""
    lines: list[str] = []
    empty = next(iter(confusion.values()), {}).get("empty_classes") or []
    if empty:
        lines.append(
            f"the test data has no images of {', '.join(empty)}: their recall is "
            "undefined and balanced accuracy averages the other classes"
        )
    for protocol, report in confusion.items():
        if report.get("predicted_classes") == 1 and len(report["classes"]) > 1:
            lines.append(
                f"{protocol_name(protocol)} predicts one class for every "
                "test image (collapsed features or a too strong class imbalance)"
            )
    return lines


#: The protocols' names in tables and titles.
PROTOCOL_NAMES: dict[str, str] = {"knn": "kNN", "linear": "the linear probe"}


def protocol_name(protocol: str) -> str:
    """A protocol's name in tables and titles (``finetune_0.1``: fine-tuning on 10%).

    Example:
        >>> from lightly_derm.jobs.evaluate import protocol_name
        >>> protocol_name("knn"), protocol_name("finetune_0.1")
        ('kNN', 'fine-tuning on 10%')
    """
    if protocol.startswith("finetune_"):
        return f"fine-tuning on {_percent(float(protocol.removeprefix('finetune_')))}"
    return PROTOCOL_NAMES.get(protocol, protocol)


def _plot_confusions(results: Mapping[str, Any], folder: Path) -> None:
    from lightly_derm.evaluation import plot_confusion_matrix

    runs = [(results, str(results["method"]), "")]
    if results.get("baseline"):
        runs.append((results["baseline"], "random init", RANDOM_INIT_SUFFIX))
    for scored, method, suffix in runs:
        for protocol, report in scored.get("confusion", {}).items():
            try:
                plot_confusion_matrix(
                    report["matrix"],
                    report["classes"],
                    title=f"{method} {results['backbone']}: {protocol_name(protocol)}",
                    path=folder / f"confusion_{protocol}{suffix}.png",
                )
            except Exception as exc:  # plots must not fail the job
                warnings.warn(
                    f"could not draw the {protocol} confusion: {exc}", stacklevel=2
                )


def select_settings(
    config: EvaluateConfig,
    backbone: torch.nn.Module,
    train_features: Any,
    num_classes: int,
    feature_options: Mapping[str, Any],
) -> dict[str, Any]:
    """Chooses kNN k, probe weight decay and class weight on validation data.

    The validation data is the source's ``val`` split when it has ``val`` and ``test``
    (the test split is then the scored one), else a stratified ``test_fraction`` of the
    training features, fitted on the rest (see
    :func:`~lightly_derm.evaluation.select_knn`,
    :func:`~lightly_derm.evaluation.select_linear_probe`).

    Returns:
        ``{"knn_k", "linear_weight_decay", "linear_class_weight", "metric", "data",
        "knn_scores", "linear_scores"}``.

    Example:
        >>> from lightly_derm.jobs import evaluate
        >>> results = evaluate(checkpoint="runs/demo", data="dermamnist-jpg",  # doctest: +SKIP
        ...                    knn_k=[10, 20, 50], linear_weight_decay=[1e-3, 1e-2])
        >>> results["selection"]["knn_k"]  # doctest: +SKIP
        20
    """
    from lightly_derm.data import dataset_splits, make_dataset
    from lightly_derm.evaluation import (
        Features,
        extract_features,
        select_knn,
        select_linear_probe,
        stratified_subset,
    )

    assert config.input_size is not None
    splits = () if config.synthetic else dataset_splits(config.data)
    if "val" in splits and "test" in splits:
        val_set = _labelled(
            make_dataset(
                config.data,
                config.labels,
                split="val",
                task=config.task,
                strict=bool(config.strict),
                decode_size=config.decode_size or None,
                transform=eval_transform(config.input_size, _normalization(config)),
            )
        )
        fit = train_features.labelled()
        val = extract_features(backbone, val_set, **feature_options)
        data = "the val split"
    else:
        labelled = train_features.labelled()
        targets = labelled.targets.cpu().numpy()
        held = stratified_subset(
            targets, float(config.test_fraction or 0.2), seed=int(config.seed or 0)
        )
        rest = np.setdiff1d(np.arange(targets.size), held)

        def pick(index: np.ndarray) -> Features:
            ids = torch.as_tensor(index, dtype=torch.long)
            return Features(
                labelled.features[ids],
                labelled.targets[ids],
                [labelled.filenames[i] for i in index.tolist()],
            )

        fit, val = pick(rest), pick(held)
        data = f"a stratified {config.test_fraction:.0%} of the training images"
    ks = _candidates(config.knn_k)
    knn = select_knn(
        fit,
        val,
        ks,
        num_classes,
        float(config.knn_temperature or 0.1),
        config.selection_metric,  # type: ignore[arg-type]
    )
    linear = select_linear_probe(
        fit,
        val,
        [float(w) for w in _candidates(config.linear_weight_decay)],
        [_class_weight(str(w)) for w in _candidates(config.linear_class_weight)],  # type: ignore[misc]
        num_classes,
        config.selection_metric,  # type: ignore[arg-type]
    )
    return {
        "knn_k": knn["knn_k"],
        "linear_weight_decay": linear["linear_weight_decay"],
        "linear_class_weight": linear["linear_class_weight"] or "none",
        "metric": config.selection_metric,
        "data": data,
        "knn_scores": {str(k): v for k, v in knn["scores"].items()},
        "linear_scores": linear["scores"],
    }


def _one_line(label: str, scores: Mapping[str, Any], prefix: str) -> str:
    parts = [f"{label}:"]
    for key, name in (
        ("accuracy", "accuracy"),
        ("balanced_accuracy", "balanced accuracy"),
        ("auc", "AUC"),
    ):
        value = scores.get(prefix + key)
        if value is not None:
            parts.append(f"{name} {value:.4f}")
    return " ".join(parts)


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def _cell(value: Any) -> str:
    return "–" if value is None else f"{value:.4f}"


def results_markdown(results: Mapping[str, Any]) -> str:
    """The results of :func:`evaluate` as a Markdown table with a header paragraph."""
    data = results["data"]
    lines = [
        (
            f"# Evaluation of `{results['checkpoint']}`"
            if results["checkpoint"]
            else f"# Evaluation of an untrained {results['backbone']} (random init)"
        ),
        "",
        f"- backbone: {results['backbone']}, input {results['input_size']} px",
        f"- data: {data['source']}"
        + (f", labels {data['labels']}" if data.get("labels") else "")
        + (f", task {data['task']}" if data.get("task") else ""),
        f"- {data['train_images']} training and {data['test_images']} test images, "
        f"{len(data['classes'])} classes; {data['split']}",
        *(
            [
                f"- kNN k, probe weight decay and class weight chosen on "
                f"{results['selection']['data']} by {results['selection']['metric']}"
            ]
            if results.get("selection")
            else []
        ),
        "",
        "| protocol | labelled training images | accuracy | balanced accuracy | AUC |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += _protocol_rows(results, data)
    baseline = results.get("baseline")
    if baseline:
        lines += _protocol_rows(baseline, data, "random init: ")
    lines.append("")
    lines.append("AUC only for two classes; – where it does not apply.")
    for label, scored in (("", results), ("random init: ", baseline or {})):
        confusion = scored.get("confusion") or {}
        if confusion:
            names = next(iter(confusion.values()))["classes"]
            lines += [
                "",
                f"Per-class recall on the test images{' (random init)' if label else ''}:",
                "",
                "| protocol | " + " | ".join(names) + " |",
                "|---|" + "---:|" * len(names),
            ]
            for protocol, report in confusion.items():
                cells = [_cell(report["recall"].get(n)) for n in names]
                lines.append(
                    f"| {label}{protocol_name(protocol)} | " + " | ".join(cells) + " |"
                )
        for line in scored.get("warnings") or []:
            lines += ["", f"**Warning:** {label}{line}."]
    return "\n".join(lines) + "\n"


def _protocol_rows(
    results: Mapping[str, Any], data: Mapping[str, Any], label: str = ""
) -> list[str]:
    lines: list[str] = []
    knn = results["knn"]
    lines.append(
        f"| {label}kNN (k={knn.get('knn_k')}, frozen) | {data['train_images']} | "
        f"{_cell(knn.get('knn_accuracy'))} | {_cell(knn.get('knn_balanced_accuracy'))} | "
        f"{_cell(knn.get('knn_auc'))} |"
    )
    linear = results["linear"]
    lines.append(
        f"| {label}linear probe (frozen) | {data['train_images']} | "
        f"{_cell(linear.get('linear_accuracy'))} | "
        f"{_cell(linear.get('linear_balanced_accuracy'))} | "
        f"{_cell(linear.get('linear_auc'))} |"
    )
    for fraction, scores in results.get("finetune", {}).items():
        lines.append(
            f"| {label}fine-tune {_percent(float(fraction))} ({scores.get('finetune_epochs')} epochs) | "
            f"{scores.get('finetune_num_train')} | "
            f"{_cell(scores.get('finetune_accuracy'))} | "
            f"{_cell(scores.get('finetune_balanced_accuracy'))} | "
            f"{_cell(scores.get('finetune_auc'))} |"
        )
    return lines


__all__ = [
    "EvaluateConfig",
    "LabelledSubset",
    "evaluate",
    "evaluation_datasets",
    "resolve_evaluate_config",
    "results_markdown",
    "select_settings",
]
