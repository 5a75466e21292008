"""ISIC 2017 lesion segmentation: does SSL pretraining on a few hundred images help?

K-fold cross-validation over the shared ISIC 2017 pairs. For every fold, each SSL method
pretrains a ResNet-18 on the *images of the training folds only* (no masks; the test
fold's images are never seen, so nothing is transductive), then
:class:`~lightly_derm.segmentation.LesionSegmentation` (a MONAI FlexibleUNet whose
encoder gets the backbone through :func:`~lightly_derm.segmentation.load_ssl_encoder`)
is fine-tuned on 10 %, 50 % and 100 % of the training fold's masks
(:class:`~lightly_derm.data.ISICSegmentationDataModule`, nested subsets of
:func:`~lightly_derm.data.subsample_pairs`) with 3 seeds, and scored on the test fold:
Dice, Jaccard and the ISIC 2017 thresholded Jaccard (per-image Jaccard below 0.65
counts 0), mean ± standard deviation over folds × seeds, and the paired difference to
random init (same fold, seed and subset).

Methods: lightly-derm's ``gravis``, ``fgssl``, ``ap_byol``; lightly's baselines
``byol`` and ``simclr`` (lightly-derm's plugins built on lightly's heads, losses and
transforms); and ``random`` init. All through ``registry.create("method", ...)`` with
their ``default_transform`` and ``default_collate``; the same optimiser for all (SGD,
momentum 0.9, weight decay 5e-4, lr 0.06 · batch / 128, cosine; lightly's benchmark
recipe), the same epochs and batch size ("equal budget" = equal epochs over the same
images).

Tuning (what the papers leave open), without the test folds: on fold 0, the training
folds are split into inner-train (80 %) and inner-validation (20 %) pairs; every sweep
variant pretrains on the inner-train images and is fine-tuned on 10 % of the
inner-train masks (the low-label regime the methods claim to help), scored on the
inner-validation pairs; the variant with the best mean inner-validation Dice is used
for all folds. Default sweep: GraVIS views K ∈ {4, 8}, FG-SSL schedule ∈ {progressive,
joint}, AP-BYOL TracIn normalisation ∈ {off, on}. The baselines are not tuned.

Data: the pairs are decoded once at the working size (``isic_segmentation_transforms``
without augmentation: area-resized images, nearest-resized masks) into a PNG cache
that ``find_isic_pairs`` reads like the original folder; pretraining and fine-tuning
read the cache.

Concurrency: pretraining and fine-tuning jobs run in ``--jobs`` spawned worker processes
sharing one GPU, fine-tunes start as soon as their checkpoint exists, results are
written as they arrive, and the tables are rewritten after every job; jobs are ordered
so that an early stop at the time budget leaves complete seeds (seed 0 on every fold
first).

CPU smoke run (not a result)::

    python benchmarks/isic_segmentation.py --smoke --device cpu --jobs 2 \\
        --out benchmarks/results/isic_segmentation_cpu_smoke

CPU with a fixed budget (``--pretrain-epochs auto``: the same epochs for every method,
chosen to fit after the fine-tunes; see ``plan_epochs``)::

    python benchmarks/isic_segmentation.py --device cpu --pretrain-epochs auto \\
        --image-size 64 --seeds 0 --sweep none --finetune-steps 100 \\
        --budget-minutes 60 --out benchmarks/results/isic_segmentation_cpu

GPU (one H100, ~7 minutes, the shared ISIC subset copied into the run folder)::

    python benchmarks/isic_segmentation.py --device cuda --time-budget-minutes 7 \\
        --data data/isic2017-seg-subset --out $OUT/isic
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _calibration import step_time, transform_cost  # noqa: E402
from _realdata import (  # noqa: E402
    OK,
    Job,
    command_line,
    describe_environment,
    environment,
    markdown_table,
    mean_std,
    read_results,
    rst_preamble,
    rst_table,
    run_jobs,
    write_json,
)

SSL_METHODS: tuple[str, ...] = ("gravis", "fgssl", "ap_byol", "byol", "simclr")
ORIGIN = {
    "gravis": "lightly-derm GraVIS",
    "fgssl": "lightly-derm FG-SSL",
    "ap_byol": "lightly-derm AP-BYOL",
    "byol": "lightly BYOL (baseline)",
    "simclr": "lightly SimCLR (baseline)",
    "random": "random init",
}
DEFAULT_SWEEP = (
    "gravis:num_views=4,8",
    "fgssl:schedule=progressive,joint",
    "ap_byol:normalize=false,true",
)
METRICS = ("dice", "jaccard", "jaccard_thresholded")
HERE = Path(__file__).resolve()
DEFAULT_DATA = next(
    (
        p / "shared/data/isic2017-seg-subset"
        for p in HERE.parents
        if (p / "shared/data/isic2017-seg-subset").is_dir()
    ),
    None,
)


# ------------------------------------------------------------------------------ data
def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_sweep(items: list[str]) -> dict[str, tuple[str, list[Any]]]:
    """``["gravis:num_views=4,8"]`` → ``{"gravis": ("num_views", [4, 8])}``; ``["none"]`` → ``{}``."""
    sweep: dict[str, tuple[str, list[Any]]] = {}
    for item in items:
        if item == "none":
            continue
        try:
            method, rest = item.split(":", 1)
            key, values = rest.split("=", 1)
        except ValueError as exc:
            raise ValueError(
                f"a sweep item is METHOD:ARG=V1,V2,..., got {item!r}"
            ) from exc
        if method not in SSL_METHODS:
            raise ValueError(
                f"sweep method {method!r} is not one of {', '.join(SSL_METHODS)}"
            )
        parsed = [_parse_value(v) for v in values.split(",") if v]
        if not parsed:
            raise ValueError(f"sweep item {item!r} has no values")
        sweep[method] = (key, parsed)
    return sweep


def decode_pairs(
    data: Path, size: int, cache: Path, limit: int | None
) -> list[dict[str, str]]:
    """Decodes the ISIC pairs once at ``size`` into a PNG cache; returns the cached pairs."""
    from PIL import Image

    from lightly_derm.data import find_isic_pairs, isic_segmentation_transforms

    pairs = find_isic_pairs(data)
    if limit is not None:
        pairs = pairs[:limit]
    folder = cache / f"isic{size}"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    transform = isic_segmentation_transforms(size, train=False, normalize=None)

    def one(pair: dict[str, str]) -> None:
        image_path = folder / "images" / f"{pair['id']}.png"
        mask_path = folder / "masks" / f"{pair['id']}_segmentation.png"
        if image_path.exists() and mask_path.exists():
            return
        sample = transform(pair)
        image = (
            (sample["image"].clamp(0, 1) * 255)
            .round()
            .to(torch.uint8)
            .permute(1, 2, 0)
            .numpy()
        )
        mask = (sample["label"][0].numpy() > 0.5).astype(np.uint8) * 255
        Image.fromarray(mask).save(mask_path)
        Image.fromarray(image).save(image_path)

    with ThreadPoolExecutor(max(1, min(16, os.cpu_count() or 1))) as pool:
        list(pool.map(one, pairs))
    ids = [p["id"] for p in pairs]
    return find_isic_pairs(folder, ids=ids, check_sizes=False)


def make_folds(ids: list[str], folds: int, seed: int) -> list[list[str]]:
    """Seeded K-fold partition of the ids (sizes differ by at most one)."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    return [sorted(order[k::folds]) for k in range(folds)]


# ------------------------------------------------------------------------------ jobs
def _runtime(spec: dict[str, Any]) -> tuple[torch.device, dict[str, Any]]:
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    return device, {
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochCounter(pl.Callback):
    """Counts the training epochs that ran to the end."""

    def __init__(self) -> None:
        self.epochs = 0

    def on_train_epoch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule
    ) -> None:
        self.epochs += 1


def method_kwargs(name: str, lr: float, weight_decay: float) -> dict[str, Any]:
    """The equal optimiser settings, as each method's constructor spells them."""
    kwargs: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay, "momentum": 0.9}
    if name == "fgssl":
        kwargs.update(
            backbone_lr=lr, loss="barlow_twins"
        )  # one lr: the standard BT loss
    return kwargs


def pretrain_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Pretrains one method on the given images; saves the backbone's state dict."""
    from torch.utils.data import DataLoader

    from lightly_derm import registry
    from lightly_derm.data import ImageFileDataset, find_isic_pairs

    device, trainer_kwargs = _runtime(spec)
    pl.seed_everything(spec["seed"], workers=True, verbose=False)
    kwargs = {
        **method_kwargs(spec["method"], spec["lr"], spec["weight_decay"]),
        **spec["variant"],
    }
    model = registry.create(
        "method", spec["method"], backbone=spec["backbone"], **kwargs
    )
    transform = model.default_transform(input_size=spec["pretrain_size"])
    images = [
        p["image"]
        for p in find_isic_pairs(
            spec["pairs_dir"], ids=spec["train_ids"], check_sizes=False
        )
    ]
    data = ImageFileDataset(images, transform=transform, check="none")
    workers = spec["loader_workers"]
    batch = min(spec["batch_size"], len(data))
    loader = DataLoader(
        data,
        batch_size=batch,
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
    max_time = max(1.0, spec["deadline"] - time.time() - 30.0)
    if spec.get("max_train_s"):  # the CPU plan's cap: the budget stays split
        max_time = min(max_time, spec["max_train_s"])
    trainer = pl.Trainer(
        max_epochs=spec["epochs"],
        max_time=timedelta(seconds=max_time),
        callbacks=[clock],
        **trainer_kwargs,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    trainer.fit(model, loader)
    _sync(device)
    wall = time.perf_counter() - start
    checkpoint = Path(spec["checkpoint"])
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", memory_format=torch.contiguous_format)
        for k, v in model.backbone.state_dict().items()
    }
    torch.save(state, checkpoint)
    loss = trainer.callback_metrics.get("train_loss")
    return {
        "method": spec["method"],
        "variant": spec["variant"],
        "checkpoint": str(checkpoint),
        "epochs": spec["epochs"],
        "epochs_done": clock.epochs,
        "stopped_early": clock.epochs < spec["epochs"],
        "images": len(data),
        "batch_size": batch,
        "views_per_image": len(data[0][0]),
        "pretrain_wall_s": round(wall, 2),
        "images_per_s": round(clock.epochs * (len(data) // batch) * batch / wall, 1)
        if wall > 0
        else None,
        "train_loss": float(loss) if loss is not None else None,
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if device.type == "cuda"
        else None,
    }


def finetune_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Fine-tunes LesionSegmentation on a fraction of the training pairs; scores the test pairs."""
    from lightly_derm.data import ISICSegmentationDataModule, find_isic_pairs
    from lightly_derm.segmentation import LesionSegmentation

    device, trainer_kwargs = _runtime(spec)
    pl.seed_everything(spec["seed"], workers=True, verbose=False)
    test_pairs = find_isic_pairs(
        spec["pairs_dir"], ids=spec["test_ids"], check_sizes=False
    )
    datamodule = ISICSegmentationDataModule(
        pairs=find_isic_pairs(
            spec["pairs_dir"], ids=spec["train_ids"], check_sizes=False
        ),
        test_pairs=test_pairs,
        val_fraction=0.0,
        label_fraction=spec["fraction"],
        seed=spec["seed"],
        image_size=spec["image_size"],
        batch_size=spec["batch_size"],
        num_workers=spec["loader_workers"],
        cache_rate=1.0,
    )
    model = LesionSegmentation(
        f"lightly-derm-{spec['backbone']}",
        pretrained=spec.get("checkpoint"),
        lr=spec["lr"],
        weight_decay=spec["weight_decay"],
        num_overlays=0,
    )
    if spec["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    trainer = pl.Trainer(
        max_steps=spec["steps"], max_epochs=-1, limit_val_batches=0, **trainer_kwargs
    )
    _sync(device)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    _sync(device)
    wall = time.perf_counter() - start
    scores = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    return {
        "method": spec["method"],
        "fold": spec["fold"],
        "seed": spec["seed"],
        "fraction": spec["fraction"],
        "train_pairs": len(datamodule.train_pairs),
        "test_pairs": len(test_pairs),
        "steps": trainer.global_step,
        "finetune_wall_s": round(wall, 2),
        "transfer": None
        if model.transfer_report is None
        else str(model.transfer_report),
        **{m: float(scores[f"test_{m}"]) for m in METRICS},
    }


# ---------------------------------------------------------------- budget planning
def _variants(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """Every (method, constructor arguments) a pretraining job may use."""
    sweep = parse_sweep(args.sweep)
    found: list[tuple[str, dict[str, Any]]] = []
    for method in args.methods:
        found.append((method, {}))
        if method in sweep:
            key, values = sweep[method]
            found.extend((method, {key: value}) for value in values)
    return found


def calibrate(
    args: argparse.Namespace, pairs: list[dict[str, str]], base: dict[str, Any]
) -> dict[str, Any]:
    """Seconds per image of each pretraining variant and per fine-tuning step.

    On one thread (a job's setting): a method's view transform on the decoded images
    (CPU s/image) and its training step on ready-made views (device s/step, a batch of
    at most 8 images); a fine-tuning step of ``LesionSegmentation`` at the working size
    and batch. Used by :func:`plan_epochs` for ``--pretrain-epochs auto``.
    """
    from PIL import Image

    from lightly_derm import registry
    from lightly_derm.segmentation import LesionSegmentation

    threads = torch.get_num_threads()
    device, trainer_kwargs = _runtime({**base, "threads": 1})
    size = args.pretrain_size or args.image_size
    images = [Image.open(p["image"]).convert("RGB") for p in pairs[:8]]
    measured: dict[str, Any] = {"pretrain": {}}
    for method, variant in _variants(args):
        model = registry.create(
            "method",
            method,
            backbone=args.backbone,
            **method_kwargs(method, 0.01, args.weight_decay),
            **variant,
        )
        transform = model.default_transform(input_size=size)
        samples = [(transform(image), 0, f"{i}") for i, image in enumerate(images)]
        if base["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        seconds = step_time(
            model,
            samples,
            args.calibration_steps,
            device,
            trainer_kwargs,
            collate_fn=model.default_collate(),
            skip=1,
        )
        measured["pretrain"][_variant_key(method, variant)] = {
            "cpu_s_per_image": transform_cost(transform, images),
            "device_s_per_image": seconds / len(samples),
        }
    model = LesionSegmentation(f"lightly-derm-{args.backbone}", lr=1e-3, num_overlays=0)
    if base["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    batch = args.finetune_batch_size
    sample = {
        "image": torch.rand(3, args.image_size, args.image_size),
        "label": (torch.rand(1, args.image_size, args.image_size) > 0.5).float(),
    }
    measured["finetune_s_per_step"] = step_time(
        model, [sample] * batch, args.calibration_steps, device, trainer_kwargs, skip=1
    )
    torch.set_num_threads(threads)
    return measured


def _variant_key(method: str, variant: dict[str, Any]) -> str:
    return method + "".join(f":{k}={json.dumps(v)}" for k, v in variant.items())


def plan_epochs(
    args: argparse.Namespace,
    jobs: list[Job],
    cost: dict[str, Any],
    available_s: float,
) -> dict[str, Any]:
    """Pretraining epochs that fit the budget, and each pretraining job's time cap.

    Core-seconds: a fine-tune costs its steps plus scoring its test fold (counted as a
    third of a step per image); a pretraining epoch costs its images × (device s/image +
    CPU s/image of augmentation) — on the CPU all of it runs on the same cores, on a GPU
    the device part runs ``gpu_efficiency`` times as fast as measured alone; a main job
    of a swept method is costed at its most expensive variant. Epochs = (available ×
    cores × ``cpu_efficiency`` − fine-tunes) / (pretraining per epoch), between 1 and
    ``--max-pretrain-epochs``. Each pretraining job's training is capped at twice its
    predicted time (at least a minute), so the budget stays split across methods.
    """
    cpus = os.cpu_count() or 1
    on_cpu = not args.device.startswith("cuda")
    step = cost["finetune_s_per_step"]
    finetune = sum(
        j.spec["steps"] * step
        + len(j.spec["test_ids"]) * step / j.spec["batch_size"] / 3
        for j in jobs
        if j.spec["kind"] == "finetune"
    )
    per_image: dict[str, float] = {}
    for job in jobs:
        spec = job.spec
        if spec["kind"] != "pretrain":
            continue
        keys = (
            [_variant_key(spec["method"], spec["variant"])]
            if spec["variant"] or spec["phase"] == "tune"
            else [
                k
                for k in cost["pretrain"]
                if k == spec["method"] or k.startswith(spec["method"] + ":")
            ]
        )
        device = max(cost["pretrain"][k]["device_s_per_image"] for k in keys)
        cpu = max(cost["pretrain"][k]["cpu_s_per_image"] for k in keys)
        per_image[job.id] = device + cpu if on_cpu else device / args.gpu_efficiency
    per_epoch = sum(
        per_image[j.id] * len(j.spec["train_ids"])
        for j in jobs
        if j.spec["kind"] == "pretrain"
    )
    capacity = max(available_s, 0.0) * cpus * args.cpu_efficiency
    if not on_cpu:  # the device runs the jobs side by side; the CPUs only augment
        capacity = max(available_s, 0.0)
        finetune /= args.gpu_efficiency
    epochs = math.floor((capacity - finetune) / max(per_epoch, 1e-9))
    epochs = max(1, min(args.max_pretrain_epochs, epochs))
    caps = {
        job.id: round(
            max(60.0, 2.0 * epochs * per_image[job.id] * len(job.spec["train_ids"])), 1
        )
        for job in jobs
        if job.id in per_image
    }
    return {
        "epochs": epochs,
        "core_s_finetune": round(finetune, 1),
        "core_s_pretrain_per_epoch": round(per_epoch, 1),
        "capacity_core_s": round(capacity, 1),
        "max_train_s": caps,
    }


# ----------------------------------------------------------------------- the study
def select_variant(
    method: str,
    sweep: dict[str, tuple[str, list[Any]]],
    results: dict[str, dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sweep variant with the best mean inner-validation Dice (first on ties).

    Returns:
        The chosen constructor arguments and a record of every variant's scores.
    """
    if method not in sweep:
        return {}, {}
    key, values = sweep[method]
    scores = {}
    for value in values:
        dice = [
            r["result"]["dice"]
            for r in results.values()
            if r.get("status") == OK
            and r["spec"].get("phase") == "tune"
            and r["spec"]["kind"] == "finetune"
            and r["spec"]["method"] == method
            and r["spec"]["variant"] == {key: value}
        ]
        scores[json.dumps(value)] = dice
    means = {v: float(np.mean(d)) if d else float("-inf") for v, d in scores.items()}
    best = max(means, key=lambda v: means[v])  # dict order: the first of equal means
    if means[best] == float("-inf"):
        return {key: values[0]}, {
            "key": key,
            "scores": scores,
            "chosen": values[0],
            "note": "no sweep result; default (first value) used",
        }
    return {key: json.loads(best)}, {
        "key": key,
        "scores": scores,
        "chosen": json.loads(best),
    }


def build_jobs(
    args: argparse.Namespace, pairs: list[dict[str, str]], base: dict[str, Any]
) -> list[Job]:
    """The tuning sweep, the pretraining per fold and the fine-tunes, with dependencies."""
    by_id = {p["id"]: p for p in pairs}
    folds = make_folds(list(by_id), args.folds, args.seed)
    sweep = parse_sweep(args.sweep)
    ckpt_dir = args.cache_dir / "checkpoints" / f"run{int(time.time())}"
    base = {**base, "pairs_dir": str(Path(pairs[0]["image"]).parents[1])}
    jobs: list[Job] = []
    pre = {
        **base,
        "lr": args.lr_per_128 * args.pretrain_batch_size / 128,
        "weight_decay": args.weight_decay,
        "batch_size": args.pretrain_batch_size,
        "epochs": args.pretrain_epochs,
        "pretrain_size": args.pretrain_size or args.image_size,
    }
    fine = {
        **base,
        "lr": args.finetune_lr,
        "weight_decay": 1e-4,
        "batch_size": args.finetune_batch_size,
        "steps": args.finetune_steps,
        "image_size": args.image_size,
        "loader_workers": args.finetune_workers,
    }
    cost = {"fgssl": 0, "gravis": 1, "ap_byol": 2, "byol": 3, "simclr": 4}

    def pre_workers(method: str, variant: dict[str, Any]) -> int:
        if args.pretrain_workers != "auto":
            return int(args.pretrain_workers)
        views = (
            variant.get("num_views", 4)
            if method == "gravis"
            else (1 if method == "fgssl" else 2)
        )
        # about one loader process per view, at most half the machine's cores per job
        return max(1, min(1 + views, (os.cpu_count() or 2) // 2))

    # tuning: fold 0's training folds → inner-train / inner-val
    from lightly_derm.data import split_pairs

    fold0_train = [i for k in range(1, args.folds) for i in folds[k]]
    inner_train_pairs, inner_val_pairs = split_pairs(
        [by_id[i] for i in fold0_train], val_fraction=args.inner_val, seed=args.seed
    )
    inner_train = [p["id"] for p in inner_train_pairs]
    inner_val = [p["id"] for p in inner_val_pairs]
    tune_ids: dict[str, list[str]] = {}
    for method, (key, values) in sweep.items():
        if method not in args.methods:
            continue
        tune_ids[method] = []
        for value in values:
            variant = {key: value}
            tag = f"tune__{method}__{key}={value}"
            jobs.append(
                Job(
                    id=tag,
                    fn=pretrain_job,
                    priority=(0, cost[method]),
                    spec={
                        **pre,
                        "phase": "tune",
                        "kind": "pretrain",
                        "method": method,
                        "variant": variant,
                        "train_ids": inner_train,
                        "checkpoint": str(ckpt_dir / f"{tag}.pt"),
                        "loader_workers": pre_workers(method, variant),
                    },
                )
            )
            for seed in args.sweep_seeds:
                ft = f"{tag}__seed{seed}"
                jobs.append(
                    Job(
                        id=ft,
                        fn=finetune_job,
                        deps=[tag],
                        priority=(1, cost[method]),
                        resolve=_with_checkpoint(tag),
                        spec={
                            **fine,
                            "phase": "tune",
                            "kind": "finetune",
                            "method": method,
                            "variant": variant,
                            "fold": "inner",
                            "seed": seed,
                            "fraction": args.sweep_fraction,
                            "train_ids": inner_train,
                            "test_ids": inner_val,
                        },
                    )
                )
                tune_ids[method].append(ft)

    # main study
    for fold in range(args.folds):
        train_ids = [i for k in range(args.folds) if k != fold for i in folds[k]]
        for method in args.methods:
            tag = f"fold{fold}__{method}"
            spec = {
                **pre,
                "phase": "main",
                "kind": "pretrain",
                "method": method,
                "fold": fold,
                "variant": {},
                "train_ids": train_ids,
                "checkpoint": str(ckpt_dir / f"{tag}.pt"),
                "loader_workers": pre_workers(method, {}),
            }
            jobs.append(
                Job(
                    id=tag,
                    fn=pretrain_job,
                    after=tune_ids.get(method, []),
                    priority=(2, fold, cost[method]),
                    resolve=_with_variant(method, sweep)
                    if method in tune_ids
                    else None,
                    spec=spec,
                )
            )
    for seed in args.seeds:
        for fold in range(args.folds):
            train_ids = [i for k in range(args.folds) if k != fold for i in folds[k]]
            for f_index, fraction in enumerate(args.fractions):
                for m_index, method in enumerate(
                    [*args.methods, *(["random"] if args.random else [])]
                ):
                    tag = f"fold{fold}__{method}"
                    deps = [tag] if method != "random" else []
                    jobs.append(
                        Job(
                            id=f"{tag}__frac{fraction:g}__seed{seed}",
                            fn=finetune_job,
                            deps=deps,
                            priority=(3, seed, fold, f_index, m_index),
                            resolve=_with_checkpoint(tag) if deps else None,
                            spec={
                                **fine,
                                "phase": "main",
                                "kind": "finetune",
                                "method": method,
                                "fold": fold,
                                "seed": seed,
                                "fraction": fraction,
                                "train_ids": train_ids,
                                "test_ids": folds[fold],
                            },
                        )
                    )
    return jobs


class _with_checkpoint:  # noqa: N801 - used like a function
    """``resolve`` hook: puts the pretraining job's checkpoint into the fine-tune spec."""

    def __init__(self, pretrain_id: str) -> None:
        self.pretrain_id = pretrain_id

    def __call__(
        self, spec: dict[str, Any], results: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        return {**spec, "checkpoint": results[self.pretrain_id]["result"]["checkpoint"]}


class _with_variant:  # noqa: N801 - used like a function
    """``resolve`` hook: puts the sweep's chosen variant into the pretraining spec."""

    def __init__(self, method: str, sweep: dict[str, tuple[str, list[Any]]]) -> None:
        self.method, self.sweep = method, sweep

    def __call__(
        self, spec: dict[str, Any], results: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        variant, record = select_variant(self.method, self.sweep, results)
        return {**spec, "variant": variant, "tuning": record}


# ------------------------------------------------------------------------- reporting
def report(out: Path, header: dict[str, Any]) -> dict[str, Any]:
    """Aggregates the job results into Markdown, reStructuredText and JSON tables."""
    results = read_results(out / "jobs")
    methods = [*header["methods"], *(["random"] if header["random"] else [])]
    fractions = header["fractions"]
    finetunes = [
        r
        for r in results.values()
        if r["spec"].get("phase") == "main" and r["spec"].get("kind") == "finetune"
    ]
    ok = [r for r in finetunes if r["status"] == OK]
    by_key = {
        (
            r["spec"]["method"],
            r["spec"]["fold"],
            r["spec"]["seed"],
            r["spec"]["fraction"],
        ): r["result"]
        for r in ok
    }
    expected = len(header["seeds"]) * header["folds"]
    rows, summary = [], {}
    for fraction in fractions:
        for method in methods:
            runs = [
                v for (m, _, _, f), v in by_key.items() if m == method and f == fraction
            ]
            paired = [
                v["dice"] - by_key[("random", fo, se, fraction)]["dice"]
                for (m, fo, se, f), v in by_key.items()
                if m == method
                and f == fraction
                and ("random", fo, se, fraction) in by_key
                and method != "random"
            ]
            wins = sum(d > 0 for d in paired)
            rows.append(
                [
                    f"{fraction:.0%}",
                    ORIGIN.get(method, method),
                    mean_std(v["dice"] for v in runs),
                    mean_std(v["jaccard"] for v in runs),
                    mean_std(v["jaccard_thresholded"] for v in runs),
                    mean_std(paired)
                    + (f" ({wins}/{len(paired)} better)" if paired else "")
                    if method != "random"
                    else "—",
                    f"{len(runs)}/{expected}",
                    f"{np.mean([v['train_pairs'] for v in runs]):.0f}" if runs else "—",
                ]
            )
            summary[f"{method}@{fraction:g}"] = {
                "runs": len(runs),
                **{m: [v[m] for v in runs] for m in METRICS},
                "dice_minus_random": paired,
            }
    headers = [
        "labels",
        "encoder init",
        "Dice",
        "Jaccard",
        "thresholded Jaccard",
        "Δ Dice vs random (paired)",
        "runs",
        "train masks",
    ]
    md = [
        "# ISIC 2017 lesion segmentation: SSL pretraining vs random init, K-fold CV",
        "",
    ]
    if header.get("smoke"):
        md += [
            "**CPU smoke run, not a result**: a few dozen pairs, one pretraining epoch and a "
            "few fine-tuning steps, to check the pipeline end to end.",
            "",
        ]
    md += [
        f"Command: `{header['command']}`",
        "",
        f"Environment: {describe_environment(header['environment'])}.",
        "",
    ]
    if header.get("total_wall_s"):
        md += [f"Total wall time of the run: {header['total_wall_s']:.0f} s.", ""]
    md += [header["protocol"], ""]
    title = f"Test-fold scores, mean ± std over {header['folds']} folds × {len(header['seeds'])} seeds"
    md += [f"## {title}", "", markdown_table(headers, rows), ""]
    smoke_text = "CPU smoke run, not a result: a few dozen pairs, one pretraining epoch and a few fine-tuning steps, to check the pipeline end to end."
    rst = [
        *rst_preamble(header, smoke_text),
        header["protocol"],
        "",
        rst_table(headers, rows, title=title),
        "",
    ]

    # tuning
    tune_rows = []
    for method, (key, values) in header["sweep"].items():
        chosen = next(
            (
                r["spec"].get("tuning", {}).get("chosen")
                for r in results.values()
                if r["spec"].get("phase") == "main"
                and r["spec"].get("kind") == "pretrain"
                and r["spec"]["method"] == method
                and r["spec"].get("tuning")
            ),
            None,
        )
        for value in values:
            dice = [
                r["result"]["dice"]
                for r in results.values()
                if r["status"] == OK
                and r["spec"].get("phase") == "tune"
                and r["spec"].get("kind") == "finetune"
                and r["spec"]["method"] == method
                and r["spec"]["variant"] == {key: value}
            ]
            pre = next(
                (
                    r
                    for r in results.values()
                    if r["spec"].get("phase") == "tune"
                    and r["spec"].get("kind") == "pretrain"
                    and r["spec"]["method"] == method
                    and r["spec"]["variant"] == {key: value}
                ),
                None,
            )
            tune_rows.append(
                [
                    ORIGIN[method],
                    f"{key}={value}",
                    mean_std(dice),
                    len(dice),
                    f"{pre['result']['pretrain_wall_s']:.1f}"
                    if pre and pre.get("result")
                    else None,
                    "✓" if chosen == value else "",
                ]
            )
    if tune_rows:
        t_headers = [
            "method",
            "variant",
            f"inner-val Dice ({header.get('sweep_fraction', 0.1):.0%} labels)",
            "runs",
            "pretrain s",
            "chosen",
        ]
        t_title = f"Tuning on fold 0's training folds only: inner-train {header['inner']['train']} / inner-val {header['inner']['val']} pairs"
        md += [f"## {t_title}", "", markdown_table(t_headers, tune_rows), ""]
        rst += [rst_table(t_headers, tune_rows, title=t_title), ""]

    # pretraining cost
    cost_rows = []
    for method in header["methods"]:
        pre = [
            r
            for r in results.values()
            if r["spec"].get("phase") == "main"
            and r["spec"].get("kind") == "pretrain"
            and r["spec"]["method"] == method
        ]
        done = [r["result"] for r in pre if r["status"] == OK]
        variant = next(
            (r["spec"].get("variant") for r in pre if r["spec"].get("variant")), {}
        )
        cost_rows.append(
            [
                ORIGIN[method],
                ", ".join(f"{k}={v}" for k, v in variant.items()) or "defaults",
                f"{len(done)}/{header['folds']}",
                mean_std((d["epochs_done"] for d in done), 1),
                mean_std((d["pretrain_wall_s"] for d in done), 1),
                mean_std((d["images_per_s"] for d in done if d["images_per_s"]), 1),
                next((d["views_per_image"] for d in done), None),
                ", ".join(sorted({r["status"] for r in pre if r["status"] != OK}))
                or None,
            ]
        )
    c_headers = [
        "method",
        "variant",
        "folds done",
        "epochs",
        "pretrain s per fold",
        "images/s",
        "views/image",
        "problems",
    ]
    md += [
        "## Pretraining (per fold, training-fold images only)",
        "",
        markdown_table(c_headers, cost_rows),
        "",
    ]
    rst += [rst_table(c_headers, cost_rows, title="Pretraining per fold"), ""]
    statuses: dict[str, int] = {}
    for r in results.values():
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    md += [f"Jobs: {json.dumps(statuses)}.", ""]
    (out / "isic_segmentation_results.md").write_text("\n".join(md))
    (out / "isic_segmentation_results.rst").write_text("\n".join(rst))
    write_json(
        out / "isic_segmentation_results.json",
        {**header, "job_status": statuses, "results": summary},
    )
    return summary


# ------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="ISIC folder (images/ and masks/, any find_isic_pairs layout)",
    )
    parser.add_argument(
        "--methods", nargs="*", choices=SSL_METHODS, default=list(SSL_METHODS)
    )
    parser.add_argument(
        "--no-random",
        dest="random",
        action="store_false",
        help="leave out the random-init encoder",
    )
    parser.add_argument(
        "--backbone", default="resnet18", choices=("resnet18", "resnet34", "resnet50")
    )
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="fine-tuning seeds (subset, decoder init, order)",
    )
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.5, 1.0])
    parser.add_argument(
        "--image-size",
        type=int,
        default=128,
        help="fine-tuning and scoring size (multiple of 32)",
    )
    parser.add_argument(
        "--pretrain-size",
        type=int,
        default=None,
        help="pretraining view size; default --image-size",
    )
    parser.add_argument(
        "--pretrain-epochs",
        default="40",
        help="pretraining epochs, or 'auto': measure every method's step and the "
        "fine-tuning step, then take the most epochs that fit the budget",
    )
    parser.add_argument(
        "--max-pretrain-epochs", type=int, default=40, help="cap of 'auto'"
    )
    parser.add_argument(
        "--calibration-steps", type=int, default=2, help="measured steps of 'auto'"
    )
    parser.add_argument(
        "--cpu-efficiency",
        type=float,
        default=0.8,
        help="planning ('auto'): share of the CPUs the jobs keep busy",
    )
    parser.add_argument(
        "--gpu-efficiency",
        type=float,
        default=0.5,
        help="planning ('auto'): share of the device the concurrent jobs keep busy",
    )
    parser.add_argument("--pretrain-batch-size", type=int, default=32)
    parser.add_argument("--lr-per-128", type=float, default=0.06)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--finetune-batch-size", type=int, default=8)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument(
        "--sweep",
        nargs="+",
        default=list(DEFAULT_SWEEP),
        help="METHOD:ARG=V1,V2 items, or 'none'",
    )
    parser.add_argument("--sweep-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--sweep-fraction", type=float, default=0.1)
    parser.add_argument(
        "--inner-val",
        type=float,
        default=0.2,
        help="share of fold 0's training pairs held out for tuning",
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--precision", default=None, help="default bf16-mixed on cuda, 32-true on cpu"
    )
    parser.add_argument(
        "--channels-last", choices=("auto", "on", "off"), default="auto"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="worker processes (0: in this process); default 8 on cuda, cores / "
        "--threads on cpu",
    )
    parser.add_argument(
        "--pretrain-workers",
        default="auto",
        help="DataLoader workers per pretraining job ('auto': by views)",
    )
    parser.add_argument(
        "--finetune-workers",
        type=int,
        default=None,
        help="DataLoader workers per fine-tune; default 2 on cuda, 0 on cpu",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--time-budget-minutes",
        "--budget-minutes",
        dest="time_budget_minutes",
        type=float,
        default=None,
        help="wall-clock budget of the whole run; default 7.0 (--smoke: 60)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="use the first N pairs (by id)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the folds, the inner split and pretraining",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "lightly-derm-realbench",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/isic_segmentation")
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CPU smoke run: 36 pairs, 64 px, 2 folds, 1 seed, 1 epoch, 3 steps",
    )
    parser.add_argument("--aggregate-only", action="store_true")
    parser.add_argument(
        "--plan-only",
        action="store_true",
        help="with --pretrain-epochs auto: measure, print the plan and exit",
    )
    parser.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep the pretrained backbones (CACHE_DIR/checkpoints/run*/) after the run",
    )
    args = parser.parse_args(argv)
    if args.time_budget_minutes is None:
        args.time_budget_minutes = 60.0 if args.smoke else 7.0
    if args.smoke:
        args.limit = args.limit or 36
        args.folds = 2 if args.folds == 3 else args.folds
        args.seeds = [0] if args.seeds == [0, 1, 2] else args.seeds
        args.sweep_seeds = [0] if args.sweep_seeds == [0, 1] else args.sweep_seeds
        args.image_size = 64 if args.image_size == 128 else args.image_size
        args.pretrain_epochs = (
            "1" if args.pretrain_epochs == "40" else args.pretrain_epochs
        )
        args.pretrain_batch_size = (
            8 if args.pretrain_batch_size == 32 else args.pretrain_batch_size
        )
        args.finetune_steps = 3 if args.finetune_steps == 200 else args.finetune_steps
        args.finetune_batch_size = (
            4 if args.finetune_batch_size == 8 else args.finetune_batch_size
        )
    if args.image_size % 32:
        parser.error(
            f"--image-size must be a multiple of 32 (FlexibleUNet), got {args.image_size}"
        )
    if args.pretrain_epochs != "auto":
        if not (args.pretrain_epochs.isdigit() and int(args.pretrain_epochs) >= 1):
            parser.error(
                "--pretrain-epochs must be a positive int or 'auto', got "
                f"{args.pretrain_epochs!r}"
            )
        args.pretrain_epochs = int(args.pretrain_epochs)
    if args.folds < 2:
        parser.error("--folds must be at least 2")
    if args.data is None:
        parser.error("ISIC data not found: pass --data")
    try:
        parse_sweep(args.sweep)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start = time.time()
    deadline = start + 60 * args.time_budget_minutes
    cuda = args.device.startswith("cuda")
    args.precision = args.precision or ("bf16-mixed" if cuda else "32-true")
    if args.finetune_workers is None:
        args.finetune_workers = 2 if cuda else 0
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    header_path = out / "isic_segmentation_header.json"
    if args.aggregate_only:
        return report(out, json.loads(header_path.read_text()))

    env = environment(args.device)
    pairs = decode_pairs(args.data, args.image_size, args.cache_dir, args.limit)
    print(
        f"{len(pairs)} pairs decoded at {args.image_size} px in {time.time() - start:.1f} s",
        flush=True,
    )
    base = {
        "device": args.device,
        "precision": args.precision,
        "channels_last": args.channels_last == "on"
        or (args.channels_last == "auto" and cuda),
        "threads": args.threads,
        "backbone": args.backbone,
        "seed": args.seed,
        "deadline": deadline,
    }
    auto = args.pretrain_epochs == "auto"
    planning: dict[str, Any] = {}
    if auto:
        cost = calibrate(args, pairs, base)
        args.pretrain_epochs = args.max_pretrain_epochs  # placeholder until planned
        jobs = build_jobs(args, pairs, base)
        available = deadline - time.time() - (40.0 if cuda else 15.0)
        planning = plan_epochs(args, jobs, cost, available)
        args.pretrain_epochs = planning["epochs"]
        for job in jobs:
            if job.spec["kind"] == "pretrain":
                job.spec["epochs"] = args.pretrain_epochs
                if not cuda:
                    job.spec["max_train_s"] = planning["max_train_s"][job.id]
        planning["calibration"] = cost
        print(
            f"plan: {json.dumps({k: v for k, v in planning.items() if k != 'max_train_s'})}",
            flush=True,
        )
        if args.plan_only:
            return {"plan": planning}
    else:
        jobs = build_jobs(args, pairs, base)
    sweep = {m: v for m, v in parse_sweep(args.sweep).items() if m in args.methods}
    inner = next(
        (
            j.spec
            for j in jobs
            if j.spec.get("phase") == "tune" and j.spec["kind"] == "finetune"
        ),
        None,
    )
    fold_sizes = [
        len(f) for f in make_folds([p["id"] for p in pairs], args.folds, args.seed)
    ]
    protocol = (
        f"Protocol: {len(pairs)} pairs at {args.image_size} px, {args.folds}-fold CV (test folds of {fold_sizes} pairs); "
        f"pretraining {args.pretrain_epochs} epochs at {args.pretrain_size or args.image_size} px, batch {args.pretrain_batch_size}, "
        f"SGD lr {args.lr_per_128 * args.pretrain_batch_size / 128:g} (0.06 · batch/128), momentum 0.9, weight decay {args.weight_decay:g}, cosine, "
        f"{args.backbone}, on the training folds' images only; fine-tuning LesionSegmentation (FlexibleUNet, lightly-derm-{args.backbone} encoder) "
        f"for {args.finetune_steps} steps of batch {args.finetune_batch_size} (the same for every label fraction), AdamW lr {args.finetune_lr:g}, "
        f"weight decay 1e-4, cosine, DiceCE loss, MONAI flips/rotations/affine/intensity augmentation; "
        f"label fractions {', '.join(f'{f:.0%}' for f in args.fractions)} of the training fold (nested subsets), fine-tuning seeds {args.seeds}; "
        f"scores at {args.image_size} px on the test fold (ISIC 2017 thresholded Jaccard: per-image Jaccard < 0.65 counts 0)."
    )
    header = {
        "smoke": args.smoke,
        "command": command_line(),
        "environment": env,
        "protocol": protocol,
        "methods": args.methods,
        "random": args.random,
        "folds": args.folds,
        "fold_sizes": fold_sizes,
        "seeds": args.seeds,
        "fractions": args.fractions,
        "sweep": sweep,
        "sweep_fraction": args.sweep_fraction,
        "inner": {
            "train": len(inner["train_ids"]) if inner else 0,
            "val": len(inner["test_ids"]) if inner else 0,
        },
        "time_budget_minutes": args.time_budget_minutes,
        "epochs_mode": "chosen by --pretrain-epochs auto to fit the time budget"
        if auto
        else "fixed",
        "plan": planning,
    }
    write_json(header_path, header)
    workers = (
        args.jobs
        if args.jobs is not None
        else (8 if cuda else max(1, (os.cpu_count() or 1) // args.threads))
    )
    print(
        f"{len(jobs)} jobs on {workers} worker processes; budget ends {time.strftime('%H:%M:%S', time.localtime(deadline))}",
        flush=True,
    )
    last = [0.0]

    def on_result(_: dict[str, Any]) -> None:
        if (
            time.time() - last[0] > 5
        ):  # many small jobs: rewrite the tables at most every 5 s
            report(out, header)
            last[0] = time.time()

    run_jobs(
        jobs, workers, deadline, out / "jobs", log_dir=out / "logs", on_result=on_result
    )
    if not args.keep_checkpoints:
        import shutil

        for job in jobs:
            if job.spec.get("kind") == "pretrain":
                shutil.rmtree(Path(job.spec["checkpoint"]).parent, ignore_errors=True)
                break
    header["total_wall_s"] = round(time.time() - start, 1)
    write_json(header_path, header)
    summary = report(out, header)
    print(
        f"done in {header['total_wall_s']} s; tables in {out}/isic_segmentation_results.md / .rst / .json",
        flush=True,
    )
    return summary


if __name__ == "__main__":
    main()
