"""The segmentation job: fine-tune a MONAI FlexibleUNet from an SSL checkpoint, report Dice/Jaccard.

Builds on :class:`~lightly_derm.segmentation.LesionSegmentation` (FlexibleUNet,
DiceCELoss, the ISIC 2017 scores), :class:`~lightly_derm.data.ISICSegmentationDataModule`
(pairs, low-label subsets, MONAI transforms), :func:`~lightly_derm.data.find_isic_pairs`,
the overlays of :mod:`lightly_derm.segmentation.overlays` and the Trainer of
:func:`~lightly_derm.jobs.build_trainer`. What the job adds: the encoder from any
checkpoint or run folder (its architecture found from the checkpoint), the built-in
synthetic lesions with masks when no data is given, optional k-fold cross-validation
and a random-init baseline trained on the same data with the same seed, and the scores
as ``results.json`` and a Markdown table.

Example:
    >>> from lightly_derm.jobs import segment
    >>> results = segment(checkpoint="runs/demo")  # doctest: +SKIP
    >>> results["results"]["pretrained"]["val_dice"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lightly_derm.callbacks import BEST_CHECKPOINT, LAST_CHECKPOINT
from lightly_derm.data.synthetic_segmentation_datamodule import (
    SyntheticSegmentationData,  # re-exported: its home is lightly_derm.data
)
from lightly_derm.errors import ConfigError
from lightly_derm.jobs.checkpoints import (
    CONFIG_FILE,
    backbone_name,
    checkpoint_normalization,
    find_checkpoint,
    is_named_weights,
    run_config,
    run_folder,
)
from lightly_derm.jobs.config import TrainConfig, option
from lightly_derm.jobs.console import is_main_process, say
from lightly_derm.jobs.evaluate import SYNTHETIC_SOURCE, stem_note
from lightly_derm.jobs.plots import PLOT_FILES, plot_metrics
from lightly_derm.jobs.run_folder import RunFolder, check_out
from lightly_derm.jobs.trainer import CHECKPOINT_DIR, TENSORBOARD_DIR, build_trainer
from lightly_derm.models.backbones import backbone_for_input_size
from lightly_derm.models.imagenet import input_normalization
from lightly_derm.utils.validation import Range

#: Examples of backbones with a segmentation encoder; every name
#: :func:`~lightly_derm.segmentation.flexunet_backbone` maps to a registered MONAI
#: FlexibleUNet encoder works (ResNets also ``-cifar``, ``monai:efficientnet-bN``,
#: ``efficientnet-lite0``, timm models with ``features_only``).
ENCODERS: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "efficientnet-lite0",
    "monai:efficientnet-b0",
)
#: The validation scores reported (LesionSegmentation's names).
SCORES: tuple[str, ...] = ("val_dice", "val_jaccard", "val_jaccard_thresholded")
#: The test scores reported with ``test_data``.
TEST_SCORES: tuple[str, ...] = ("test_dice", "test_jaccard", "test_jaccard_thresholded")
#: The files :func:`segment` writes into ``out``.
RESULT_FILES: tuple[str, ...] = (
    CONFIG_FILE,
    "results.json",
    "results.md",
    "plots/encoders.png",
)
#: The files of each fine-tuning run folder (``<encoder>/[fold_<k>/]``).
FINETUNE_FILES: tuple[str, ...] = (
    "metrics.csv",
    "hparams.yaml",
    f"{CHECKPOINT_DIR}/{LAST_CHECKPOINT}",
    f"{CHECKPOINT_DIR}/{BEST_CHECKPOINT}",
    f"plots/{PLOT_FILES['metrics']}",
    f"plots/{PLOT_FILES['overlays']}",
)


@dataclasses.dataclass
class SegmentConfig(TrainConfig):
    """The options of :func:`segment` (the ``lightly-derm segment`` command line).

    Options that are ``None`` take the checkpoint's value (``backbone``), else the
    preset's (:attr:`PRESETS`), or one derived as described.

    Attributes:
        checkpoint: The SSL checkpoint (file or ``pretrain`` run folder) whose backbone
            initialises the encoder, or named weights (``imagenet:efficientnet-lite0``:
            ImageNet transfer learning, backbone ``efficientnet-lite0``); not set: a
            random encoder. The images get the input scaling of the weights the
            encoder started from.
        data: An ISIC folder (``images/`` + ``masks/``, the official ISIC 2016-2018
            Task 1 folders, or one folder with both; see
            :func:`~lightly_derm.data.find_isic_pairs`). Not set: the built-in
            synthetic lesions with masks and the demo preset.
        val_data: An ISIC folder that is the validation set (instead of a split of
            ``data``; not with ``val_fraction`` or ``folds``), e.g. a held-out fold.
        test_data: An ISIC folder scored once at the end (e.g. the official test set).
        backbone: Any backbone with a FlexibleUNet encoder
            (:func:`~lightly_derm.segmentation.flexunet_backbone`): ``resnet18``,
            ``resnet50-cifar``, ``efficientnet-lite0``, ``monai:efficientnet-b0``,
            ``timm:convnext_tiny``, ...; not set: the checkpoint's, else (a random
            encoder) the preset's with the stem ``pretrain`` chooses for the input
            size (:func:`~lightly_derm.models.backbone_for_input_size`: ``-cifar``
            below 64 px).
        input_size: Image side in pixels (was ``image_size``).
        epochs: Fine-tuning epochs.
        batch_size: Batch size.
        lr: AdamW learning rate of decoder and head.
        encoder_lr: Learning rate of the encoder; not set: ``lr``.
        freeze_encoder_epochs: Train only the decoder for this many epochs first.
        random_stages: The first N encoder stages keep random init instead of the
            checkpoint's weights (ResNet encoders; 1: the stem, 2: also ``layer1``):
            the decoder's highest-resolution inputs, which SSL moves most.
        val_every_n_epochs: Validate (and keep ``best.ckpt``) every N epochs; the
            final model is always scored. Long fine-tunes on few masks spend most of
            their time validating at every epoch.
        label_fraction: Share of the training masks used.
        val_fraction: Share held out for validation; not set: 0.2 (not with
            ``folds``).
        folds: k-fold cross-validation over the pairs instead of one split.
        limit: Use only the first N pairs (by id): tiny runs.
        cache_rate: Share of the decoded pairs kept in memory.
        baseline: Also fine-tune from a random encoder (same data, same seed).
        synthetic_images: Synthetic data: training images.
        synthetic_val_images: Synthetic data: validation images.
        seed: Seeds split, subsets, decoder initialisation and batches.
        plots: Draw loss curves and overlays.
        out: The output folder; not set: ``<run folder>/segmentation`` for a run's
            checkpoint, else ``segmentation``.
    """

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "demo": {
            "backbone": "resnet18",
            "input_size": 64,
            "epochs": 3,
            "num_workers": 0,
            "synthetic_images": 128,
            "synthetic_val_images": 48,
        },
        "data": {"backbone": "resnet50", "input_size": 256, "epochs": 20},
    }
    RENAMED: ClassVar[Mapping[str, str]] = {"image_size": "input_size"}

    checkpoint: str | None = None
    data: str | None = None
    val_data: str | None = option(needs="data")
    test_data: str | None = option(needs="data")
    backbone: str | None = None
    input_size: int | None = option(rule=Range.int(16))
    epochs: int | None = option(rule=Range.int(1))
    batch_size: int = option(16, Range.int(1))
    lr: float = option(1e-3, Range.positive())
    encoder_lr: float | None = option(rule=Range.positive())
    freeze_encoder_epochs: int = option(0, Range.int(0))
    random_stages: int = option(0, Range(low=0, high=5, integer=True))
    val_every_n_epochs: int = option(1, Range.int(1))
    label_fraction: float = option(1.0, Range.unit_interval())
    val_fraction: float | None = option(rule=Range.unit_interval(high_open=True))
    folds: int | None = option(rule=Range.int(2))
    limit: int | None = option(rule=Range.int(2))
    cache_rate: float = option(0.0, Range(low=0.0, high=1.0))
    baseline: bool = False
    synthetic_images: int | None = option(rule=Range.int(2), only="demo")
    synthetic_val_images: int | None = option(rule=Range.int(1), only="demo")

    def resolved(self) -> SegmentConfig:
        """Every default filled in and every option checked (see :func:`resolve_segment_config`)."""
        return resolve_segment_config(self)

    @property
    def synthetic(self) -> bool:
        """Whether the job uses the built-in synthetic lesions."""
        return self.data is None

    @property
    def image_size(self) -> int | None:
        """Deprecated name of :attr:`input_size` (read for one release)."""
        warnings.warn(
            "SegmentConfig.image_size is deprecated; use input_size",
            FutureWarning,
            stacklevel=2,
        )
        return self.input_size


def check_encoder(backbone: str) -> str:
    """Raises :class:`ConfigError` unless ``backbone`` has a segmentation encoder.

    Returns the MONAI FlexibleUNet backbone name of its encoder
    (:func:`~lightly_derm.segmentation.flexunet_backbone`).
    """
    from lightly_derm.segmentation import flexunet_backbone

    if not isinstance(backbone, str):
        raise ConfigError(f"backbone must be a name, got {backbone!r}")
    try:
        return flexunet_backbone(backbone)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def resolve_segment_config(config: SegmentConfig) -> SegmentConfig:
    """Fills the defaults of ``config`` and checks its options (reads no images).

    Raises:
        FileNotFoundError: The checkpoint or a data folder do not exist.
        ConfigError: An option out of range or a backbone without a segmentation
            encoder.
    """
    c = config
    if c.checkpoint is not None:
        c = dataclasses.replace(c, checkpoint=os.fspath(c.checkpoint))
        checkpoint: str | Path = (
            str(c.checkpoint)
            if is_named_weights(c.checkpoint)
            else find_checkpoint(c.checkpoint or "")
        )
        if c.backbone is None:  # the checkpoint's value comes before the preset's
            backbone = backbone_name(checkpoint)
            if backbone is None:
                raise ConfigError(
                    f"cannot tell which backbone is in {c.checkpoint}; pass --backbone "
                    f"(e.g. {', '.join(ENCODERS)})"
                )
            c = dataclasses.replace(c, backbone=backbone)
    for name in ("data", "val_data", "test_data"):
        value = getattr(c, name)
        if value is not None and not Path(value).expanduser().is_dir():
            raise FileNotFoundError(f"{name} folder not found: {value}")
    if c.backbone is not None:
        check_encoder(c.backbone)
    c = c.with_preset().check()
    if config.backbone is None and c.checkpoint is None:
        # a random encoder, none named: the stem for the input size, as pretrain
        assert c.backbone is not None and c.input_size is not None  # the presets
        c = dataclasses.replace(
            c, backbone=backbone_for_input_size(c.backbone, c.input_size)
        )
    if c.random_stages and not check_encoder(str(c.backbone)).startswith(
        "lightly-derm-resnet"
    ):
        raise ConfigError(
            f"--random-stages is for ResNet encoders; backbone {c.backbone} is not one"
        )
    folds = c.folds if c.folds != 1 else None
    if folds is not None:
        if c.synthetic:
            raise ConfigError(
                "--folds needs --data: cross-validation splits a fixed set of ISIC "
                "pairs (the synthetic lesions have their own validation stream)"
            )
        if c.val_fraction is not None:
            raise ConfigError("--val-fraction and --folds exclude each other")
    if c.val_data is not None and (c.val_fraction is not None or folds):
        raise ConfigError("--val-data excludes --val-fraction and --folds")
    if c.out is None:
        run = (
            run_folder(c.checkpoint)
            if c.checkpoint is not None and not is_named_weights(c.checkpoint)
            else None
        )
        out = os.fspath(run / "segmentation") if run is not None else "segmentation"
    else:
        out = os.fspath(c.out)
    return dataclasses.replace(
        c,
        folds=folds,
        val_fraction=None if folds or c.val_data else (c.val_fraction or 0.2),
        out=out,
        **c.resolved_run_options(),
    ).check()


def _folds(
    pairs: Sequence[Any], k: int, seed: int
) -> list[tuple[list[Any], list[Any]]]:
    if len(pairs) < k:
        raise ValueError(f"{k} folds need at least {k} pairs, got {len(pairs)}")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    folds = []
    for i in range(k):
        held_out = set(order[i::k])
        folds.append(
            (
                [p for j, p in enumerate(pairs) if j not in held_out],
                [p for j, p in enumerate(pairs) if j in held_out],
            )
        )
    return folds


def segmentation_data(
    config: SegmentConfig,
) -> tuple[list[pl.LightningDataModule], str]:
    """One data module per fold (one without ``folds``) and a description of the split.

    The images are normalised as the checkpoint's weights expect
    (:func:`~lightly_derm.jobs.checkpoints.checkpoint_normalization`).
    """
    from lightly_derm.data import ISICSegmentationDataModule, find_isic_pairs

    normalize = (
        checkpoint_normalization(config.checkpoint)
        if config.checkpoint is not None
        else None
    )

    if config.synthetic:
        data = SyntheticSegmentationData(
            train_images=int(config.synthetic_images or 2),
            val_images=int(config.synthetic_val_images or 1),
            image_size=int(config.input_size or 64),
            label_fraction=float(config.label_fraction or 1.0),
            batch_size=int(config.batch_size or 16),
            num_workers=int(config.num_workers or 0),
            seed=int(config.seed or 0),
            normalize=normalize,
        )
        return [data], (
            f"{len(data.train_dataset)} training and "  # type: ignore[arg-type]
            f"{len(data.val_dataset)} validation images"  # type: ignore[arg-type]
        )
    pairs = find_isic_pairs(config.data)
    if config.limit is not None:
        pairs = sorted(pairs, key=lambda p: p.get("id", p["image"]))[: config.limit]
    test_pairs = find_isic_pairs(config.test_data) if config.test_data else None
    common: dict[str, Any] = {
        "label_fraction": config.label_fraction,
        "seed": config.seed,
        "image_size": config.input_size,
        "batch_size": config.batch_size,
        "num_workers": config.num_workers,
        "cache_rate": config.cache_rate,
        "test_pairs": test_pairs,
    }
    if normalize is not None:
        common["normalize"] = normalize
    if config.folds:
        modules: list[pl.LightningDataModule] = [
            ISICSegmentationDataModule(pairs=train, val_pairs=val, **common)
            for train, val in _folds(pairs, config.folds, int(config.seed or 0))
        ]
        split = f"{config.folds}-fold cross-validation over {len(pairs)} pairs"
    elif config.val_data:
        module = ISICSegmentationDataModule(
            pairs=pairs, val_pairs=find_isic_pairs(config.val_data), **common
        )
        modules = [module]
        split = (
            f"{len(module.all_train_pairs)} training pairs ({len(module.train_pairs)} "
            f"with masks used), {len(module.val_pairs)} validation pairs from "
            f"{config.val_data}"
        )
    else:
        assert config.val_fraction is not None  # resolved: set without folds
        module = ISICSegmentationDataModule(
            pairs=pairs, val_fraction=float(config.val_fraction), **common
        )
        modules = [module]
        split = (
            f"{len(module.all_train_pairs)} training pairs ({len(module.train_pairs)} "
            f"with masks used), {len(module.val_pairs)} validation pairs"
        )
    if test_pairs:
        split += f"; {len(test_pairs)} test pairs"
    return modules, split


def _first_predictions(
    model: pl.LightningModule, data: pl.LightningDataModule, count: int = 6
) -> dict[str, Any]:
    """``images``, ``labels``, ``probabilities`` and ``ids`` of the first validation images."""
    batch = next(iter(data.val_dataloader()))
    images, labels = batch["image"][:count], batch["label"][:count]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            probabilities = torch.sigmoid(model(images.to(device)).float()).cpu()
    finally:
        model.train(was_training)
    ids = [str(i) for i in batch.get("id", [])][:count]
    return {
        "images": images,
        "labels": labels,
        "probabilities": probabilities,
        "ids": ids,
    }


def _overlays(
    model: pl.LightningModule, data: pl.LightningDataModule, path: Path, count: int = 6
) -> Path:
    from lightly_derm.segmentation import render_overlays, save_overlays

    first = _first_predictions(model, data, count)
    grid = render_overlays(first["images"], first["labels"], first["probabilities"])
    return save_overlays(grid, path)


def plot_encoders(
    predictions: Mapping[str, Mapping[str, Any]],
    path: Path,
    normalize: Mapping[str, Sequence[float]],
    title: str | None = None,
) -> Path:
    """``plots/encoders.png``: the same validation images segmented by each encoder.

    One figure of :func:`~lightly_derm.segmentation.plot_encoder_comparison`: the image,
    the ground truth, and each encoder's prediction with its Dice.

    Args:
        predictions: Encoder label → the ``images``, ``labels`` and ``probabilities``
            of its model on the same first validation images.
        path: The PNG.
        normalize: The images' normalisation (to draw them).
        title: The figure title; default names the encoders.
    """
    from lightly_derm.segmentation import plot_encoder_comparison

    first = next(iter(predictions.values()))
    ids = first.get("ids") or None
    plot_encoder_comparison(
        first["images"],
        first["labels"],
        {label: p["probabilities"] for label, p in predictions.items()},
        path=path,
        title=title,
        image_names=ids if ids and len(ids) == len(first["images"]) else None,
        mean=list(normalize["mean"]),
        std=list(normalize["std"]),
    )
    return path


def finetune_segmentation(
    data: pl.LightningDataModule,
    checkpoint: str | os.PathLike[str] | None,
    backbone: str = "resnet50",
    out_dir: str | os.PathLike[str] = "segmentation",
    epochs: int = 20,
    lr: float = 1e-3,
    encoder_lr: float | None = None,
    freeze_encoder_epochs: int = 0,
    random_stages: int = 0,
    val_every_n_epochs: int = 1,
    seed: int = 0,
    accelerator: str = "auto",
    devices: int | str = "auto",
    strategy: str = "auto",
    precision: str | None = None,
    checkpoint_every_n_steps: int | None = 200,
    checkpoint_interval_s: float = 60.0,
    progress_bar: bool = True,
    tensorboard: bool = True,
    plots: bool = True,
    test: bool = False,
    name: str = "",
    verbose: bool = True,
    callbacks: Sequence[Callback] = (),
    normalize: Mapping[str, Sequence[float]] | None = None,
    overlays: bool = True,
    predictions: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Fine-tunes one :class:`~lightly_derm.segmentation.LesionSegmentation` and scores it.

    Seeds everything with ``seed`` first, so runs from different encoders see the same
    decoder initialisation and batches. Writes the run folder of
    :func:`~lightly_derm.jobs.build_trainer` (best checkpoint by ``val_dice``) and, with
    ``plots``, ``plots/loss.png`` and ``plots/overlays.png``.

    Args:
        data: A data module with training and validation (and, for ``test``, test)
            batches of ``image``/``label`` dictionaries.
        checkpoint: SSL weights for the encoder (any format
            :func:`~lightly_derm.segmentation.load_ssl_encoder` reads, or named weights
            such as ``"imagenet:efficientnet-lite0"``); ``None``: random.
        backbone: Any backbone with a FlexibleUNet encoder (:func:`check_encoder`).
        out_dir: The run folder.
        epochs: Training epochs.
        lr: Learning rate of decoder and head.
        encoder_lr: Learning rate of the encoder (default ``lr``).
        freeze_encoder_epochs: Epochs that train the decoder only.
        random_stages: Encoder stages that keep random init (see
            :class:`~lightly_derm.segmentation.LesionSegmentation`).
        val_every_n_epochs: Validate every N epochs (Lightning's
            ``check_val_every_n_epoch``); the final model is scored either way.
        seed: The seed.
        accelerator: Lightning's accelerator.
        devices: Lightning's devices.
        strategy: Lightning's strategy.
        precision: Lightning's precision (default: see
            :func:`~lightly_derm.jobs.resolve_precision`).
        checkpoint_every_n_steps: Also write ``last.ckpt`` every N steps.
        checkpoint_interval_s: Epoch-end writes of ``last.ckpt`` at most this often.
        progress_bar: Lightning's progress bar.
        tensorboard: TensorBoard logs.
        plots: Draw the loss curves and overlays.
        test: Also run ``Trainer.test`` (the data module needs test batches).
        name: Names the run in printed lines.
        verbose: Print the transfer report and the scores.
        normalize: The normalisation of ``data``'s images (to draw them); default:
            :func:`~lightly_derm.jobs.checkpoints.checkpoint_normalization`.
        overlays: With ``plots``, also draw ``plots/overlays.png``.
        predictions: A dict to fill with the ``images``, ``labels``,
            ``probabilities`` and ``ids`` of the first validation images (for a
            comparison of encoders, :func:`plot_encoders`).
        callbacks: More Lightning callbacks.

    Returns:
        ``val_dice``, ``val_jaccard``, ``val_jaccard_thresholded`` of the final model
        (and the ``test_`` scores with ``test``).
    """
    from lightly_derm.segmentation import LesionSegmentation

    encoder = check_encoder(backbone)
    run_dir = Path(out_dir)
    pl.seed_everything(seed, workers=True, verbose=False)
    named = checkpoint is not None and is_named_weights(os.fspath(checkpoint))
    if normalize is None:
        normalize = (
            checkpoint_normalization(checkpoint)
            if checkpoint is not None
            else input_normalization(None)
        )
    model = LesionSegmentation(
        backbone=encoder,
        pretrained=(
            None
            if checkpoint is None
            else (os.fspath(checkpoint) if named else Path(checkpoint))
        ),
        image_mean=tuple(normalize["mean"]),
        image_std=tuple(normalize["std"]),
        lr=lr,
        encoder_lr=encoder_lr,
        freeze_encoder_epochs=freeze_encoder_epochs,
        random_stages=random_stages,
    )
    label = f"[{name}] " if name else ""
    if model.transfer_report is not None:
        say(
            "segment",
            verbose,
            f"{label}encoder from {checkpoint}: {model.transfer_report}",
        )
    steps = max(1, len(data.train_dataloader()))
    trainer = build_trainer(
        run_dir,
        max_epochs=epochs,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        precision=precision,
        monitor="val_dice",
        mode="max",
        checkpoint_every_n_steps=checkpoint_every_n_steps,
        checkpoint_interval_s=checkpoint_interval_s,
        log_every_n_steps=max(1, min(50, steps)),
        progress_bar=progress_bar,
        tensorboard=tensorboard,
        callbacks=callbacks,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=val_every_n_epochs,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(model, datamodule=data)
        (scores,) = trainer.validate(model, datamodule=data, verbose=False)
        if test:
            (test_scores,) = trainer.test(model, datamodule=data, verbose=False)
            scores = {**scores, **test_scores}
    fields = SCORES + (TEST_SCORES if test else ())
    result = {k: float(scores[k]) for k in fields if k in scores}
    say(
        "segment",
        verbose,
        label + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in result.items()),
    )
    if plots and trainer.is_global_zero:
        for what, draw in (
            (
                "the loss curves",
                lambda: plot_metrics(
                    run_dir / "metrics.csv",
                    run_dir / "plots" / PLOT_FILES["metrics"],
                    title=f"lesion segmentation{', ' + name if name else ''}",
                ),
            ),
            (
                "the overlays",
                lambda: (
                    _overlays(model, data, run_dir / "plots" / PLOT_FILES["overlays"])
                    if overlays
                    else None
                ),
            ),
        ):
            try:
                draw()
            except Exception as exc:  # plots must not fail the job
                warnings.warn(f"could not draw {what}: {exc}", stacklevel=2)
    if predictions is not None and trainer.is_global_zero:
        predictions.update(_first_predictions(model, data))
    return result


def _encoder_title(label: str, checkpoint: str | None) -> str:
    """A column title of the comparison: what the encoder started from."""
    if label != "pretrained" or checkpoint is None:
        return label.replace("-", " ")
    if is_named_weights(checkpoint):
        source = checkpoint.split(":")[0]
        return f"{'ImageNet' if source.lower() == 'imagenet' else source} init"
    method = (run_config(checkpoint) or {}).get("method")
    return f"SSL ({method})" if method else "pretrained"


def segment(
    config: SegmentConfig | Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
    verbose: bool = True,
    callbacks: Sequence[Callback] = (),
    **options: Any,
) -> dict[str, Any]:
    """Fine-tunes lesion segmentation from an SSL checkpoint and reports its scores.

    For each encoder (``pretrained`` from ``checkpoint``; ``random-init`` without one or
    with ``baseline``) and each fold, ``out/<encoder>/[fold_<k>/]`` gets the run folder
    of :func:`~lightly_derm.jobs.build_trainer` (``checkpoints/last.ckpt``,
    ``checkpoints/best.ckpt`` by ``val_dice``, ``metrics.csv``, ``tensorboard/``) and
    ``plots/loss.png`` and ``plots/overlays.png`` (image, ground truth in green,
    prediction in red, for the first validation images). ``out`` gets
    ``results.json``, ``results.md`` and ``config.yaml``. The scores are those of the
    final model on the validation images (no selection on them), averaged over folds.

    ``out`` is a run folder (:class:`~lightly_derm.jobs.run_folder.RunFolder`): locked
    while the job runs (a second job there is refused, naming the holder), with a record
    of what the job wrote; ``overwrite`` deletes only what that record lists, so files
    of your own in ``out`` (also inside ``pretrained/``) stay.

    Args:
        config: A :class:`SegmentConfig` or a mapping of its options.
        overwrite: Replace the results of an earlier run in ``out`` (only the files it
            recorded writing).
        verbose: Print progress and the table.
        callbacks: More Lightning callbacks for every fine-tuning run.
        **options: Options of :class:`SegmentConfig`; they override ``config``.

    Returns:
        The content of ``results.json``: ``checkpoint``, ``backbone``, ``input_size``,
        ``epochs``, ``data`` (source, split, label fraction, folds), ``results`` (per
        encoder, ``"pretrained"`` and/or ``"random-init"``: the mean ``val_dice``,
        ``val_jaccard``, ``val_jaccard_thresholded`` (and ``test_*``), ``std`` over
        folds, and the per-fold scores under ``folds``) and ``out``.

    Raises:
        FileNotFoundError: The checkpoint or data do not exist, or images lack masks.
        ValueError: A bad option, checkpoint weights that do not fit the encoder.
        ConfigError: Results already in ``out`` (without ``overwrite``), files at the
            job's output names that no run recorded, another job running in ``out``.
    """
    requested = SegmentConfig.create(config, options, "segment")
    cfg = resolve_segment_config(requested)
    out = check_out(cfg.out)
    encoders: list[tuple[str, str | Path | None]] = []
    if cfg.checkpoint is not None:
        encoders.append(
            (
                "pretrained",
                cfg.checkpoint
                if is_named_weights(cfg.checkpoint)
                else find_checkpoint(cfg.checkpoint),
            )
        )
    if cfg.checkpoint is None or cfg.baseline:
        encoders.append(("random-init", None))
    folds = int(cfg.folds or 1)
    runs = [
        label + (f"/fold_{fold}" if folds > 1 else "")
        for label, _ in encoders
        for fold in range(folds)
    ]
    run: RunFolder | None = None
    if is_main_process():
        subfolders = [CHECKPOINT_DIR]
        subfolders += ["plots"] if cfg.plots else []
        subfolders += [TENSORBOARD_DIR] if cfg.tensorboard else []
        run = RunFolder(out, job="segment").start(
            [*RESULT_FILES, *(f"{r}/{f}" for r in runs for f in FINETUNE_FILES)],
            marker="results.json",
            overwrite=overwrite,
            what="segmentation results",
            folders=[
                # plots/encoders.png compares two encoders
                *(["plots"] if cfg.plots and len(encoders) > 1 else []),
                *dict.fromkeys(label for label, _ in encoders),
                *runs,
                *(f"{r}/{sub}" for r in runs for sub in subfolders),
            ],
        )
    with run if run is not None else contextlib.nullcontext():
        return _segment(
            cfg, out, encoders, verbose, callbacks, requested.backbone is None
        )


def _segment(
    cfg: SegmentConfig,
    out: Path,
    encoders: Sequence[tuple[str, str | Path | None]],
    verbose: bool,
    callbacks: Sequence[Callback],
    default_backbone: bool,
) -> dict[str, Any]:
    modules, split = segmentation_data(cfg)
    normalize = (
        checkpoint_normalization(cfg.checkpoint)
        if cfg.checkpoint is not None
        else input_normalization(None)
    )
    source = SYNTHETIC_SOURCE + " with masks" if cfg.synthetic else str(cfg.data)
    say("segment", verbose, f"data: {source}; {split}")
    if cfg.checkpoint is None:
        note = (
            stem_note(str(cfg.backbone), int(cfg.input_size or 0))
            if default_backbone
            else ""
        )
        say(
            "segment",
            verbose,
            f"no --checkpoint: the {cfg.backbone} encoder starts from random weights"
            + (f"; {note}" if note else ""),
        )
    results: dict[str, Any] = {}
    compare = bool(cfg.plots) and len(encoders) > 1
    first: dict[str, dict[str, Any]] = {label: {} for label, _ in encoders}
    for label, checkpoint in encoders:
        runs: list[dict[str, float]] = []
        for fold, data in enumerate(modules):
            runs.append(
                finetune_segmentation(
                    data,
                    checkpoint,
                    backbone=str(cfg.backbone),
                    out_dir=out / label / (f"fold_{fold}" if len(modules) > 1 else ""),
                    epochs=int(cfg.epochs or 1),
                    lr=float(cfg.lr or 1e-3),
                    encoder_lr=cfg.encoder_lr,
                    freeze_encoder_epochs=int(cfg.freeze_encoder_epochs or 0),
                    random_stages=int(cfg.random_stages or 0),
                    val_every_n_epochs=int(cfg.val_every_n_epochs),
                    seed=int(cfg.seed or 0),
                    accelerator=str(cfg.accelerator),
                    devices=cfg.devices,  # type: ignore[arg-type]
                    strategy=str(cfg.strategy),
                    precision=cfg.precision,
                    checkpoint_every_n_steps=cfg.checkpoint_every_n_steps,
                    checkpoint_interval_s=cfg.checkpoint_interval_s,
                    progress_bar=bool(cfg.progress_bar),
                    tensorboard=bool(cfg.tensorboard),
                    plots=bool(cfg.plots),
                    test=bool(cfg.test_data),
                    name=f"{label}{f' fold {fold}' if len(modules) > 1 else ''}",
                    verbose=verbose,
                    callbacks=callbacks,
                    normalize=normalize,
                    overlays=not compare,
                    predictions=first[label] if compare and fold == 0 else None,
                )
            )
        summary: dict[str, Any] = {
            k: float(np.mean([r[k] for r in runs])) for k in runs[0]
        }
        if len(runs) > 1:
            summary["std"] = {
                k: float(np.std([r[k] for r in runs], ddof=1)) for k in runs[0]
            }
        summary["folds"] = runs
        results[label] = summary
    if compare and is_main_process() and all(first.values()):
        try:
            plot_encoders(
                {_encoder_title(k, cfg.checkpoint): v for k, v in first.items()},
                out / "plots" / "encoders.png",
                normalize,
                title=f"{cfg.backbone} encoders"
                + (f" (fold 0 of {len(modules)})" if len(modules) > 1 else "")
                + ": validation images, ground truth, each encoder's prediction",
            )
        except Exception as exc:  # plots must not fail the job
            warnings.warn(f"could not draw the encoder comparison: {exc}", stacklevel=2)
    report: dict[str, Any] = {
        "checkpoint": cfg.checkpoint,
        "backbone": cfg.backbone,
        "input_size": cfg.input_size,
        "image_size": cfg.input_size,  # the old name of input_size, for one release
        "epochs": cfg.epochs,
        "data": {
            "source": source,
            "synthetic": cfg.synthetic,
            "split": split,
            "label_fraction": cfg.label_fraction,
            "folds": cfg.folds,
            "val_data": cfg.val_data,
            "test_data": cfg.test_data,
        },
        "results": results,
        "out": str(out),
    }
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / CONFIG_FILE)
        (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
        table = segmentation_markdown(report)
        (out / "results.md").write_text(table)
        if verbose:
            print("\n" + table)
        say(
            "segment",
            verbose,
            f"wrote {out}/ (results.json, results.md, config.yaml, "
            f"{', '.join(label + '/' for label, _ in encoders)})",
        )
    return report


def segmentation_markdown(report: Mapping[str, Any]) -> str:
    """The report of :func:`segment` as a Markdown table with a header paragraph."""
    data = report["data"]
    results = report["results"]
    first = next(iter(results.values()))
    keys = [k for k in first if k not in ("std", "folds")]
    names = {
        "val_dice": "Dice",
        "val_jaccard": "Jaccard",
        "val_jaccard_thresholded": "thresholded Jaccard (ISIC 2017)",
        "test_dice": "test Dice",
        "test_jaccard": "test Jaccard",
        "test_jaccard_thresholded": "test thresholded Jaccard",
    }
    lines = [
        "# Lesion segmentation (MONAI FlexibleUNet)",
        "",
        f"- encoder: {report['backbone']}"
        + (
            f", pretrained from `{report['checkpoint']}`"
            if report["checkpoint"]
            else ""
        ),
        f"- data: {data['source']}; {data['split']}; label fraction "
        f"{data['label_fraction']:g}",
        f"- {report['epochs']} epochs at {report['input_size']} px; validation scores of "
        "the final model" + (", mean ± std over folds" if data.get("folds") else ""),
        "",
        "| encoder | " + " | ".join(names.get(k, k) for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for label, summary in results.items():
        cells = []
        for key in keys:
            cell = f"{summary[key]:.4f}"
            if "std" in summary:
                cell += f" ± {summary['std'][key]:.4f}"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = [
    "ENCODERS",
    "SegmentConfig",
    "SyntheticSegmentationData",
    "resolve_segment_config",
    "finetune_segmentation",
    "segment",
    "segmentation_data",
    "segmentation_markdown",
]
