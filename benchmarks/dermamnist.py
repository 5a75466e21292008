"""DermaMNIST and Fashion-MNIST: lightly-derm's SSL methods vs lightly's baselines, same runs.

Every method pretrains a ResNet-18 at an equal budget on the training split, then its
frozen backbone is scored on the test split by a weighted kNN and a linear probe
(accuracy and balanced accuracy); the probe's and the kNN's settings are chosen on the
validation split, never on the test split. Reference rows: a random-init backbone under
the same protocol, a supervised ResNet-18 trained end to end on the same pipeline, and
the majority class.

Methods (all through the plugin registry, ``registry.create("method", name, ...)``, with
their own ``default_transform`` and ``default_collate``):

- lightly-derm's ``gravis``, ``fgssl``, ``ap_byol``;
- lightly's baselines ``byol`` and ``simclr``: lightly-derm's method plugins built on
  lightly's heads, losses, transforms and momentum utilities.

Choices (the same for every method and baseline; see docs/results.rst):

- Images stay at their native 28×28 px. The backbone is torchvision's ResNet-18 with a
  CIFAR-style stem (3×3 stride-1 ``conv1``, no max-pool), the small-image ResNet of
  MedMNIST v2's ResNet-18 (28) and of lightly's CIFAR-10 benchmarks; an ImageNet stem
  would leave 1×1 maps in ``layer4``. FG-SSL's jigsaw grids are (7, 4, 2) (tiles 4, 7 and
  14 px; the authors' (16, 8, 4) do not divide 28).
- Equal budget = the same number of epochs over the same images with the same batch
  size (images per optimizer step) and the same optimiser family: SGD with momentum
  0.9, weight decay 5e-4, learning rate 0.06 · batch / 128 with a cosine decay (lightly's
  CIFAR-10 benchmark recipe), for every method. The methods' paper defaults (e.g.
  GraVIS's lr 1e-3 at batch 16, FG-SSL's 10× smaller backbone lr for an ImageNet-
  pretrained start) are for other regimes and are overridden alike. Views per image
  differ by method (GraVIS 4, the others 2; FG-SSL adds jigsaws), so a GraVIS epoch
  costs more: the tables report wall time and images/s next to the scores.
- ``--epochs auto`` first measures each method's training-step time on the device and
  its augmentation cost on the CPU, then picks the largest epoch counts (one for
  DermaMNIST, one for Fashion-MNIST) that fit the time budget; the chosen numbers are
  in the results. ``--epochs N`` fixes them.

Data: DermaMNIST from the JPEG export (``dermamnist_jpg.zip`` + ``labels.csv``; train
7,007 / val 1,003 / test 2,005), Fashion-MNIST from its IDX files (Debian's
``dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist``; a stratified 5,000 of
the 60,000 training images are held out as the validation split, the test split is
``t10k``). Both are decoded once into a MedMNIST-layout ``.npz`` cache and read with
:class:`~lightly_derm.data.MedMNISTDataset` (in memory, shared by loader workers).

Concurrency: the jobs (dataset × method) run at the same time in ``--jobs`` spawned
worker processes on one GPU; each writes its JSON result as it finishes, the tables are
rewritten after every job, and at the time budget unfinished jobs are stopped (a job
that runs out of time stops training early, is still evaluated, and is marked).

CPU smoke run (not a result; checks the whole path)::

    python benchmarks/dermamnist.py --smoke --device cpu --jobs 2 \\
        --out benchmarks/results/dermamnist_cpu_smoke

CPU with a fixed budget (no GPU; the same epochs for every method, chosen to fit; see
``plan``; ``--plan-only`` prints the plan and exits)::

    python benchmarks/dermamnist.py --device cpu --datasets dermamnist --epochs auto \\
        --budget-minutes 120 --out benchmarks/results/dermamnist_cpu

GPU (one H100, ~7.5 minutes, data copied into the run folder)::

    python benchmarks/dermamnist.py --device cuda --epochs auto --time-budget-minutes 7.5 \\
        --dermamnist data/dermamnist-jpg --fashion-mnist data/fashion-mnist \\
        --out $OUT/dermamnist
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _calibration import step_time  # noqa: E402
from _calibration import sync as _sync  # noqa: E402
from _calibration import transform_cost as _transform_cost  # noqa: E402
from _realdata import (  # noqa: E402
    OK,
    Job,
    command_line,
    describe_environment,
    environment,
    fmt,
    markdown_table,
    read_results,
    rst_preamble,
    rst_table,
    run_jobs,
    write_json,
)

#: The dermatology methods and lightly's baselines, as registered method plugins.
SSL_METHODS: tuple[str, ...] = ("gravis", "fgssl", "ap_byol", "byol", "simclr")
#: Reference rows: random-init backbone, supervised ResNet-18.
BASELINES: tuple[str, ...] = ("random", "supervised")
DATASETS: tuple[str, ...] = ("dermamnist", "fashion_mnist")
ORIGIN = {
    "gravis": "lightly-derm GraVIS",
    "fgssl": "lightly-derm FG-SSL",
    "ap_byol": "lightly-derm AP-BYOL",
    "byol": "lightly BYOL (baseline)",
    "simclr": "lightly SimCLR (baseline)",
    "random": "random init (reference)",
    "supervised": "supervised ResNet-18 (reference)",
}
TITLES = {"dermamnist": "DermaMNIST", "fashion_mnist": "Fashion-MNIST"}
IMAGE_SIZE = 28
FGSSL_GRIDS = (7, 4, 2)
KNN_K = (10, 20, 50, 100)
PROBE_WEIGHT_DECAY = (1e-4, 1e-3, 1e-2, 1e-1)
PROBE_CLASS_WEIGHT = (None, "balanced")
#: Quoted reference numbers on DermaMNIST test (MedMNIST v2, Yang et al. 2023).
DERMAMNIST_QUOTED = {"majority": 0.669, "resnet18_28": 0.735}
#: The targets for the dermatology methods' linear probe on DermaMNIST test.
TARGET_ACCURACY, TARGET_BALANCED = 0.75, 0.50

HERE = Path(__file__).resolve()
DEFAULT_DERMAMNIST = next(
    (
        p / "shared/data/dermamnist-jpg"
        for p in HERE.parents
        if (p / "shared/data/dermamnist-jpg").is_dir()
    ),
    None,
)
DEFAULT_FASHION = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------------------ data
def _subset(targets: Any, limit: int | None, seed: int) -> Any:
    from lightly_derm.evaluation import stratified_subset

    if limit is None or limit >= len(targets):
        return np.arange(len(targets))
    return stratified_subset(targets, limit / len(targets), seed=seed)


def prepare_data(args: argparse.Namespace, cache: Path) -> dict[str, dict[str, Any]]:
    """Decodes each dataset once into a MedMNIST-layout .npz; returns what jobs need."""
    from lightly_derm.data import (
        DERMAMNIST_CLASSES,
        FASHION_MNIST_CLASSES,
        DermaMNISTJPEGDataset,
        IDXImageDataset,
    )
    from lightly_derm.evaluation import stratified_subset

    cache.mkdir(parents=True, exist_ok=True)
    limits = {
        "train": args.limit_train,
        "val": args.limit_eval,
        "test": args.limit_eval,
    }
    tag = (
        f"_l{args.limit_train}-{args.limit_eval}"
        if args.limit_train or args.limit_eval
        else ""
    )
    info: dict[str, dict[str, Any]] = {}
    for name in args.datasets:
        path = cache / f"{name}{tag}_s{args.seed}.npz"
        if name == "dermamnist":
            if args.dermamnist is None:
                raise FileNotFoundError("DermaMNIST data not found: pass --dermamnist")
            classes = list(DERMAMNIST_CLASSES)
            if not path.exists():
                arrays = {}
                for split in ("train", "val", "test"):
                    data = DermaMNISTJPEGDataset(args.dermamnist, split)
                    keep = _subset(data.targets, limits[split], args.seed)
                    arrays[f"{split}_images"] = np.stack(
                        [np.asarray(data[int(i)][0]) for i in keep]
                    )
                    arrays[f"{split}_labels"] = data.targets[keep][:, None].astype(
                        np.uint8
                    )
                np.savez(path, **arrays)
        else:
            if args.fashion_mnist is None:
                raise FileNotFoundError(
                    "Fashion-MNIST data not found: pass --fashion-mnist"
                )
            classes = list(FASHION_MNIST_CLASSES)
            if not path.exists():
                train = IDXImageDataset(args.fashion_mnist, "train")
                test = IDXImageDataset(args.fashion_mnist, "test")
                val_idx = stratified_subset(
                    train.targets, args.fashion_val / len(train), seed=args.seed
                )
                train_idx = np.setdiff1d(np.arange(len(train)), val_idx)
                parts = {
                    "train": (train.images[train_idx], train.targets[train_idx]),
                    "val": (train.images[val_idx], train.targets[val_idx]),
                    "test": (test.images, test.targets),
                }
                arrays = {}
                for split, (images, targets) in parts.items():
                    keep = _subset(targets, limits[split], args.seed)
                    arrays[f"{split}_images"] = images[keep]
                    arrays[f"{split}_labels"] = targets[keep][:, None].astype(np.uint8)
                np.savez(path, **arrays)
        with np.load(path) as arrays:
            sizes = {
                s: int(arrays[f"{s}_labels"].shape[0]) for s in ("train", "val", "test")
            }
            train_labels = arrays["train_labels"][:, 0]
            test_labels = arrays["test_labels"][:, 0]
        majority = int(np.bincount(train_labels).argmax())
        info[name] = {
            "npz": str(path),
            "classes": classes,
            "sizes": sizes,
            "majority_test_accuracy": float((test_labels == majority).mean()),
            "majority_test_balanced_accuracy": 1.0 / len(np.unique(test_labels)),
            # two random training images share a label: AP-BYOL's mining baseline
            "same_label_chance": float(
                ((np.bincount(train_labels) / len(train_labels)) ** 2).sum()
            ),
        }
    return info


def _dataset(spec: dict[str, Any], split: str, transform: Any) -> Any:
    from lightly_derm.data import MedMNISTDataset

    data = spec["data"]
    return MedMNISTDataset(
        data["npz"], split=split, transform=transform, classes=data["classes"]
    )


# --------------------------------------------------------------------------- models
def small_resnet(name: str = "resnet18") -> Any:
    """torchvision ResNet (lightly-derm's, torchvision key names) with a CIFAR-style stem.

    ``conv1`` becomes a 3×3 stride-1 convolution and the max-pool is dropped, as in
    lightly's CIFAR-10 benchmarks and MedMNIST v2's 28 px ResNets: a 28 px image keeps
    4×4 maps in ``layer4`` instead of 1×1.
    """
    from torch import nn

    from lightly_derm.models import resnet

    model = resnet(name)
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


def method_kwargs(name: str, lr: float, weight_decay: float) -> dict[str, Any]:
    """The benchmark's equal optimiser settings, as each method's constructor spells them."""
    kwargs: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay, "momentum": 0.9}
    if name == "fgssl":
        # the benchmark shares one lr: the standard Barlow Twins loss (its scale)
        kwargs.update(backbone_lr=lr, grids=FGSSL_GRIDS, loss="barlow_twins")
    return kwargs


def eval_transform() -> Any:
    from lightly.transforms.utils import IMAGENET_NORMALIZE
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_NORMALIZE["mean"], IMAGENET_NORMALIZE["std"]),
        ]
    )


def supervised_transform() -> Any:
    """Flips and a 2 px padded random crop, then the evaluation tensor transform."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomCrop(IMAGE_SIZE, padding=2, padding_mode="reflect"),
            eval_transform(),
        ]
    )


def _runtime(spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Threads, device, autocast dtype and Trainer arguments of a job."""
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    bf16 = spec["precision"].startswith("bf16")
    trainer_kwargs = {
        "accelerator": "gpu" if device.type == "cuda" else "cpu",
        "devices": 1,
        "precision": spec["precision"],
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "benchmark": device.type == "cuda",
        "num_sanity_val_steps": 0,
    }
    return (device, torch.bfloat16 if bf16 else None), trainer_kwargs


# ------------------------------------------------------------------------ evaluation
def _score(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {
        "accuracy": metrics[f"{prefix}accuracy"],
        "balanced_accuracy": metrics[f"{prefix}balanced_accuracy"],
    }


def _selection_score(scores: dict[str, float]) -> float:
    """Validation criterion: the mean of accuracy and balanced accuracy."""
    return 0.5 * (scores["accuracy"] + scores["balanced_accuracy"])


def evaluate_backbone(
    backbone: Any, spec: dict[str, Any], device: Any, autocast: Any
) -> dict[str, Any]:
    """kNN and linear probe on frozen features; settings chosen on the val split."""
    from lightly_derm.evaluation import (
        Features,
        LinearProbe,
        classification_metrics,
        extract_features,
        knn_evaluate,
    )

    transform = eval_transform()
    features = {}
    start = time.perf_counter()
    for split in ("train", "val", "test"):
        out = extract_features(
            backbone,
            _dataset(spec, split, transform),
            batch_size=512,
            num_workers=spec["eval_workers"],
            device=device,
            autocast_dtype=autocast,
            channels_last=spec["channels_last"],
        )
        features[split] = Features(
            out.features.to(device), out.targets.to(device), out.filenames
        )
    num_classes = len(spec["data"]["classes"])
    train, val, test = features["train"], features["val"], features["test"]

    knn_val = {
        k: _score(knn_evaluate(train, val, num_classes, k=k), "knn_") for k in KNN_K
    }
    k_best = max(KNN_K, key=lambda k: _selection_score(knn_val[k]))
    knn = {
        "k": k_best,
        "temperature": 0.1,
        "val": knn_val[k_best],
        "test": _score(knn_evaluate(train, test, num_classes, k=k_best), "knn_"),
        "val_by_k": {str(k): v for k, v in knn_val.items()},
    }

    best = None
    for weight_decay in PROBE_WEIGHT_DECAY:
        for class_weight in PROBE_CLASS_WEIGHT:
            probe = LinearProbe(
                weight_decay,
                max_iter=spec["probe_iters"],
                class_weight=class_weight,
                device=device,
            )
            probe.fit(train.features, train.targets, num_classes)
            val_scores = _score(
                classification_metrics(
                    probe.predict_proba(val.features).cpu(), val.targets, "linear_"
                ),
                "linear_",
            )
            if best is None or _selection_score(val_scores) > _selection_score(best[1]):
                best = (probe, val_scores, weight_decay, class_weight)
    probe, val_scores, weight_decay, class_weight = best
    linear = {
        "weight_decay": weight_decay,
        "class_weight": class_weight,
        "converged": probe.converged,
        "val": val_scores,
        "test": _score(
            classification_metrics(
                probe.predict_proba(test.features).cpu(), test.targets, "linear_"
            ),
            "linear_",
        ),
    }
    return {
        "knn": knn,
        "linear": linear,
        "eval_wall_s": round(time.perf_counter() - start, 2),
    }


# ------------------------------------------------------------------------------ jobs
class EpochCounter(pl.Callback):
    """Counts the training epochs that ran to the end (a time limit may stop one early)."""

    def __init__(self) -> None:
        self.epochs = 0

    def on_train_epoch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule
    ) -> None:
        self.epochs += 1


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """One job: pretrain (or not) and evaluate; returns the JSON-able result."""
    from torch.utils.data import DataLoader

    from lightly_derm import registry
    from lightly_derm.evaluation import finetune_evaluate

    (device, autocast), trainer_kwargs = _runtime(spec)
    pl.seed_everything(spec["seed"], workers=True, verbose=False)
    kind, name = spec["kind"], spec["method"]
    result: dict[str, Any] = {
        "dataset": spec["dataset"],
        "method": name,
        "kind": kind,
        "device": spec["device_name"],
        "batch_size": spec["batch_size"],
        "epochs": spec["epochs"],
        "sizes": spec["data"]["sizes"],
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    eval_reserve = spec["eval_reserve_s"]
    max_time = max(1.0, spec["deadline"] - time.time() - eval_reserve)
    if spec.get("max_train_s"):  # the CPU plan's cap: the budget stays split
        max_time = min(max_time, spec["max_train_s"])

    if kind == "random":
        torch.manual_seed(spec["seed"])
        backbone = small_resnet(spec["backbone"])
        result.update(evaluate_backbone(backbone, spec, device, autocast))
        result["epochs"] = 0
        return result

    if kind == "supervised":
        torch.manual_seed(spec["seed"])
        start = time.perf_counter()
        out = finetune_evaluate(
            small_resnet(spec["backbone"]),
            _dataset(spec, "train", supervised_transform()),
            _dataset(spec, "test", eval_transform()),
            fraction=1.0,
            num_classes=len(spec["data"]["classes"]),
            epochs=spec["epochs"],
            batch_size=spec["batch_size"],
            lr=spec["supervised_lr"],
            seed=spec["seed"],
            num_workers=spec["loader_workers"],
            trainer_kwargs={**trainer_kwargs, "max_time": timedelta(seconds=max_time)},
            device=device,
            autocast_dtype=autocast,
        )
        result.update(
            pretrain_wall_s=round(time.perf_counter() - start, 2),
            finetune={
                "test": {
                    "accuracy": out["finetune_accuracy"],
                    "balanced_accuracy": out["finetune_balanced_accuracy"],
                },
                "lr": spec["supervised_lr"],
            },
        )
        if device.type == "cuda":
            result["peak_mem_gib"] = round(
                torch.cuda.max_memory_allocated(device) / 2**30, 2
            )
        return result

    # self-supervised pretraining
    kwargs = method_kwargs(name, spec["lr"], spec["weight_decay"])
    model = registry.create(
        "method", name, backbone=small_resnet(spec["backbone"]), **kwargs
    )
    transform = model.default_transform(input_size=IMAGE_SIZE)
    data = _dataset(spec, "train", transform)
    workers = spec["loader_workers"]
    loader = DataLoader(
        data,
        batch_size=spec["batch_size"],
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        pin_memory=device.type == "cuda",
        collate_fn=model.default_collate(),
    )
    if spec["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    clock = EpochCounter()
    trainer = pl.Trainer(
        max_epochs=spec["epochs"],
        max_time=timedelta(seconds=max_time),
        callbacks=[clock],
        **trainer_kwargs,
    )
    _sync(device)
    start = time.perf_counter()
    trainer.fit(model, loader)
    _sync(device)
    wall = time.perf_counter() - start
    metrics = {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if getattr(v, "numel", lambda: 1)() == 1
    }
    result.update(
        method_kwargs={
            k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()
        },
        views_per_image=len(data[0][0]),
        epochs_done=clock.epochs,
        stopped_early=clock.epochs < spec["epochs"],
        pretrain_wall_s=round(wall, 2),
        images_per_s=round(
            clock.epochs
            * (len(data) // spec["batch_size"])
            * spec["batch_size"]
            / wall,
            1,
        )
        if wall > 0
        else None,
        train_loss=metrics.get("train_loss"),
        loader_workers=workers,
    )
    if "train_mined_same_label_rate" in metrics:
        result["mined_same_label_rate"] = metrics["train_mined_same_label_rate"]
    if device.type == "cuda":
        result["peak_mem_gib"] = round(
            torch.cuda.max_memory_allocated(device) / 2**30, 2
        )
    model = model.to(memory_format=torch.contiguous_format)
    result.update(evaluate_backbone(model.backbone, spec, device, autocast))
    return result


# ----------------------------------------------------------------------- calibration
def calibrate(
    args: argparse.Namespace, data: dict[str, Any], spec: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Per method: CPU seconds per image of its transform and device seconds per step.

    The step time (only with ``args.measure_steps``) comes from a short Lightning fit on
    one batch of ready-made views (no data loading), synchronised; the first two steps
    (cuDNN autotuning) are not counted. ``"eval"`` holds the device seconds per image of
    the frozen backbone's forward pass (feature extraction for kNN and the probe), which
    the CPU plan needs: there the evaluation competes with training for the same cores.
    """
    from PIL import Image

    from lightly_derm import registry

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    first = data[args.datasets[0]]
    with np.load(first["npz"]) as arrays:
        images = [
            Image.fromarray(a).convert("RGB")
            for a in arrays["train_images"][: args.batch_size]
        ]
    (device, _), trainer_kwargs = _runtime({**spec, "threads": 1})
    measured: dict[str, dict[str, float]] = {}
    for name in args.methods:
        model = registry.create(
            "method",
            name,
            backbone=small_resnet(args.backbone),
            **method_kwargs(name, spec["lr"], spec["weight_decay"]),
        )
        transform = model.default_transform(input_size=IMAGE_SIZE)
        measured[name] = {"cpu_s_per_image": _transform_cost(transform, images[:48])}
        if not args.measure_steps:
            continue
        # on the CPU a step's time is proportional to the batch: measure 32 images
        # (a full batch of 256 takes tens of seconds on one core) and scale
        few = images if device.type == "cuda" else images[:32]
        samples = [(transform(image), 0, f"{i}") for i, image in enumerate(few)]
        if spec["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        seconds = step_time(
            model,
            samples,
            max(1, args.calibration_steps - 2),
            device,
            trainer_kwargs,
            collate_fn=model.default_collate(),
            skip=2 if device.type == "cuda" else 1,
        )
        measured[name].update(
            device_s_per_step=seconds * len(images) / len(samples),
            batch=len(images),
            measured_batch=len(samples),
        )
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.measure_steps:
        backbone = small_resnet(args.backbone).to(device).eval()
        batch = torch.stack([eval_transform()(image) for image in images[:64]])
        times = []
        with torch.no_grad():
            for _ in range(3):
                _sync(device)
                start = time.perf_counter()
                backbone(batch.to(device))
                _sync(device)
                times.append(time.perf_counter() - start)
        measured["eval"] = {"device_s_per_image": min(times[1:]) / len(batch)}
        del backbone
    if "supervised" in args.baselines:
        step = measured.get("simclr", next(iter(measured.values()), {})).get(
            "device_s_per_step"
        )
        measured["supervised"] = {
            "cpu_s_per_image": _transform_cost(supervised_transform(), images[:48]),
            "device_s_per_step": 0.5 * step if step else None,
        }
    torch.set_num_threads(threads)
    return measured


def plan(
    args: argparse.Namespace,
    data: dict[str, Any],
    cost: dict[str, dict[str, float]],
    available_s: float,
) -> dict[str, Any]:
    """Epochs per dataset (``auto``: the most that fit) and loader workers per job.

    A dataset's epoch costs, over all its jobs, G = Σ steps × device s/step of the
    device and C = Σ images × CPU s/image of augmentation. On a GPU, an epoch of all
    jobs takes max(G / gpu_efficiency, C / (cpus · cpu_efficiency)). On the CPU
    (``--device cpu``), G was measured on one thread and the training steps, the
    augmentations and the evaluations all share the cores: an epoch takes
    (G + C) / (cpus · cpu_efficiency), and the feature extraction of every job
    (train, val and test images through the frozen backbone) is taken off the
    available time first. Fashion-MNIST gets ``fashion_share`` of the available time
    when both datasets run, DermaMNIST the rest; no single job may need more than 90 %
    of it alone.

    On the CPU, the plan also gives each job a training-time cap (``max_train_s``:
    twice its own predicted training time, at least a minute), so that one job running
    slower than measured cannot eat the time of the jobs queued behind it: the budget
    stays split across the methods.
    """
    trained = [
        m
        for m in (*args.methods, "supervised")
        if m in cost and (m in args.methods or m in args.baselines)
    ]
    cpus = os.cpu_count() or 1
    on_cpu = not str(getattr(args, "device", "cuda")).startswith("cuda")
    epochs: dict[str, int] = {}
    estimate: dict[str, Any] = {}
    both = len(args.datasets) > 1
    eval_s = (cost.get("eval") or {}).get("device_s_per_image") or 0.0
    jobs_per_dataset = len(trained) + ("random" in args.baselines)
    eval_total = {
        name: jobs_per_dataset * sum(data[name]["sizes"].values()) * eval_s
        for name in args.datasets
    }
    if on_cpu:
        available_s -= sum(eval_total.values()) / (cpus * args.cpu_efficiency)
    for name in args.datasets:
        share = (
            1.0
            if not both
            else (
                args.fashion_share
                if name == "fashion_mnist"
                else 1 - args.fashion_share
            )
        )
        n = data[name]["sizes"]["train"]
        steps = n // args.batch_size
        fixed = args.epochs if name == "dermamnist" else args.fashion_epochs
        gpu = sum(steps * (cost[m].get("device_s_per_step") or 0.0) for m in trained)
        cpu = sum(n * cost[m]["cpu_s_per_image"] for m in trained)
        if on_cpu:
            epoch_s = max((gpu + cpu) / (cpus * args.cpu_efficiency), 1e-9)
        else:
            epoch_s = max(
                gpu / args.gpu_efficiency, cpu / (cpus * args.cpu_efficiency), 1e-9
            )
        longest = max(
            (steps * (cost[m].get("device_s_per_step") or 0.0) for m in trained),
            default=0.0,
        )
        if fixed == "auto":
            value = math.floor(share * max(available_s, 0.0) / epoch_s)
            if longest > 0:
                value = min(value, math.floor(0.9 * available_s / longest))
            value = max(1, min(args.max_epochs, value))
        else:
            value = int(fixed)
        epochs[name] = value
        estimate[name] = {
            "gpu_s_per_epoch_all_jobs": round(gpu, 2),
            "cpu_core_s_per_epoch_all_jobs": round(cpu, 2),
            "epoch_s_estimate": round(epoch_s, 2),
            "predicted_s": round(epoch_s * value, 1),
            "eval_device_s_all_jobs": round(eval_total[name], 1),
        }
    # Loader workers in proportion to each job's augmentation work, about 1.5 per core.
    work = {
        (d, m): data[d]["sizes"]["train"] * epochs[d] * cost[m]["cpu_s_per_image"]
        for d in args.datasets
        for m in trained
    }
    total = sum(work.values()) or 1.0
    workers = {}
    for key, value in work.items():
        if args.loader_workers == "auto":
            workers[key] = max(1, min(12, round(1.5 * cpus * value / total)))
        else:
            workers[key] = int(args.loader_workers)
    caps = {}
    if on_cpu:
        for d in args.datasets:
            steps = data[d]["sizes"]["train"] // args.batch_size
            for m in trained:
                own = epochs[d] * (
                    steps * (cost[m].get("device_s_per_step") or 0.0)
                    + data[d]["sizes"]["train"] * cost[m]["cpu_s_per_image"]
                )
                caps[(d, m)] = round(max(60.0, 2.0 * own), 1)
    return {
        "epochs": epochs,
        "estimate": estimate,
        "workers": workers,
        "max_train_s": caps,
    }


# ------------------------------------------------------------------------- reporting
def _row(result: dict[str, Any], chance: float | None = None) -> list[Any]:
    r = result.get("result") or {}
    method = result["spec"]["method"]
    status = result["status"]
    epochs = r.get("epochs_done", r.get("epochs", result["spec"].get("epochs")))
    if r.get("stopped_early"):
        epochs = f"{epochs} of {r['epochs']} (time limit)"
    if method == "supervised":
        ft = (r.get("finetune") or {}).get("test", {})
        scores = [
            None,
            None,
            ft.get("accuracy"),
            ft.get("balanced_accuracy"),
            "end-to-end classifier",
        ]
    else:
        knn = (r.get("knn") or {}).get("test", {})
        linear = r.get("linear") or {}
        lt = linear.get("test", {})
        probe = (
            f"λ={linear['weight_decay']:g}, {linear['class_weight'] or 'unweighted'}; k={r['knn']['k']}"
            if linear
            else None
        )
        scores = [
            knn.get("accuracy"),
            knn.get("balanced_accuracy"),
            lt.get("accuracy"),
            lt.get("balanced_accuracy"),
            probe,
        ]
    wall = r.get("pretrain_wall_s")
    note = status if status != OK else ""
    if r.get("mined_same_label_rate") is not None:
        note = (
            (note + "; " if note else "")
            + f"mined same-label rate {r['mined_same_label_rate']:.3f}"
            + (f" (chance {chance:.3f})" if chance is not None else "")
        )
    return [
        ORIGIN.get(method, method),
        epochs if method != "random" else 0,
        fmt(wall, 1) if wall is not None else None,
        fmt(r.get("images_per_s"), 0) if r.get("images_per_s") else None,
        *scores,
        note or None,
    ]


HEADERS = [
    "method",
    "epochs",
    "pretrain s",
    "img/s",
    "kNN acc",
    "kNN bal. acc",
    "linear acc",
    "linear bal. acc",
    "probe (chosen on val)",
    "notes",
]


def report(out: Path, header: dict[str, Any]) -> dict[str, Any]:
    """Reads the job results and writes the Markdown, reStructuredText and JSON tables."""
    results = read_results(out / "jobs")
    order = {m: i for i, m in enumerate((*SSL_METHODS, *BASELINES))}
    smoke_text = "CPU smoke run, not a result: a few hundred images and one epoch, to check the pipeline end to end."
    md = [f"# {header.get('title', 'DermaMNIST / Fashion-MNIST')}", ""]
    if header.get("smoke"):
        md += [f"**{smoke_text.replace(': ', '**: ', 1)}", ""]
    md += [
        f"Command: `{header['command']}`",
        "",
        f"Environment: {describe_environment(header['environment'])}.",
        "",
    ]
    if header.get("total_wall_s"):
        md += [f"Total wall time of the run: {header['total_wall_s']:.0f} s.", ""]
    if header.get("plan"):
        md += [
            f"Epochs: {json.dumps(header['plan']['epochs'])} ({header.get('epochs_mode')}); batch {header['batch_size']}; lr {header['lr']:g} (0.06 · batch/128), weight decay {header['weight_decay']:g}, SGD momentum 0.9, cosine; ResNet-18 with a CIFAR-style stem at 28 px.",
            "",
        ]
    rst = rst_preamble(header, smoke_text)
    if header.get("plan"):
        rst += [md[-2].replace("`", "``"), ""]
    summary: dict[str, Any] = {}
    for dataset in header["datasets"]:
        rows = [r for r in results.values() if r["spec"].get("dataset") == dataset]
        rows.sort(key=lambda r: order.get(r["spec"]["method"], 99))
        info = header["data"][dataset]
        table = [_row(r, info.get("same_label_chance")) for r in rows]
        table.append(
            [
                "majority class (computed, train majority)",
                None,
                None,
                None,
                None,
                None,
                info["majority_test_accuracy"],
                info["majority_test_balanced_accuracy"],
                None,
                None,
            ]
        )
        if dataset == "dermamnist":
            table.append(
                [
                    "majority class (quoted, MedMNIST v2)",
                    None,
                    None,
                    None,
                    None,
                    None,
                    DERMAMNIST_QUOTED["majority"],
                    None,
                    None,
                    None,
                ]
            )
            table.append(
                [
                    "supervised ResNet-18 (28) (quoted, MedMNIST v2)",
                    None,
                    None,
                    None,
                    None,
                    None,
                    DERMAMNIST_QUOTED["resnet18_28"],
                    None,
                    None,
                    None,
                ]
            )
        sizes = info["sizes"]
        title = f"{TITLES[dataset]}: test split ({sizes['test']} images; pretraining on train, {sizes['train']} images; choices on val, {sizes['val']} images)"
        md += [f"## {title}", "", markdown_table(HEADERS, table), ""]
        rst += [rst_table(HEADERS, table, title=title), ""]
        if dataset == "dermamnist":
            lines = []
            for r in rows:
                m = r["spec"]["method"]
                if m in ("gravis", "fgssl", "ap_byol") and r["status"] == OK:
                    t = r["result"]["linear"]["test"]
                    met = (
                        t["accuracy"] >= TARGET_ACCURACY
                        and t["balanced_accuracy"] >= TARGET_BALANCED
                    )
                    lines.append(
                        f"- {ORIGIN[m]}: linear probe {t['accuracy']:.3f} / {t['balanced_accuracy']:.3f} → target {'met' if met else 'not met'}"
                    )
            md += [
                f"Target for the dermatology methods' linear probe: accuracy ≥ {TARGET_ACCURACY}, balanced accuracy ≥ {TARGET_BALANCED}.",
                "",
                *lines,
                "",
            ]
        summary[dataset] = {
            r["spec"]["method"]: {
                "status": r["status"],
                **(
                    {
                        k: r["result"].get(k)
                        for k in (
                            "epochs",
                            "epochs_done",
                            "pretrain_wall_s",
                            "images_per_s",
                            "knn",
                            "linear",
                            "finetune",
                            "mined_same_label_rate",
                            "peak_mem_gib",
                            "method_kwargs",
                            "loader_workers",
                        )
                    }
                    if r.get("result")
                    else {"error": r.get("error")}
                ),
            }
            for r in rows
        }
    (out / "dermamnist_results.md").write_text("\n".join(md))
    (out / "dermamnist_results.rst").write_text("\n".join(rst))
    write_json(out / "dermamnist_results.json", {**header, "results": summary})
    return summary


# ------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dermamnist",
        type=Path,
        default=DEFAULT_DERMAMNIST,
        help="DermaMNIST JPEG export (folder with dermamnist_jpg.zip and labels.csv)",
    )
    parser.add_argument(
        "--fashion-mnist",
        type=Path,
        default=DEFAULT_FASHION if DEFAULT_FASHION.is_dir() else None,
        help="folder of the Fashion-MNIST IDX files (.gz)",
    )
    parser.add_argument(
        "--datasets", nargs="+", choices=DATASETS, default=list(DATASETS)
    )
    parser.add_argument(
        "--methods", nargs="*", choices=SSL_METHODS, default=list(SSL_METHODS)
    )
    parser.add_argument(
        "--baselines", nargs="*", choices=BASELINES, default=list(BASELINES)
    )
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument(
        "--epochs",
        default=None,
        help="DermaMNIST pretraining epochs, or 'auto' (fit the time budget; the "
        "default, --smoke: 1)",
    )
    parser.add_argument(
        "--fashion-epochs",
        default=None,
        help="Fashion-MNIST pretraining epochs, or 'auto' (default; --smoke: 1)",
    )
    parser.add_argument(
        "--max-epochs", type=int, default=200, help="cap of --epochs auto"
    )
    parser.add_argument(
        "--fashion-share",
        type=float,
        default=0.35,
        help="share of the time budget for Fashion-MNIST when both datasets run "
        "(--epochs auto)",
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--lr-per-128",
        type=float,
        default=0.06,
        help="SGD learning rate per 128 images of batch",
    )
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument(
        "--supervised-lr",
        type=float,
        default=0.1,
        help="lightly FinetuneClassifier base lr (× batch/256)",
    )
    parser.add_argument("--probe-iters", type=int, default=500)
    parser.add_argument(
        "--fashion-val",
        type=int,
        default=5000,
        help="Fashion-MNIST training images held out as validation split",
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--precision",
        default=None,
        help="Lightning precision; default bf16-mixed on cuda, 32-true on cpu",
    )
    parser.add_argument(
        "--channels-last", choices=("auto", "on", "off"), default="auto"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="concurrent worker processes (0: in this process); default all jobs on "
        "cuda, cores / --threads on cpu",
    )
    parser.add_argument(
        "--loader-workers",
        default="auto",
        help="DataLoader workers per job, or 'auto' (by augmentation cost)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument(
        "--time-budget-minutes",
        "--budget-minutes",
        dest="time_budget_minutes",
        type=float,
        default=None,
        help="wall-clock budget of the whole run; default 7.5 (--smoke: 60); with "
        "--epochs auto the epochs are chosen to fit it, on the CPU as on a GPU",
    )
    parser.add_argument(
        "--eval-reserve-s",
        type=float,
        default=None,
        help="seconds kept for evaluation after training; default 45 on cuda, on cpu "
        "1.5 × the job's measured feature-extraction time (at least 10)",
    )
    parser.add_argument(
        "--startup-reserve-s",
        type=float,
        default=None,
        help="seconds for starting workers and loading data; default 40 on cuda",
    )
    parser.add_argument(
        "--gpu-efficiency",
        type=float,
        default=0.5,
        help="planning: share of the device the concurrent jobs keep busy",
    )
    parser.add_argument(
        "--cpu-efficiency",
        type=float,
        default=0.6,
        help="planning: share of the CPUs the augmentations get",
    )
    parser.add_argument("--calibration-steps", type=int, default=6)
    parser.add_argument(
        "--limit-train",
        type=int,
        default=None,
        help="stratified cap of training images per dataset",
    )
    parser.add_argument(
        "--limit-eval",
        type=int,
        default=None,
        help="stratified cap of val and test images",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "lightly-derm-realbench",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/dermamnist")
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CPU smoke run: a few hundred images, 1 epoch, batch 32",
    )
    parser.add_argument(
        "--plan-only",
        action="store_true",
        help="measure, print the epochs that fit the budget, and exit (nothing is run)",
    )
    parser.add_argument(
        "--aggregate-only",
        action="store_true",
        help="rewrite the tables from OUT/jobs and exit",
    )
    args = parser.parse_args(argv)
    if args.time_budget_minutes is None:
        args.time_budget_minutes = 60.0 if args.smoke else 7.5
    if args.smoke:
        args.limit_train = args.limit_train or 320
        args.limit_eval = args.limit_eval or 128
        args.epochs = args.epochs or "1"
        args.fashion_epochs = args.fashion_epochs or "1"
        args.batch_size = 32 if args.batch_size == 256 else args.batch_size
        args.probe_iters = min(args.probe_iters, 100)
    if not 0 < args.fashion_share < 1:
        parser.error(f"--fashion-share must be in (0, 1), got {args.fashion_share}")
    for name in ("epochs", "fashion_epochs"):
        value = getattr(args, name) or "auto"
        setattr(args, name, value)
        if value != "auto" and not (value.isdigit() and int(value) >= 1):
            parser.error(
                f"--{name.replace('_', '-')} must be a positive int or 'auto', got {value!r}"
            )
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start = time.time()
    deadline = start + 60 * args.time_budget_minutes
    cuda = args.device.startswith("cuda")
    args.precision = args.precision or ("bf16-mixed" if cuda else "32-true")
    channels_last = args.channels_last == "on" or (
        args.channels_last == "auto" and cuda
    )
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    header_path = out / "dermamnist_header.json"
    if args.aggregate_only:
        header = json.loads(header_path.read_text())
        return report(out, header)

    env = environment(args.device)
    data = prepare_data(args, args.cache_dir)
    lr = args.lr_per_128 * args.batch_size / 128
    base = {
        "device": args.device,
        "device_name": env.get("gpu") or args.device,
        "precision": args.precision,
        "channels_last": channels_last,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "lr": lr,
        "weight_decay": args.weight_decay,
        "supervised_lr": args.supervised_lr,
        "backbone": args.backbone,
        "probe_iters": args.probe_iters,
        "seed": args.seed,
        "deadline": deadline,
        "eval_reserve_s": args.eval_reserve_s
        if args.eval_reserve_s is not None
        else (45.0 if cuda else 5.0),
    }
    auto = "auto" in (args.epochs, args.fashion_epochs)
    args.measure_steps = auto
    cost = (
        calibrate(args, data, base)
        if (args.methods or "supervised" in args.baselines)
        else {}
    )
    startup = (
        args.startup_reserve_s
        if args.startup_reserve_s is not None
        else (40.0 if cuda else 10.0)
    )
    available = deadline - time.time() - startup - base["eval_reserve_s"]
    setup = plan(args, data, cost, available)
    eval_s = (cost.get("eval") or {}).get("device_s_per_image")
    if not cuda and args.eval_reserve_s is None and eval_s:
        base["eval_reserve_s"] = max(
            10.0,
            1.5 * eval_s * max(sum(d["sizes"].values()) for d in data.values()),
        )
    print(
        f"plan: epochs {setup['epochs']}; estimate {json.dumps(setup['estimate'])}",
        flush=True,
    )
    if args.plan_only:
        print(f"calibration: {json.dumps(cost)}", flush=True)
        return {"plan": setup, "calibration": cost}

    header = {
        "title": "DermaMNIST / Fashion-MNIST: SSL pretraining, kNN and linear probe",
        "smoke": args.smoke,
        "command": command_line(),
        "environment": env,
        "datasets": args.datasets,
        "data": data,
        "batch_size": args.batch_size,
        "lr": lr,
        "weight_decay": args.weight_decay,
        "epochs_mode": "chosen by --epochs auto to fit the time budget"
        if auto
        else "fixed",
        "calibration": cost,
        "plan": {
            "epochs": setup["epochs"],
            "estimate": setup["estimate"],
            "workers": {f"{d}/{m}": w for (d, m), w in setup["workers"].items()},
            "max_train_s": {
                f"{d}/{m}": s for (d, m), s in setup["max_train_s"].items()
            },
        },
        "time_budget_minutes": args.time_budget_minutes,
    }
    write_json(header_path, header)

    jobs = []
    for dataset in args.datasets:
        names = [*args.methods, *args.baselines]
        for name in names:
            kind = "ssl" if name in SSL_METHODS else name
            epochs = setup["epochs"][dataset]
            workers = setup["workers"].get((dataset, name), 2)
            spec = {
                **base,
                "kind": kind,
                "method": name,
                "dataset": dataset,
                "data": data[dataset],
                "epochs": epochs,
                "loader_workers": workers if kind != "random" else 0,
                "max_train_s": setup["max_train_s"].get((dataset, name)),
                "eval_workers": 2 if cuda else 0,
            }
            predicted = (
                data[dataset]["sizes"]["train"]
                * epochs
                * (cost.get(name, {}).get("cpu_s_per_image") or 0.0)
            )
            jobs.append(
                Job(
                    id=f"{dataset}__{name}",
                    fn=run_job,
                    spec=spec,
                    priority=(kind == "random", -predicted),
                )
            )
    workers = (
        args.jobs
        if args.jobs is not None
        else (len(jobs) if cuda else max(1, (os.cpu_count() or 1) // args.threads))
    )
    print(
        f"{len(jobs)} jobs on {workers} worker processes; budget ends {time.strftime('%H:%M:%S', time.localtime(deadline))}",
        flush=True,
    )
    run_jobs(
        jobs,
        workers,
        deadline,
        out / "jobs",
        log_dir=out / "logs",
        on_result=lambda _: report(out, header),
    )
    summary = report(out, header)
    header["total_wall_s"] = round(time.time() - start, 1)
    write_json(header_path, header)
    report(out, header)
    print(
        f"done in {header['total_wall_s']} s; tables in {out}/dermamnist_results.md / .rst / .json",
        flush=True,
    )
    return summary


if __name__ == "__main__":
    main()
