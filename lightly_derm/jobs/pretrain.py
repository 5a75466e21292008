"""The pretraining job: any registered method on a data path or the built-in synthetic lesions.

Builds on the plugin registry (``registry.create("method", ...)``),
:func:`~lightly_derm.data.make_dataset`, :class:`~lightly_derm.data.SSLDataModule` (the
method's views over the data, resumable batches, GPU views after the transfer) and the
Trainer of :func:`~lightly_derm.jobs.build_trainer`. What the
job adds: defaults that depend on the data (a CPU-sized demo on synthetic data, the
methods' own settings on real data), a run folder with everything a person looks at,
and ``resume`` that refuses to continue a run under a different configuration.

Example:
    >>> from lightly_derm.jobs import pretrain
    >>> result = pretrain(method="gravis", out="runs/demo")  # doctest: +SKIP
    >>> result.backbone_path  # doctest: +SKIP
    PosixPath('runs/demo/backbone.pt')
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import Dataset, Subset

from lightly_derm.callbacks import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    EncoderChange,
    ResumeHint,
)
from lightly_derm.data import ResumableDataLoader, SSLDataModule
from lightly_derm.data.ssl_datamodule import TransformedDataset
from lightly_derm.errors import CheckpointError, ConfigError, DataError
from lightly_derm.jobs.checkpoints import BACKBONE_FILE, CONFIG_FILE
from lightly_derm.jobs.config import (
    TrainConfig,
    check_kwargs,
    load_yaml_mapping,
    option,
)
from lightly_derm.jobs.console import flag, is_main_process, say
from lightly_derm.jobs.plots import (
    PLOT_FILES,
    TrainingPlots,
    plot_embedding,
    plot_metrics,
)
from lightly_derm.jobs.run_folder import RunFolder, check_out, holds_run, read_record
from lightly_derm.jobs.trainer import (
    CHECKPOINT_DIR,
    TENSORBOARD_DIR,
    build_trainer,
)
from lightly_derm.methods import SSLMethod
from lightly_derm.transforms import eval_transform
from lightly_derm.utils.validation import Range, check_choice

#: Method arguments of the demo (synthetic data only) where the methods' own defaults —
#: tuned for real runs of hundreds of epochs — would show nothing in 32 steps. Applied
#: when the method is created, under the user's ``method_args``. Measured:
#: benchmarks/results/demo_defaults_cpu.md.
DEMO_METHOD_ARGS: dict[str, dict[str, Any]] = {"gravis": {"lr": 0.05}}
#: The key of the data's fingerprint in a run's ``config.yaml`` (see :func:`data_fingerprint`).
FINGERPRINT_KEY = "data_fingerprint"
#: Options that must not change when a run is resumed.
RESUME_FIXED: tuple[str, ...] = (
    "method",
    "method_args",
    "data",
    "labels",
    "backbone",
    "backbone_weights",
    "input_size",
    "epochs",
    "max_steps",
    "batch_size",
    "seed",
    "decode_size",
    "limit",
    "synthetic_images",
    "synthetic_classes",
)
#: Files a run writes at fixed names (a folder holding one of them that no run of
#: lightly-derm recorded is refused: the file is the user's).
RUN_FILES: tuple[str, ...] = (
    CONFIG_FILE,
    "metrics.csv",
    "hparams.yaml",
    BACKBONE_FILE,
    "summary.json",
    f"{CHECKPOINT_DIR}/{LAST_CHECKPOINT}",
    f"{CHECKPOINT_DIR}/{BEST_CHECKPOINT}",
    *(f"plots/{name}" for name in PLOT_FILES.values()),
)


@dataclasses.dataclass
class PretrainConfig(TrainConfig):
    """The options of :func:`pretrain` (the ``lightly-derm pretrain`` command line).

    Options that are ``None`` take the value of the preset (:attr:`PRESETS`: ``demo``
    without ``data``, ``data`` with it) or one derived as described.

    Attributes:
        method: A registered ``method`` plugin (``lightly-derm plugins --kind method``).
        method_args: Keyword arguments of the method's constructor, checked against
            its signature (``lr=0.01 grids=[8,4,2]`` on the command line, values in
            YAML).
        data: The images (see :func:`~lightly_derm.data.make_dataset`): an image folder,
            an ISIC folder, a MedMNIST/DermaMNIST ``.npz`` or JPEG export. Not set: the
            built-in synthetic lesions (generated, deterministic by seed; not patient
            data) and the demo preset.
        labels: A labels CSV for an image folder (optional for pretraining; used for
            the embedding plot and AP-BYOL's same-label rate; required by ``classify``
            methods).
        backbone: Any backbone name of :func:`~lightly_derm.models.build_backbone` (a
            torchvision ResNet, also ``resnet18-cifar``; ``monai:efficientnet-b0``;
            ``timm:convnext_tiny``; ``efficientnet-lite0``); not set: the method's
            default. Not set and without ``backbone_weights``, a ResNet default gets the
            small-image stem below 64 px input (``resnet18`` → ``resnet18-cifar``,
            :func:`~lightly_derm.models.backbone_for_input_size`); a name given is
            used as it is.
        backbone_weights: A local checkpoint to start the backbone from, or named
            weights (``imagenet:efficientnet-lite0``, the images then get their input
            scaling); never downloaded.
        input_size: The side of the views in pixels.
        epochs: Training epochs.
        max_steps: Stop after this many optimizer steps (not set: no limit).
        batch_size: Images per step per device (lowered to the number of images when
            the data has fewer); not set: the preset's (32; the demo's 16: more
            steps in the same time, which the short demo needs to learn).
        strict: Unreadable images are an error instead of being skipped with a warning.
        decode_size: Decode JPEGs at reduced size, the shorter side at least this (0:
            full size); not set: twice the input size.
        augment: Where the views are made: ``cpu`` (per image in the DataLoader
            workers) or ``gpu`` (batched on the device after the transfer; the workers
            only decode and resize); the method's ``augment``. Not set: ``cpu``.
        cache_images: With ``augment: gpu``: decode and resize every image once and
            keep it in memory (:class:`~lightly_derm.data.DecodedImageCache`; small
            datasets).
        limit: Use only the first N images (tiny runs; the data's own order, which
            is sorted by path for image folders, so always the same images), as
            ``evaluate``'s ``limit``.
        synthetic_images: Synthetic data: the number of images.
        synthetic_classes: Synthetic data: the number of classes (1-5).
        log_every_n_steps: Logging interval; not set: ``min(50, steps per epoch)``.
        embedding_images: At most this many images in the embedding plot (0: none).
        encoder_change: Report how far each backbone stage's filters turned
            (:class:`~lightly_derm.callbacks.EncoderChange`, in ``summary.json``); it
            keeps a copy of the backbone's starting weights in every checkpoint.
        out: The run folder; not set: ``runs/<method>``.
    """

    #: ``demo``: the built-in synthetic lesions, a minute or two on a laptop CPU
    #: (measured in docs/cli.rst); ``data``: real data (the methods' own
    #: hyperparameters apply on top).
    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "demo": {
            "backbone": "resnet18",
            "input_size": 64,
            "epochs": 8,
            "batch_size": 16,
            "num_workers": 0,
            "synthetic_images": 256,
            "synthetic_classes": 3,
        },
        "data": {"input_size": 224, "epochs": 100, "batch_size": 32},
    }

    method: str = "gravis"
    method_args: dict[str, Any] = option(factory=dict)
    data: str | None = None
    labels: str | None = option(needs="data")
    backbone: str | None = None
    backbone_weights: str | None = None
    input_size: int | None = option(rule=Range.int(8))
    epochs: int | None = option(rule=Range.int(1))
    max_steps: int | None = option(rule=Range.int(1))
    batch_size: int | None = option(rule=Range.int(2))
    strict: bool = False
    decode_size: int | None = option(rule=Range.int(0))
    augment: Literal["cpu", "gpu"] | None = None
    cache_images: bool = False
    limit: int | None = option(rule=Range.int(2))
    synthetic_images: int | None = option(rule=Range.int(2), only="demo")
    synthetic_classes: int | None = option(rule=Range.int(1), only="demo")
    log_every_n_steps: int | None = option(rule=Range.int(1))
    embedding_images: int = option(1000, Range.int(0))
    encoder_change: bool = True

    def resolved(self) -> PretrainConfig:
        """Every default filled in and every option checked (see :func:`resolve_config`)."""
        return resolve_config(self)

    @property
    def synthetic(self) -> bool:
        """Whether the run uses the built-in synthetic lesions."""
        return self.data is None

    @classmethod
    def normalize(cls, mapping: Mapping[str, Any], source: str) -> dict[str, Any]:
        """Also reads ``method: {name: gravis, <argument>: ...}`` (name and arguments)."""
        values = dict(mapping) if isinstance(mapping, Mapping) else mapping
        if isinstance(values, dict):
            values.pop(FINGERPRINT_KEY, None)  # a fact of the run, not an option
        method = values.get("method") if isinstance(values, dict) else None
        if isinstance(method, Mapping):
            method = dict(method)
            if "name" not in method:
                raise ConfigError(
                    f"{source}: a method mapping needs a 'name' (and the method's "
                    "arguments beside it)"
                )
            values["method"] = method.pop("name")
            values["method_args"] = {**method, **dict(values.get("method_args") or {})}
        return super().normalize(values, source)


@dataclasses.dataclass
class PretrainResult:
    """What :func:`pretrain` produced.

    Attributes:
        out_dir: The run folder.
        config: The effective configuration (also in ``config.yaml``).
        model: The trained method (a LightningModule).
        trainer: The Trainer.
        last_checkpoint: ``checkpoints/last.ckpt``.
        best_checkpoint: ``checkpoints/best.ckpt`` (lowest epoch-mean training loss), or
            ``None``.
        backbone_path: ``backbone.pt``: the backbone state dict with torchvision keys.
        summary: The facts of ``summary.json`` (steps, losses, time, data).
        plots: The PNG files written.
    """

    out_dir: Path
    config: PretrainConfig
    model: pl.LightningModule
    trainer: pl.Trainer
    last_checkpoint: Path
    best_checkpoint: Path | None
    backbone_path: Path | None
    summary: dict[str, Any]
    plots: list[Path]


# ----------------------------------------------------------------------- checks
def check_backbone_name(name: Any) -> str:
    """Raises :class:`ConfigError` unless lightly-derm builds a backbone called ``name``.

    Any name :func:`lightly_derm.models.check_backbone_name` accepts: a torchvision
    ResNet (also ``"-cifar"``), ``"monai:efficientnet-bN"``, ``"timm:<model>"``,
    ``"efficientnet-lite0"``. Returns the name as given.
    """
    from lightly_derm.models.backbones import check_backbone_name as check

    if not isinstance(name, str):
        raise ConfigError(f"backbone must be a name, got {name!r}")
    try:
        check(name)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    return name


def check_backbone_weights(weights: Any, backbone: str) -> None:
    """Raises :class:`ConfigError` unless ``weights`` is an existing file or named weights.

    Named weights (``"imagenet:efficientnet-lite0"``) must fit ``backbone``.
    """
    from lightly_derm.models.backbones import check_backbone_name as check
    from lightly_derm.models.imagenet import NAMED_WEIGHTS, named_weights

    if weights is None or Path(weights).expanduser().exists():
        return
    named = named_weights(str(weights))
    if named is None:
        raise ConfigError(
            f"backbone_weights {str(weights)!r} is neither a file nor named weights "
            f"({', '.join(NAMED_WEIGHTS)})"
        )
    if check(named.backbone) != check(backbone):
        raise ConfigError(
            f"backbone_weights {named.name!r} fit the backbone {named.backbone!r}, not "
            f"{backbone!r}; pass {flag('backbone', named.backbone)}"
        )


def method_info(name: str) -> Any:
    """The registry entry of a ``method`` plugin that pretrains or classifies.

    Raises:
        UnknownComponentError: No such method (the message lists the registered ones).
        ConfigError: The plugin declares another task.
    """
    from lightly_derm import registry

    info = registry.info("method", name)
    task = info.metadata.get("task")
    if task not in ("pretrain", "classify"):
        raise ConfigError(
            f"method {info.name!r} declares task {task!r}; pretrain runs methods with "
            "task 'pretrain' or 'classify'"
        )
    return info


def resolve_config(config: PretrainConfig) -> PretrainConfig:
    """Fills every default of ``config`` and checks the options (no data is read).

    The preset fills the options that are not set; the others that are not set are
    derived from the method and the input size.

    Raises:
        UnknownComponentError: The method is not registered.
        FileNotFoundError: The data do not exist.
        ConfigError: An option is out of range or a method argument unknown (named).
    """
    c = config.with_preset().check()
    info = method_info(c.method)
    factory = info.load()
    accepts = inspect.signature(factory).parameters
    method_args = dict(c.method_args)
    check_kwargs(
        factory,
        method_args,
        f"method {info.name!r}",
        reserved={
            "backbone": flag("backbone", "NAME"),
            "backbone_weights": flag("backbone_weights", "PATH"),
        },
    )
    if c.data is not None and not Path(c.data).expanduser().exists():
        raise FileNotFoundError(f"data not found: {c.data}")
    backbone = c.backbone
    if backbone is None:  # the method's default
        default = accepts.get("backbone")
        backbone = default.default if default is not None else "resnet50"
    if config.backbone is None and c.backbone_weights is None:
        # not named: the "-cifar" stem for small images (backbone_for_input_size)
        from lightly_derm.models.backbones import backbone_for_input_size

        backbone = backbone_for_input_size(str(backbone), int(c.input_size or 224))
    check_backbone_weights(c.backbone_weights, str(check_backbone_name(backbone)))
    augment = c.augment or method_args.pop("augment", None) or "cpu"
    check_choice("augment", augment, ("cpu", "gpu"))
    if augment == "gpu" and "augment" not in accepts:
        raise ConfigError(
            f"method {info.name!r} has no GPU view pipeline (no 'augment' argument); "
            f"use {flag('augment', 'cpu')}"
        )
    if c.cache_images and augment != "gpu":
        raise ConfigError(
            f"{flag('cache_images')} keeps decoded canvases for {flag('augment', 'gpu')}; "
            f"with {flag('augment', 'cpu')} every epoch needs new random crops of the "
            "full image"
        )
    assert c.input_size is not None  # every preset sets it
    resolved = dataclasses.replace(
        c,
        method=info.name,
        method_args=method_args,
        data=_absolute(c.data),
        labels=_absolute(c.labels),
        backbone_weights=_absolute(c.backbone_weights),
        backbone=check_backbone_name(backbone),
        **c.resolved_run_options(),
        augment=augment,
        decode_size=c.decode_size if c.decode_size is not None else 2 * c.input_size,
        out=os.fspath(c.out) if c.out is not None else f"runs/{info.name}",
    )
    return resolved.check()


def _absolute(path: str | None) -> str | None:
    """``path`` made absolute (so a run resumed from elsewhere reads the same files).

    Named weights (``imagenet:efficientnet-lite0``) are names, not paths: kept as given.
    """
    from lightly_derm.models.imagenet import named_weights

    if path is None or named_weights(str(path)) is not None:
        return path
    return os.fspath(Path(path).expanduser().absolute())


def data_fingerprint(config: PretrainConfig) -> dict[str, Any] | None:
    """The file count, bytes and a hash of the names and sizes of the data and labels.

    ``None`` for the synthetic data. Links are not followed into folders (no loops);
    the hash is over ``relative name, size`` lines, so renaming, adding, removing or
    resizing a file changes it while reading no image.
    """
    import hashlib

    if config.data is None:
        return None
    digest = hashlib.sha256()
    count = total = 0
    for source in (config.data, config.labels):
        if source is None:
            continue
        root = Path(source)
        if root.is_dir():
            files = sorted(
                Path(folder, name)
                for folder, _, names in os.walk(root)
                for name in names
            )
        else:
            files = [root]
        for path in files:
            try:
                size = path.stat().st_size
            except OSError:
                continue
            name = path.relative_to(root).as_posix() if root.is_dir() else path.name
            digest.update(f"{name}\t{size}\n".encode())
            count += 1
            total += size
    return {"files": count, "bytes": total, "sha256": digest.hexdigest()}


def _check_fingerprint(
    out: Path, saved: Mapping[str, Any], cfg: PretrainConfig
) -> None:
    then = saved.get(FINGERPRINT_KEY)
    if not isinstance(then, Mapping):
        return  # a run of an earlier lightly-derm: nothing to compare
    now = data_fingerprint(cfg)
    if now is None or now.get("sha256") == then.get("sha256"):
        return
    raise DataError(
        f"cannot resume {out}: the data at {cfg.data} differ from the run's "
        f"({then.get('files')} files, {then.get('bytes')} bytes when it started; "
        f"{now['files']} files, {now['bytes']} bytes now); resume on the same data, "
        f"or start a new run (another {flag('out', 'DIR')})"
    )


def save_run_config(cfg: PretrainConfig, path: Path) -> None:
    """Writes ``config.yaml``: the options and the data's fingerprint (:func:`data_fingerprint`)."""
    text = cfg.to_yaml()
    fingerprint = data_fingerprint(cfg)
    if fingerprint is not None:
        import yaml

        text += yaml.safe_dump({FINGERPRINT_KEY: fingerprint}, sort_keys=False)
    path.write_text(text)


def _parse_devices(value: Any) -> int | str:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def resume_config(
    config: PretrainConfig, given: Mapping[str, Any] | None = None
) -> PretrainConfig:
    """The configuration of the run in ``config.out``, with the options given now.

    Options of :data:`RESUME_FIXED` must equal the saved ones; the others (hardware,
    logging, plots) may change.

    Args:
        config: The options given now.
        given: The names and values someone set (default: the options of ``config``
            that differ from the defaults).

    Raises:
        FileNotFoundError: ``out`` holds no run or no ``checkpoints/last.ckpt``.
        ConfigError: A fixed option differs (named, with both values).
    """
    out = check_out(config.out)
    saved_path = out / CONFIG_FILE
    if not saved_path.is_file():
        raise FileNotFoundError(
            f"nothing to resume: {out} holds no lightly-derm pretraining run "
            f"(no {CONFIG_FILE})"
        )
    if not (out / CHECKPOINT_DIR / LAST_CHECKPOINT).is_file():
        raise FileNotFoundError(
            f"nothing to resume in {out}: no {CHECKPOINT_DIR}/{LAST_CHECKPOINT} (the "
            "run stopped before its first checkpoint); start it again without "
            f"{flag('resume')} (what it left is replaced)"
        )
    saved = PretrainConfig.load(saved_path)
    given = (
        PretrainConfig.normalize(given, "options")
        if given is not None
        else config.given()
    )
    given.pop("out", None)
    for key in RESUME_FIXED:
        if key not in given:
            continue
        now, then = given[key], getattr(saved, key)
        if key == "method_args":
            now = {**(then or {}), **now}
        if key == "devices":
            now, then = _parse_devices(now), _parse_devices(then)
        if key in ("data", "labels", "backbone_weights") and now is not None:
            same = now == then or (
                then is not None
                and Path(now).expanduser().resolve()
                == Path(then).expanduser().resolve()
            )
        else:
            same = now == then
        if not same:
            raise ConfigError(
                f"cannot resume {out} with {key}={now!r}: the run was started with "
                f"{key}={then!r}; resume without it, or start a new run (another "
                f"{flag('out', 'DIR')})"
            )
    merged = saved.updated(given, source=str(saved_path))
    merged.out = os.fspath(out)
    resolved = resolve_config(merged)
    _check_fingerprint(out, load_yaml_mapping(saved_path), resolved)
    return resolved


def resume_command(out: Path) -> str:
    """The command (or call, from Python) that continues the run in ``out``."""
    if flag("resume") == "--resume":
        return f"lightly-derm pretrain --out {out} --resume"
    return f"pretrain(out={os.fspath(out)!r}, resume=True)"


def evaluate_command(out: Path) -> str:
    """The command (or call, from Python) that evaluates the run in ``out``."""
    if flag("checkpoint") == "--checkpoint":
        return f"lightly-derm evaluate --checkpoint {out}"
    return f"evaluate(checkpoint={os.fspath(out)!r})"


def restart_command(
    out: Path,
    method_args: Mapping[str, Any] | None = None,
    saved: Mapping[str, Any] | None = None,
) -> str:
    """The command (or call) that starts the run in ``out`` again from its ``config.yaml``.

    Args:
        out: The run folder.
        method_args: Method arguments to change.
        saved: The run's method arguments (kept; the command line merges them itself).
    """
    config = out / CONFIG_FILE
    changed = dict(method_args or {})
    if flag("overwrite") == "--overwrite":
        extra = " ".join(f"{k}={v}" for k, v in changed.items())
        return f"lightly-derm pretrain --config {config} --overwrite" + (
            f" --method-args {extra}" if extra else ""
        )
    call = f"pretrain(PretrainConfig.load({os.fspath(config)!r}), overwrite=True"
    if changed:
        call += f", method_args={ ({**dict(saved or {}), **changed})!r}"
    return call + ")"


def non_finite_advice(cfg: PretrainConfig, out: Path) -> str:
    """The non-finite-loss guard's advice: start again with a tenth of the learning rate."""
    lr: Any = {**_demo_method_args(cfg), **dict(cfg.method_args or {})}.get("lr")
    if lr is None:
        default = inspect.signature(method_info(str(cfg.method)).load()).parameters.get(
            "lr"
        )
        lr = default.default if default is not None else None
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0:
        return "Lower the learning rate and start again: " + restart_command(
            out, {"lr": float(f"{lr / 10:.3g}")}, cfg.method_args
        )
    return (
        "Lower the learning rate (a method argument) and start again: "
        + restart_command(out)
    )


def _resume_state(path: Path, out: Path) -> tuple[int | None, int | None]:
    """``(global_step, logging step)`` stored in a Lightning checkpoint.

    Raises:
        CheckpointError: The checkpoint cannot be read (named, with the reason and
            the command that starts the run again).
    """
    from lightly_derm.models.checkpoints import load_checkpoint_file

    try:
        checkpoint = load_checkpoint_file(path)
    except ValueError as exc:
        raise CheckpointError(
            f"cannot resume {out}: {exc}; start the run again with: "
            f"{restart_command(out)}"
        ) from exc
    step = checkpoint.get("global_step")
    try:
        log_step = checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"][
            "_batches_that_stepped"
        ]
    except (KeyError, TypeError):
        log_step = None
    return (
        int(step) if step is not None else None,
        int(log_step) if log_step is not None else None,
    )


# ----------------------------------------------------------------------- data
def pretrain_dataset(
    config: PretrainConfig, transform: Any, split: str = "train"
) -> Dataset[Any]:
    """The dataset of a resolved configuration, with ``transform``."""
    from lightly_derm.data import make_dataset

    assert config.input_size is not None
    return make_dataset(
        config.data,
        config.labels,
        transform=transform,
        strict=bool(config.strict),
        split=split,
        decode_size=config.decode_size or None,
        num_images=config.synthetic_images or 1,
        image_size=max(config.input_size, 16),
        num_classes=config.synthetic_classes or 1,
        seed=config.seed or 0,
    )


def with_transform(dataset: Dataset[Any], transform: Any) -> Dataset[Any]:
    """A shallow copy of a lightly-derm dataset with another ``transform`` (files are not read again)."""
    if not hasattr(dataset, "transform"):
        raise TypeError(
            f"{type(dataset).__name__} has no transform attribute to replace"
        )
    copied = copy.copy(dataset)
    copied.transform = transform  # type: ignore[attr-defined]
    return copied


def _describe_data(
    config: PretrainConfig, dataset: Dataset[Any], used: Dataset[Any]
) -> str:
    """What the data is: kind, images (those used of how many), labels."""
    classes = getattr(dataset, "classes", None) or []
    count, total = len(used), len(dataset)  # type: ignore[arg-type]
    images = (
        f"{count} images"
        if count == total
        else f"the first {count} of {total} images ({flag('limit', config.limit)})"
    )
    targets = np.asarray(getattr(dataset, "targets", []))[:count]  # first_images
    labelled = int((targets >= 0).sum()) if targets.size else 0
    if config.synthetic:
        return (
            f"built-in SYNTHETIC lesions (procedurally generated, not patient data): "
            f"{images} of {config.input_size} px, "
            f"{len(classes)} classes ({', '.join(classes)}), seed {config.seed}"
        )
    label_text = (
        f", {labelled} labelled in {len(classes)} classes"
        if labelled
        else ", unlabelled"
    )
    return f"{config.data}: {images}{label_text}"


def _demo_method_args(config: PretrainConfig) -> dict[str, Any]:
    """:data:`DEMO_METHOD_ARGS` of the method on synthetic data, else nothing."""
    if not config.synthetic:
        return {}
    return dict(DEMO_METHOD_ARGS.get(method_info(str(config.method)).name, {}))


def _create_method(config: PretrainConfig, dataset: Dataset[Any]) -> SSLMethod:
    from lightly_derm import registry

    info = method_info(str(config.method))
    kwargs = _demo_method_args(config) | dict(config.method_args or {})
    if info.metadata.get("task") == "classify":
        targets = np.asarray(getattr(dataset, "targets", []))
        if not targets.size or not (targets >= 0).any():
            raise ValueError(
                f"method {info.name!r} is a classifier (task 'classify') and needs "
                f"labelled data: give {flag('labels', 'CSV')} or a folder with class "
                "subfolders"
            )
        accepts = inspect.signature(info.load()).parameters
        if "num_classes" in accepts and "num_classes" not in kwargs:
            kwargs["num_classes"] = int(
                len(getattr(dataset, "classes", []) or []) or targets.max() + 1
            )
    kwargs["backbone"] = config.backbone
    if config.augment == "gpu":
        kwargs["augment"] = "gpu"
    if config.backbone_weights is not None:
        kwargs["backbone_weights"] = config.backbone_weights
    method = registry.create("method", info.name, **kwargs)
    if isinstance(getattr(method, "backbone", None), torch.nn.Module):
        from lightly_derm.models import renormalize_backbone_input

        renormalize_backbone_input(method.backbone, config.backbone_weights)
    if not isinstance(method, SSLMethod):
        raise ConfigError(
            f"method {info.name!r} builds a {type(method).__name__}, not an SSLMethod "
            "(lightly_derm.methods.SSLMethod), so pretrain cannot train it"
        )
    return method


# ----------------------------------------------------------------------- the job
def _foreign_files(out: Path) -> list[str]:
    """Files at the run's output names in ``out`` that no lightly-derm run recorded."""
    recorded = set(read_record(out) or [])
    return [
        name for name in RUN_FILES if (out / name).exists() and name not in recorded
    ]


def _record_outputs(run: RunFolder, tensorboard: bool) -> None:
    """Records what the run is about to write (before it writes it)."""
    run.record([f for f in RUN_FILES if "/" not in f])
    run.folder(CHECKPOINT_DIR)
    run.record([f for f in RUN_FILES if f.startswith(f"{CHECKPOINT_DIR}/")])
    run.folder("plots")
    run.record([f for f in RUN_FILES if f.startswith("plots/")])
    if tensorboard:
        run.folder(TENSORBOARD_DIR)


def training_data(
    config: PretrainConfig,
    method: SSLMethod,
    data: Dataset[Any],
    verbose: bool = False,
) -> SSLDataModule:
    """The training data of a resolved configuration: an :class:`~lightly_derm.data.SSLDataModule`, set up.

    ``data`` are the images without transform (:func:`pretrain_dataset` with
    ``transform=None``); the DataModule asks ``method`` once for its transform and
    collate function, decodes every image once with ``cache_images``
    (:class:`~lightly_derm.data.DecodedImageCache`), serves a
    :class:`~lightly_derm.data.ResumableDataLoader` (a run continued with ``resume``
    picks up at the next batch of the same epoch order; every sample is augmented under
    a (seed, epoch, index) seed) and makes GPU views after the transfer.

    Raises:
        DataError: The data has fewer than 2 images.
    """
    assert config.input_size is not None and config.batch_size is not None  # resolved
    if config.cache_images:
        say("pretrain", verbose, f"decoding every image once ({flag('cache_images')})")
    datamodule = SSLDataModule(
        data,
        method,
        input_size=config.input_size,
        batch_size=config.batch_size,
        seed=int(config.seed or 0),
        num_workers=config.num_workers or 0,
        cache_images=bool(config.cache_images),
        limit=config.limit,
        pin_memory=torch.cuda.is_available() and config.accelerator != "cpu",
    )
    datamodule.setup("fit")
    if datamodule.batch_size < config.batch_size:
        say(
            "pretrain",
            verbose,
            f"batch size lowered to {datamodule.batch_size}: the data has only "
            f"{len(datamodule.source)} images",
        )
    return datamodule


def training_loader(
    config: PretrainConfig,
    method: SSLMethod,
    data: Dataset[Any],
    verbose: bool = False,
) -> ResumableDataLoader:
    """The training loader of :func:`training_data`'s DataModule (without its GPU views).

    Raises:
        DataError: The data has fewer than 2 images.
    """
    return training_data(config, method, data, verbose).train_dataloader()


def pretrain(
    config: PretrainConfig | Mapping[str, Any] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    verbose: bool = True,
    callbacks: Sequence[Callback] = (),
    **options: Any,
) -> PretrainResult:
    """Pretrains a registered method and writes a run folder.

    The run folder ``out`` gets ``config.yaml`` (the effective configuration),
    ``checkpoints/last.ckpt`` (every ``checkpoint_every_n_steps`` steps and every epoch)
    and ``checkpoints/best.ckpt`` (lowest epoch-mean ``train_loss``), ``metrics.csv``
    and ``hparams.yaml``, ``tensorboard/``, ``backbone.pt`` (the backbone's state dict
    with torchvision key names, for torchvision and MONAI), ``summary.json``, and
    ``plots/``: ``loss.png``, ``views.png`` (the first batch as the method sees it),
    ``jigsaws.png`` (FG-SSL), ``mined_pairs.png`` (AP-BYOL), ``embedding.png`` (PCA of
    the backbone's features, coloured by label).

    Args:
        config: A :class:`PretrainConfig` or a mapping of its options.
        resume: Continue the run in ``out`` from ``checkpoints/last.ckpt`` with its
            saved configuration; options given now must not change what the run is
            (see :data:`RESUME_FIXED`).
        overwrite: Replace the outputs of an earlier run in ``out`` (otherwise an
            earlier run there is an error).
        verbose: Print what was chosen and what was written.
        callbacks: More Lightning callbacks for the Trainer.
        **options: Options of :class:`PretrainConfig`; they override ``config``.

    Returns:
        A :class:`PretrainResult`.

    Raises:
        UnknownComponentError: The method is not registered (the message lists the
            registered ones).
        FileNotFoundError: The data, labels or the run to resume do not exist.
        ValueError: A bad option, an empty dataset, an unreadable image with
            ``strict``, a run already in ``out``, or a resume that changes the run.
    """
    given: dict[str, Any] | None = None
    if isinstance(config, PretrainConfig):
        requested = config.updated(options, source="pretrain options")
    else:
        given = {
            **PretrainConfig.normalize(config or {}, "the pretrain configuration"),
            **PretrainConfig.normalize(options, "pretrain options"),
        }
        requested = PretrainConfig().updated(given)
    is_zero = is_main_process()
    if resume and overwrite:
        raise ConfigError(
            f"{flag('resume')} and {flag('overwrite')} exclude each other"
        )
    if resume:
        cfg = resume_config(requested, given)
    else:
        cfg = resolve_config(requested)
    out = check_out(cfg.out)
    run = RunFolder(out) if is_zero else None
    if run is not None and not resume:
        foreign = _foreign_files(out)
        if foreign:
            raise ConfigError(
                f"{out} holds files no lightly-derm run recorded writing "
                f"({', '.join(foreign)}); a run would replace them, so choose another "
                f"{flag('out', 'DIR')} (overwrite deletes only what lightly-derm wrote)"
            )
    if run is not None:
        run.acquire()
    try:
        if run is not None and not resume and holds_run(out, CONFIG_FILE):
            last = out / CHECKPOINT_DIR / LAST_CHECKPOINT
            if last.is_file() and not overwrite:
                raise ConfigError(
                    f"{out} already holds a pretraining run; continue it with "
                    f"{flag('resume')}, replace it with {flag('overwrite')}, or choose "
                    f"another {flag('out', 'DIR')}"
                )
            # overwrite, or a run that stopped before its first checkpoint (nothing
            # to resume): replace what it wrote
            run.clear()
        return _pretrain(cfg, run, resume, verbose, callbacks)
    finally:
        if run is not None:
            run.record_new_files()
            run.release()


def _pretrain(
    cfg: PretrainConfig,
    run: RunFolder | None,
    resume: bool,
    verbose: bool,
    callbacks: Sequence[Callback],
) -> PretrainResult:
    out = Path(str(cfg.out))
    last = out / CHECKPOINT_DIR / LAST_CHECKPOINT
    pl.seed_everything(int(cfg.seed or 0), workers=True, verbose=False)
    assert cfg.input_size is not None and cfg.batch_size is not None
    # The labels decide some method arguments (classifiers); the DataModule asks the
    # method for its views and makes them.
    source = pretrain_dataset(cfg, transform=None)
    method = _create_method(cfg, source)
    data = training_data(cfg, method, source, verbose)
    steps_per_epoch = len(data.train_dataloader())
    resume_step = log_step = None
    if resume:
        resume_step, log_step = _resume_state(last, out)

    say("pretrain", verbose, f"data: {_describe_data(cfg, source, data.source)}")
    chosen = (
        f"method {cfg.method} ({type(method).__name__}), backbone {cfg.backbone}, "
        f"input {cfg.input_size} px, {plural(int(cfg.epochs or 0), 'epoch')} of "
        f"{plural(steps_per_epoch, 'batch')}"
        + (
            f" (stopping at {plural(cfg.max_steps, 'optimizer step')}"
            + (
                ""
                if method.automatic_optimization
                else "; this method takes several per batch"
            )
            + ")"
            if cfg.max_steps is not None
            else ""
        )
        + f", batch size {data.batch_size}, precision {cfg.precision}"
    )
    demo_args = {
        k: v for k, v in _demo_method_args(cfg).items() if k not in cfg.method_args
    }
    if demo_args:
        chosen += f", demo method args {demo_args}"
    if cfg.method_args:
        chosen += f", method args {cfg.method_args}"
    say(
        "pretrain",
        verbose,
        ("demo defaults for synthetic data: " if cfg.synthetic else "") + chosen,
    )
    if resume:
        say("pretrain", verbose, f"resuming {out} from {last} (step {resume_step})")
    if run is not None:
        _record_outputs(run, bool(cfg.tensorboard))
        save_run_config(cfg, out / CONFIG_FILE)

    plots = TrainingPlots(out / "plots", classes=getattr(source, "classes", None))
    hint = ResumeHint(last, resume_command(out), restart=restart_command(out))
    change = (
        EncoderChange("backbone")
        if cfg.encoder_change
        and isinstance(getattr(method, "backbone", None), torch.nn.Module)
        else None
    )
    strategy = str(cfg.strategy)
    if strategy == "ddp" and getattr(method, "ddp_find_unused_parameters", False):
        # e.g. FG-SSL's progressive steps leave parameters without gradient
        strategy = "ddp_find_unused_parameters_true"
    trainer = build_trainer(
        out,
        max_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
        accelerator=str(cfg.accelerator),
        devices=cfg.devices,  # type: ignore[arg-type]
        strategy=strategy,
        precision=cfg.precision,
        monitor="train_loss_epoch",
        mode="min",
        checkpoint_every_n_steps=cfg.checkpoint_every_n_steps,
        checkpoint_interval_s=cfg.checkpoint_interval_s,
        log_every_n_steps=cfg.log_every_n_steps or max(1, min(50, steps_per_epoch)),
        progress_bar=bool(cfg.progress_bar),
        tensorboard=bool(cfg.tensorboard),
        resume_log_step=log_step,
        advice=non_finite_advice(cfg, out),
        callbacks=[
            *([plots] if cfg.plots else []),
            hint,
            *([change] if change is not None else []),
            *callbacks,
        ],
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        # A mid-epoch resume continues at the saved step and the ResumableDataLoader
        # at the next batch of the epoch; this Lightning warning assumes a plain
        # DataLoader that would restart the epoch.
        warnings.filterwarnings(
            "ignore", message=".*resuming from a checkpoint that ended before the epoch"
        )
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # the DataModule makes the GPU views; the method's own hook serves plain loaders
        warnings.filterwarnings(
            "ignore", message="You have overridden `on_after_batch_transfer` in both"
        )
        try:
            trainer.fit(
                method,
                datamodule=data,
                ckpt_path=last if resume else None,
                weights_only=True,
            )
        except BaseException as exc:
            # Lightning ends a run stopped by SIGTERM with SystemExit() (status 0) and
            # one stopped by Ctrl+C with SystemExit(1), after saving (Ctrl+C during a
            # checkpoint write surfaces as torch's RuntimeError); a stopped run is not
            # a success, so exit as a shell does: 128 + the signal's number
            code = stop_status(trainer, hint.exception or exc)
            if code is None:
                raise
            raise SystemExit(code) from exc
    seconds = time.perf_counter() - started

    best = out / CHECKPOINT_DIR / BEST_CHECKPOINT
    written: list[Path] = list(plots.written)
    backbone_path: Path | None = None
    summary: dict[str, Any] = {}
    if trainer.is_global_zero:
        backbone = getattr(method, "backbone", None)
        if isinstance(backbone, torch.nn.Module):
            backbone_path = out / BACKBONE_FILE
            state = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
            torch.save(state, backbone_path)
        if cfg.plots:
            written += _final_plots(cfg, method, data.source, out, trainer)
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if isinstance(v, torch.Tensor) and v.numel() == 1
        }
        summary = {
            "method": cfg.method,
            "synthetic_data": cfg.synthetic,
            "images": len(data.source),
            "steps_per_epoch": steps_per_epoch,
            "global_step": trainer.global_step,
            "epochs_completed": trainer.current_epoch,
            "resumed_from_step": resume_step,
            "seconds": round(seconds, 2),
            "metrics": metrics,
            "last_checkpoint": str(last),
            "best_checkpoint": str(best) if best.is_file() else None,
            "best_train_loss_epoch": _best_score(trainer),
            "backbone": str(backbone_path) if backbone_path else None,
            "device": str(trainer.strategy.root_device),
            "precision": cfg.precision,
            "encoder_change": change.summary() if change is not None else None,
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        loss = metrics.get("train_loss_epoch", metrics.get("train_loss"))
        say(
            "pretrain",
            verbose,
            f"done: {_trained(trainer)} in {seconds:.0f} s"
            + (f", final epoch train_loss {loss:.4f}" if loss is not None else "")
            + f"; wrote {out}/ ({', '.join(_listing(out))})",
        )
        if change is not None and change.change:
            say("pretrain", verbose, describe_change(change))
        say("pretrain", verbose, f"next: {evaluate_command(out)}")
    return PretrainResult(
        out_dir=out,
        config=cfg,
        model=method,
        trainer=trainer,
        last_checkpoint=last,
        best_checkpoint=best if best.is_file() else None,
        backbone_path=backbone_path,
        summary=summary,
        plots=written,
    )


def describe_change(change: EncoderChange) -> str:
    """One line: how far each stage of the backbone turned (and shrank or grew)."""
    stages = ", ".join(
        f"{stage} {c.turned:.1f}°"
        + (f" (norm ×{c.norm:.2f})" if abs(c.norm - 1) >= 0.05 else "")
        for stage, c in change.change.items()
    )
    return (
        f"the backbone's filters turned (mean angle from the start, per stage): "
        f"{stages}"
    )


def stop_status(trainer: pl.Trainer, exception: BaseException | None) -> int | None:
    """The exit status of a run stopped by a signal: 143 (SIGTERM), 130 (Ctrl+C), else ``None``."""
    import signal

    if getattr(trainer, "received_sigterm", False):
        return 128 + int(signal.SIGTERM)
    seen: set[int] = set()
    while exception is not None and id(exception) not in seen:
        if isinstance(exception, KeyboardInterrupt):
            return 128 + int(signal.SIGINT)
        seen.add(id(exception))
        exception = exception.__cause__ or exception.__context__
    return None


def plural(count: int, noun: str) -> str:
    """``"1 epoch"``, ``"4 epochs"``, ``"2 batches"``.

    Example:
        >>> plural(1, "epoch"), plural(10, "epoch"), plural(18, "batch")
        ('1 epoch', '10 epochs', '18 batches')
        >>> plural(4, "optimizer step")
        '4 optimizer steps'
    """
    if count == 1:
        return f"{count} {noun}"
    sibilant = noun.endswith(("sh", "s", "x")) or (
        noun.endswith("ch") and not noun.endswith("epoch")
    )
    return f"{count} {noun}{'es' if sibilant else 's'}"


def _trained(trainer: pl.Trainer) -> str:
    """``"18 batches"``, or ``"18 batches (72 optimizer steps)"`` where they differ."""
    batches = int(trainer.fit_loop.epoch_loop.batch_progress.total.completed)
    steps = int(trainer.global_step)
    if steps == batches:
        return plural(steps, "step")
    return f"{plural(batches, 'batch')} ({plural(steps, 'optimizer step')})"


def _best_score(trainer: pl.Trainer) -> float | None:
    from pytorch_lightning.callbacks import ModelCheckpoint

    for callback in trainer.checkpoint_callbacks:
        if (
            isinstance(callback, ModelCheckpoint)
            and callback.best_model_score is not None
        ):
            return float(callback.best_model_score)
    return None


def _listing(out: Path) -> list[str]:
    names = []
    for name in (
        f"{CHECKPOINT_DIR}/{LAST_CHECKPOINT}",
        f"{CHECKPOINT_DIR}/{BEST_CHECKPOINT}",
        BACKBONE_FILE,
        "metrics.csv",
        f"{TENSORBOARD_DIR}/",
        CONFIG_FILE,
    ):
        if (out / name.rstrip("/")).exists():
            names.append(name)
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    if plots:
        names.append(f"plots/: {', '.join(plots)}")
    return names


def _final_plots(
    cfg: PretrainConfig,
    method: pl.LightningModule,
    data: Dataset[Any],
    out: Path,
    trainer: pl.Trainer,
) -> list[Path]:
    """Loss curves and the embedding plot; failures become warnings."""
    written: list[Path] = []
    plot_dir = out / "plots"
    try:
        written.append(
            plot_metrics(
                out / "metrics.csv",
                plot_dir / PLOT_FILES["metrics"],
                title=f"{cfg.method} on {'synthetic lesions' if cfg.synthetic else cfg.data}",
            )
        )
    except Exception as exc:  # plots must not fail the run
        warnings.warn(
            f"could not draw the loss curves: {exc}", UserWarning, stacklevel=2
        )
    if cfg.embedding_images:
        try:
            written.append(_embedding_plot(cfg, method, data, plot_dir, trainer))
        except Exception as exc:
            warnings.warn(
                f"could not draw the embedding plot: {exc}", UserWarning, stacklevel=2
            )
    return written


def _embedding_plot(
    cfg: PretrainConfig,
    method: pl.LightningModule,
    data: Dataset[Any],
    plot_dir: Path,
    trainer: pl.Trainer,
) -> Path:
    from lightly_derm.evaluation import extract_features

    assert cfg.input_size is not None
    dataset = TransformedDataset(data, eval_transform(cfg.input_size))
    size = len(dataset)
    count = min(size, int(cfg.embedding_images or 0))
    indices = np.sort(
        np.random.default_rng(cfg.seed).choice(size, size=count, replace=False)
    )
    subset = Subset(dataset, indices.tolist())
    device = trainer.strategy.root_device
    features = extract_features(
        method,
        subset,
        batch_size=128,
        num_workers=int(cfg.num_workers or 0),
        device=device,
        autocast_dtype=torch.bfloat16 if "bf16" in str(cfg.precision) else None,
    )
    targets = features.targets if features.targets.ndim == 1 else None
    source = "synthetic lesions" if cfg.synthetic else Path(str(cfg.data)).name
    return plot_embedding(
        features.features,
        plot_dir / PLOT_FILES["embedding"],
        targets=targets,
        classes=getattr(data, "classes", None),
        title=f"{cfg.method} {cfg.backbone} features of {count} images ({source}), PCA",
    )


__all__ = [
    "PretrainConfig",
    "PretrainResult",
    "RESUME_FIXED",
    "method_info",
    "pretrain",
    "pretrain_dataset",
    "resolve_config",
    "resume_config",
    "training_data",
    "training_loader",
    "with_transform",
    "data_fingerprint",
    "plural",
    "save_run_config",
]
