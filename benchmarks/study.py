"""The real-data study: a declarative grid run through lightly-derm's own jobs.

A study (a YAML file under ``benchmarks/studies/``) names datasets, methods, seeds and
label fractions, and per scale (``smoke``, ``cpu``, ``gpu``) the options of the jobs.
Every job of the grid calls :func:`lightly_derm.jobs.pretrain`, then
:func:`lightly_derm.jobs.segment` or :func:`lightly_derm.jobs.evaluate` with keyword
arguments, the code path a user runs:

- ISIC 2017 (``task: segmentation``): per method, seed and fold, pretraining on the
  images of the training folds only, then a MONAI FlexibleUNet fine-tuned from that
  backbone on each label fraction of the training folds' masks and scored on the held-out
  fold (Dice, Jaccard, thresholded Jaccard; ``--test-data`` scored once at the end of
  every fine-tune and used in no choice). Reference row: the same fine-tune from a random
  encoder (``random``, i.e. supervised from scratch).
- DermaMNIST (``task: classification``): per method and seed, pretraining on train, then
  kNN and linear probe with their settings chosen on val and scores on test. Reference
  rows: a random-init backbone under the same protocol, and ``supervised`` (the same
  ResNet fine-tuned end to end on all training labels by ``evaluate``'s fine-tuning).
- ImageNet (``imagenet`` reference and ``imagenet_methods``): the reference row
  ``imagenet`` is transfer learning without SSL — ``segment`` / ``evaluate`` with
  ``checkpoint="imagenet:efficientnet-lite0"`` (the ImageNet-1k EfficientNet-Lite0 of
  ``lightly-derm[imagenet]``, its TF input scaling applied by the jobs). Each method of
  ``imagenet_methods`` also runs "continued from ImageNet" (job method
  ``<method>+imagenet``): pretraining with ``backbone=efficientnet-lite0`` and
  ``backbone_weights="imagenet:efficientnet-lite0"``, then the same downstream job. FG-SSL
  continued from ImageNet runs with its authors' preset (their loss and learning rates,
  the backbone's rate a tenth, as in the paper), not the study's equal optimiser; the
  other methods keep the dataset's ``method_args``, updated by its ``+imagenet`` entry
  where it has one.

Each job runs in its own process (its own session, killed with its children at its
deadline), several at a time (they share the GPU at the ``gpu`` scale), and writes its
JSON result into ``OUT/results/`` the moment it finishes; a rerun skips finished jobs,
and a run cut short keeps what finished. ``OUT/report.md``, ``report.rst`` and
``study.png`` are rewritten by :mod:`study_report` after every job.

Run (from the repository root)::

    python -m benchmarks.study --study benchmarks/studies/derm_ssl.yaml --scale smoke \\
        --out /tmp/study_smoke
    python -m benchmarks.study --study benchmarks/studies/derm_ssl.yaml --scale cpu \\
        --out /tmp/study_cpu --plan-only
    python -m benchmarks.study --study benchmarks/studies/derm_ssl.yaml --scale gpu \\
        --out benchmarks/results/study_gpu_adamw

Data: each dataset's ``data`` is a folder name looked up under ``--data-root`` (default:
``benchmarks/data``, then a ``shared/data`` folder above the checkout). For a device
machine, copy the data into the ignored ``benchmarks/data/`` and name it in the run's
``carry`` (see docs/results.rst).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
import traceback
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
REPO = HERE.parent

import study_report  # noqa: E402

SCALES: tuple[str, ...] = ("smoke", "cpu", "gpu")
#: Methods that are no pretraining but reference rows.
REFERENCES: tuple[str, ...] = study_report.REFERENCE_ROWS
#: The named weights of the ImageNet rows and the backbone they fit.
IMAGENET_WEIGHTS = "imagenet:efficientnet-lite0"
IMAGENET_BACKBONE = "efficientnet-lite0"
#: The suffix of a method continued from ImageNet (``gravis+imagenet``).
IMAGENET_SUFFIX = "+imagenet"
#: Methods whose continued pretraining keeps their own (the authors') preset.
AUTHORS_PRESET_FROM_IMAGENET = frozenset({"fgssl"})
#: The fold split is fixed; the seeds vary pretraining, label subsets and fine-tuning.
FOLD_SEED = 0
#: Options the driver sets for every job (quiet, no per-job plots).
QUIET = {"progress_bar": False, "plots": False}
#: The keys a study (after merging a scale) and each of its datasets may have.
STUDY_KEYS = frozenset(
    "name description methods references seeds datasets parallel threads "
    "timeout_minutes budget_minutes self_check self_check_timeout_s estimate "
    "keep_checkpoints imagenet_methods".split()
)
DATASET_KEYS = frozenset(
    "task data folds only_folds label_fractions limit resize subset pretrain "
    "method_args segment segment_epochs segment_repeats evaluate supervised "
    "estimate".split()
)


# ----------------------------------------------------------------------------- config
def deep_merge(base: dict[str, Any], update: dict[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``update`` merged in (nested dicts merged, everything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_study(path: str | Path, scale: str, tiny: bool = False) -> dict[str, Any]:
    """The study of ``path`` resolved for one scale (and ``tiny``): one flat settings dict.

    Raises:
        ValueError: An unknown scale or a study without ``datasets`` (named).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    scales = raw.get("scales", {})
    if scale not in scales:
        raise ValueError(
            f"--scale {scale!r} is not in {path}; it has {', '.join(scales) or 'none'}"
        )
    if not raw.get("datasets"):
        raise ValueError(f"{path} defines no datasets")
    study = {k: v for k, v in raw.items() if k not in ("scales", "tiny")}
    study = deep_merge(study, scales[scale])
    if tiny:
        study = deep_merge(study, raw.get("tiny", {}))
    unknown = set(study) - STUDY_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    for name, spec in study["datasets"].items():
        unknown = set(spec) - DATASET_KEYS
        if unknown:
            raise ValueError(
                f"{path}: dataset {name!r} has unknown key(s) {', '.join(sorted(unknown))}"
            )
        if spec.get("task") not in ("segmentation", "classification"):
            raise ValueError(
                f"dataset {name!r}: task must be 'segmentation' or 'classification', "
                f"got {spec.get('task')!r}"
            )
    study["scale"] = scale
    study["tiny"] = tiny
    study["study_file"] = str(path)
    return study


# ----------------------------------------------------------------------------- jobs
@dataclass
class Job:
    """One unit of the grid: a pretraining and what is scored from it (or a reference)."""

    dataset: str
    task: str
    method: str
    seed: int
    fold: int | None = None
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """``dataset-method-seedS[-foldF]``, also the result file's name."""
        fold = "" if self.fold is None else f"-fold{self.fold}"
        return f"{self.dataset}-{self.method}-seed{self.seed}{fold}"


def build_jobs(study: dict[str, Any], prepared: dict[str, dict[str, Any]]) -> list[Job]:
    """The grid's jobs, ordered seed first so that a run cut short has whole seeds."""
    methods = [
        *study["methods"],
        *(f"{m}{IMAGENET_SUFFIX}" for m in study.get("imagenet_methods") or []),
    ]
    references = list(study.get("references", []))
    jobs: list[Job] = []
    for seed in study["seeds"]:
        for name, spec in study["datasets"].items():
            data = prepared[name]
            if spec["task"] == "segmentation":
                for fold in data["folds"]:
                    for method in [
                        *methods,
                        *(["random"] if "random" in references else []),
                        *(["imagenet"] if "imagenet" in references else []),
                    ]:
                        jobs.append(
                            Job(
                                name,
                                "segmentation",
                                method,
                                seed,
                                fold,
                                {**spec, **data},
                            )
                        )
            else:
                for method in methods:
                    jobs.append(
                        Job(
                            name, "classification", method, seed, None, {**spec, **data}
                        )
                    )
                if "random" in references or "supervised" in references:
                    jobs.append(
                        Job(
                            name,
                            "classification",
                            "random",
                            seed,
                            None,
                            {**spec, **data},
                        )
                    )
                if "imagenet" in references:
                    jobs.append(
                        Job(
                            name,
                            "classification",
                            "imagenet",
                            seed,
                            None,
                            {**spec, **data},
                        )
                    )
    return jobs


def split_method(method: str) -> tuple[str, bool]:
    """``(registered method, continued from ImageNet)`` of a job's method name."""
    if method.endswith(IMAGENET_SUFFIX):
        return method[: -len(IMAGENET_SUFFIX)], True
    return method, False


def _method_args(spec: dict[str, Any], method: str) -> dict[str, Any]:
    """The dataset's ``method_args``: those under ``all``, then the method's own, then
    for a method continued from ImageNet those under ``+imagenet`` (e.g. another
    optimiser for the pretrained backbone).

    A method continued from ImageNet that keeps its authors' preset
    (:data:`AUTHORS_PRESET_FROM_IMAGENET`) gets none.
    """
    method, from_imagenet = split_method(method)
    if from_imagenet and method in AUTHORS_PRESET_FROM_IMAGENET:
        return {}
    args = spec.get("method_args") or {}
    merged = {**(args.get("all") or {}), **(args.get(method) or {})}
    if from_imagenet:
        merged.update(args.get(IMAGENET_SUFFIX) or {})
    return merged


def _backbone(spec: dict[str, Any], method: str) -> str:
    """The architecture of the encoder a job of ``method`` starts from when its
    pretraining gives none (reference rows) or a fixed one (continued from ImageNet):
    the ImageNet rows' EfficientNet-Lite0, otherwise the pretraining's ``backbone``."""
    if method == "imagenet" or split_method(method)[1]:
        return IMAGENET_BACKBONE
    return str((spec.get("pretrain") or {}).get("backbone", "resnet18"))


def interrupted_pretraining(out: Path) -> bool:
    """Whether ``out`` holds a pretraining run with a checkpoint to continue from.

    A job that finished deletes its Lightning checkpoints (unless ``keep_checkpoints``),
    so a ``checkpoints/last.ckpt`` next to the run's ``config.yaml`` means the job was
    cut short: after its pretraining (the fine-tunes are redone) or within it.
    """
    return (out / "config.yaml").is_file() and (
        out / "checkpoints" / "last.ckpt"
    ).is_file()


class StudyStopped(KeyboardInterrupt):
    """Raised in the driver by a stopping signal (SIGTERM), as Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


#: Fine-tune repeat r of a job with seed s uses seed s + r * this (``segment_repeats``).
FINETUNE_SEED_STRIDE = 1000


def _by_fraction(values: dict[Any, Any] | None) -> dict[float, Any]:
    """``{label fraction: value}`` of a per-fraction study setting (YAML keys as floats)."""
    return {float(k): v for k, v in (values or {}).items()}


def run_job(job: dict[str, Any], job_dir: Path) -> dict[str, Any]:
    """Runs one job in this process through the library's jobs; returns its result record.

    Besides the scores, the record says where the job's time went: ``import_seconds``
    (torch, Lightning, MONAI), ``pretrain.seconds``, each row's ``seconds`` (one
    fine-tune or evaluation) and the whole ``seconds``.
    """
    started = time.perf_counter()
    from lightly_derm.jobs import evaluate, pretrain, segment

    spec = job["spec"]
    method, seed = job["method"], int(job["seed"])
    record: dict[str, Any] = {
        **{k: job[k] for k in ("dataset", "task", "method", "seed", "fold")}
    }
    record["id"] = job["id"]
    record["protocol"] = protocol(spec)
    record["rows"] = []
    record["import_seconds"] = round(time.perf_counter() - started, 2)
    checkpoint: str | None = None
    pretrain_opts = dict(spec.get("pretrain") or {})
    base, from_imagenet = split_method(method)
    if from_imagenet:
        pretrain_opts.update(
            backbone=IMAGENET_BACKBONE, backbone_weights=IMAGENET_WEIGHTS
        )
    backbone = _backbone(spec, method)
    if method == "imagenet":
        checkpoint = IMAGENET_WEIGHTS  # transfer learning, no SSL
    if method not in REFERENCES:
        pretrain_out = job_dir / "pretrain"
        if interrupted_pretraining(pretrain_out):
            # a job cut short (timeout, budget, Ctrl-C) continues its pretraining from
            # the last checkpoint instead of starting again; pretrain refuses a resume
            # whose options differ from the run's
            result = pretrain(out=str(pretrain_out), resume=True, verbose=True)
        else:
            result = pretrain(
                method=base,
                method_args=_method_args(spec, method) or None,
                data=spec["pretrain_data"],
                seed=seed,
                out=str(pretrain_out),
                overwrite=True,
                verbose=True,
                tensorboard=False,
                **{**QUIET, **pretrain_opts},
            )
        checkpoint = str(job_dir / "pretrain")
        record["pretrain"] = {
            k: result.summary.get(k)
            for k in ("images", "global_step", "seconds", "best_train_loss_epoch")
        }
        record["pretrain"]["final_train_loss"] = (
            result.summary.get("metrics") or {}
        ).get("train_loss_epoch")
        # how far the pretraining turned each stage's filters (degrees; the pretrain
        # job's EncoderChange): whether it moved the encoder away from random init
        change = result.summary.get("encoder_change") or {}
        record["pretrain"]["turned"] = {
            stage: round(float(c["turned"]), 2) for stage, c in change.items()
        }
        record["pretrain"]["config"] = result.config.given()
    if job["task"] == "segmentation":
        epochs_by_fraction = _by_fraction(spec.get("segment_epochs"))
        repeats_by_fraction = _by_fraction(spec.get("segment_repeats"))
        for fraction in spec["label_fractions"]:
            opts = {**QUIET, "backbone": backbone, **(spec.get("segment") or {})}
            if float(fraction) in epochs_by_fraction:
                opts["epochs"] = epochs_by_fraction[float(fraction)]
            if checkpoint is not None:
                opts.pop("backbone", None)
            for repeat in range(int(repeats_by_fraction.get(float(fraction), 1))):
                # repeat r fine-tunes with seed + 1000 r (other masks, decoder init
                # and batches); every method's repeat r has the same seed, so they pair
                finetune_started = time.perf_counter()
                report = segment(
                    checkpoint=checkpoint,
                    data=spec["train_data"],
                    val_data=spec["val_data"],
                    test_data=spec.get("test_data"),
                    label_fraction=float(fraction),
                    seed=seed + FINETUNE_SEED_STRIDE * repeat,
                    out=str(
                        job_dir
                        / f"segment_{fraction:g}{f'_r{repeat}' if repeat else ''}"
                    ),
                    overwrite=True,
                    tensorboard=False,
                    **opts,
                )
                scores = next(iter(report["results"].values()))
                row = {
                    "method": method,
                    "label_fraction": float(fraction),
                    "repeat": repeat,
                    "epochs": report["epochs"],
                    "image_size": report["input_size"],
                    "backbone": report["backbone"],
                    **{k: v for k, v in scores.items() if k not in ("folds", "std")},
                    "seconds": round(time.perf_counter() - finetune_started, 2),
                }
                record["rows"].append(row)
    else:
        if checkpoint is None:
            import torch

            from lightly_derm.models import resnet

            torch.manual_seed(seed)
            checkpoint = str(job_dir / f"random_{backbone}.pt")
            job_dir.mkdir(parents=True, exist_ok=True)
            torch.save(resnet(backbone).state_dict(), checkpoint)
        opts = {**QUIET, **(spec.get("evaluate") or {})}
        supervised = method == "random" and "supervised" in job.get("references", [])
        if supervised:
            # one evaluate: the random backbone's frozen features (the random-init
            # row) and its end-to-end fine-tuning on the labels (the supervised row)
            opts = {**opts, "fractions": [1.0], **(spec.get("supervised") or {})}
        evaluate_started = time.perf_counter()
        results = evaluate(
            checkpoint=checkpoint,
            backbone=backbone,
            data=spec["eval_data"],
            seed=seed,
            out=str(job_dir / "evaluate"),
            overwrite=True,
            **opts,
        )
        record["rows"].append(
            {
                **_classification_row(method, results),
                "seconds": round(time.perf_counter() - evaluate_started, 2),
            }
        )
        for fraction, scores in results["finetune"].items() if supervised else ():
            record["rows"].append(
                {
                    "method": "supervised",
                    "label_fraction": float(fraction),
                    "epochs": scores.get("finetune_epochs"),
                    "train_images": scores.get("finetune_num_train"),
                    "supervised_accuracy": scores.get("finetune_accuracy"),
                    "supervised_balanced_accuracy": scores.get(
                        "finetune_balanced_accuracy"
                    ),
                }
            )
    record["status"] = "ok"
    record["seconds"] = round(time.perf_counter() - started, 2)
    if not job.get("keep_checkpoints"):
        # Lightning checkpoints are ~100-200 MB each and 72 jobs would fill a disk;
        # the backbones (backbone.pt), metrics and results stay
        for path in job_dir.rglob("*.ckpt"):
            path.unlink()
    return record


def _classification_row(method: str, results: dict[str, Any]) -> dict[str, Any]:
    knn, linear = results["knn"], results["linear"]
    row = {
        "method": method,
        "input_size": results["input_size"],
        "backbone": results["backbone"],
        "train_images": results["data"]["train_images"],
        "test_images": results["data"]["test_images"],
    }
    for key in ("knn_accuracy", "knn_balanced_accuracy", "knn_k"):
        row[key] = knn.get(key)
    for key in (
        "linear_accuracy",
        "linear_balanced_accuracy",
        "linear_weight_decay",
        "linear_class_weight",
    ):
        row[key] = linear.get(key)
    row["selection"] = results.get("selection")
    return row


def _child_main(spec_path: str) -> int:
    """Entry of a job's process: runs it and writes its result JSON (atomically)."""
    job = json.loads(Path(spec_path).read_text())
    threads = int(job.get("threads") or 0)
    if threads:
        import torch

        torch.set_num_threads(threads)
    record = run_job(job, Path(job["job_dir"]))
    write_json(Path(job["result"]), record)
    return 0


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Writes ``data`` to ``path`` through a temporary file (never a half-written result)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


# ----------------------------------------------------------------------------- data
def find_data(name: str, roots: list[Path]) -> Path:
    """The first ``root/name`` that exists; FileNotFoundError naming all tried."""
    for root in roots:
        if (root / name).exists():
            return root / name
    tried = ", ".join(str(r / name) for r in roots)
    raise FileNotFoundError(
        f"dataset {name!r} not found (tried {tried}); pass --data-root or copy it into "
        "benchmarks/data/"
    )


def default_roots() -> list[Path]:
    """``benchmarks/data``, then the first ``shared/data`` above the checkout."""
    roots = [HERE / "data"]
    roots += [
        p / "shared" / "data" for p in HERE.parents if (p / "shared" / "data").is_dir()
    ][:1]
    return roots


def _resize_pair(
    image: Path, mask: Path, out: Path, side: int | None, image_format: str = "png"
) -> None:
    """Copies of one pair, shorter side at most ``side`` (image: area, mask: nearest).

    The mask is written as PNG, the image as PNG or (``image_format="jpg"``) JPEG of
    quality 95. Written through temporary names, so an interrupted run leaves no
    truncated file; existing copies are kept.
    """
    from PIL import Image

    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    target_image = out / "images" / (image.stem + "." + image_format)
    target_mask = out / "masks" / (mask.stem + ".png")
    if target_image.exists() and target_mask.exists():
        return
    with Image.open(image) as img, Image.open(mask) as msk:
        img, msk = img.convert("RGB"), msk.convert("L")
        if side:
            scale = side / min(img.size)
            if scale < 1:
                size = (
                    max(1, round(img.width * scale)),
                    max(1, round(img.height * scale)),
                )
                img = img.resize(size, Image.Resampling.BOX)
                msk = msk.resize(size, Image.Resampling.NEAREST)
        for picture, target in ((img, target_image), (msk, target_mask)):
            tmp = target.with_name(target.stem + ".tmp" + target.suffix)
            if target.suffix == ".jpg":
                picture.save(tmp, format="JPEG", quality=95)
            else:
                picture.save(tmp, format="PNG")
            tmp.replace(target)


def _resize_pairs(
    pairs: list[dict[str, Any]],
    out: Path,
    side: int | None,
    image_format: str = "png",
) -> None:
    """:func:`_resize_pair` for every pair, in threads (PIL decodes without the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(
            pool.map(
                lambda p: _resize_pair(
                    Path(p["image"]), Path(p["label"]), out, side, image_format
                ),
                pairs,
            )
        )


def stage_data(study: dict[str, Any], roots: list[Path], dest: Path) -> list[Path]:
    """Copies of a scale's datasets small enough to travel with a checkout.

    For a device machine, whose call carries at most 64 MiB (the wheels the study
    needs take 20 MiB there): each ISIC dataset is written as the run itself would
    stage it (shorter side ``resize``, area resampling; masks PNG, nearest), its images
    as JPEG of quality 95 instead of PNG (290 images at 256 px: 8 MB instead of 35 MB;
    a mean absolute change of about 1.5 grey levels in 255); its ``*.csv``/``*.txt``/
    ``*.md`` files are copied. A DermaMNIST export is copied whole (its zip is 7 MB;
    the run draws its subsets from the copy). Files already in ``dest`` are kept, never
    overwritten. A run reads the copies with ``--data-root dest`` (``benchmarks/data``
    is a default root); they are staged again from there, unchanged in size.

    Returns:
        The dataset folders written under ``dest``.
    """
    import shutil

    written = []
    sources = [r for r in roots if r.resolve() != dest.resolve()]
    for spec in study["datasets"].values():
        source = find_data(spec["data"], sources)
        target = dest / spec["data"]
        target.mkdir(parents=True, exist_ok=True)
        if spec["task"] == "segmentation":
            pairs = isic_pairs(source, spec)
            _resize_pairs(pairs, target, spec.get("resize"), image_format="jpg")
            extras = [
                f for f in source.iterdir() if f.suffix in (".csv", ".txt", ".md")
            ]
        else:
            extras = [f for f in source.iterdir() if f.is_file()]
        for file in extras:
            if not (target / file.name).exists():
                shutil.copy2(file, target / file.name)
        written.append(target)
    return written


def _link_pairs(pairs: list[dict[str, Any]], folder: Path) -> None:
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for pair in pairs:
        for key, sub in (("image", "images"), ("label", "masks")):
            source = Path(pair[key]).resolve()
            link = folder / sub / source.name
            if not link.exists():
                link.symlink_to(source)


def isic_folds(ids: list[str], k: int, seed: int = FOLD_SEED) -> list[list[str]]:
    """``k`` held-out folds of the sorted ids: a seeded shuffle dealt round-robin."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    return [sorted(order[i::k]) for i in range(k)]


def isic_pairs(source: Path, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """A dataset's ISIC pairs in id order, the first ``limit`` of them if set."""
    from lightly_derm.data import find_isic_pairs

    pairs = sorted(find_isic_pairs(source), key=lambda p: p.get("id", p["image"]))
    return pairs[: int(spec["limit"])] if spec.get("limit") else pairs


def prepare_isic(
    source: Path, spec: dict[str, Any], out: Path, test_data: Path | None
) -> dict[str, Any]:
    """Decoded-once copies (shorter side ``resize``) and per-fold folders of symlinks."""
    from lightly_derm.data import find_isic_pairs

    pairs = isic_pairs(source, spec)
    side = spec.get("resize")
    cache = out / f"isic_{side or 'full'}_{len(pairs)}"
    _resize_pairs(pairs, cache, side)
    decoded = {p["id"]: p for p in find_isic_pairs(cache)}
    k = int(spec.get("folds", 3))
    folds = isic_folds(list(decoded), k)
    keep = spec.get("only_folds")
    prepared: dict[str, Any] = {
        "folds": list(keep if keep is not None else range(k)),
        "fold_dirs": {},
    }
    for index, held_out in enumerate(folds):
        folder = cache / "folds" / f"fold_{index}"
        train = [decoded[i] for i in decoded if i not in set(held_out)]
        _link_pairs(train, folder / "train")
        _link_pairs([decoded[i] for i in held_out], folder / "val")
        prepared["fold_dirs"][index] = {
            "pretrain_data": str(folder / "train"),
            "train_data": str(folder / "train"),
            "val_data": str(folder / "val"),
            "train_pairs": len(train),
            "val_pairs": len(held_out),
        }
    if test_data is not None:
        test_pairs = find_isic_pairs(test_data)
        test_cache = out / f"isic_test_{side or 'full'}_{len(test_pairs)}"
        _resize_pairs(test_pairs, test_cache, side)
        prepared["test_data"] = str(test_cache)
    prepared["pairs"] = len(pairs)
    return prepared


def prepare_dermamnist(source: Path, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """The export itself, or a seeded subset per split written as the same zip layout."""
    subset = spec.get("subset")
    if not subset:
        return {"eval_data": str(source), "pretrain_data": str(source)}
    import csv

    counts = {k: int(v) for k, v in subset.items()}
    folder = out / (
        "dermamnist_" + "_".join(f"{k}{v}" for k, v in sorted(counts.items()))
    )
    zip_path = folder / "dermamnist_jpg.zip"
    if not zip_path.is_file():
        with open(source / "labels.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        rng = random.Random(FOLD_SEED)
        chosen = []
        for split, count in counts.items():
            ids = [r for r in rows if r["image_id"].split("_")[1] == split]
            rng.shuffle(ids)
            chosen += sorted(ids[:count], key=lambda r: r["image_id"])
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "labels.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(chosen)
        tmp = zip_path.with_suffix(".tmp")
        with (
            zipfile.ZipFile(source / "dermamnist_jpg.zip") as src,
            zipfile.ZipFile(tmp, "w") as dst,
        ):
            for row in chosen:
                name = f"images/{row['image_id']}.jpg"
                dst.writestr(name, src.read(name))
        tmp.replace(zip_path)
    return {"eval_data": str(folder), "pretrain_data": str(folder)}


def prepare_data(
    study: dict[str, Any], roots: list[Path], out: Path, test_data: Path | None
) -> dict[str, dict[str, Any]]:
    """Resolves and stages every dataset of the study (idempotent)."""
    prepared = {}
    for name, spec in study["datasets"].items():
        source = find_data(spec["data"], roots)
        if spec["task"] == "segmentation":
            prepared[name] = prepare_isic(source, spec, out / "data", test_data)
        else:
            prepared[name] = prepare_dermamnist(source, spec, out / "data")
        prepared[name]["source"] = str(source)
    return prepared


def job_payload(job: Job, study: dict[str, Any], out: Path) -> dict[str, Any]:
    """The JSON a job's process receives."""
    spec = dict(job.spec)
    if job.fold is not None:
        spec.update(spec["fold_dirs"][job.fold])
    spec.pop("fold_dirs", None)
    return {
        **asdict(job),
        "id": job.id,
        "spec": spec,
        "references": list(study.get("references", [])),
        "threads": study.get("threads"),
        "keep_checkpoints": bool(study.get("keep_checkpoints")),
        "job_dir": str(out / "jobs" / job.id),
        "result": str(out / "results" / f"{job.id}.json"),
    }


# ----------------------------------------------------------------------------- plan
def estimate_seconds(job: Job, study: dict[str, Any]) -> float:
    """A rough wall time of one job from the ``estimate`` constants (scale, then dataset).

    ``startup_s`` per job; ``pretrain_image_epoch_s`` per image and epoch of lightly BYOL
    times the method's ``method_cost``; ``segment_image_epoch_s`` per training image and
    epoch of a fine-tune (validation images count a third, at every
    ``val_every_n_epochs``-th epoch and once at the end); ``feature_image_s`` per
    image of a feature pass (a supervised epoch counts as half a BYOL image-epoch).
    """
    spec = job.spec
    est = {**(study.get("estimate") or {}), **(spec.get("estimate") or {})}
    seconds = float(est.get("startup_s", 15))
    pre = spec.get("pretrain") or {}
    factor = float((est.get("method_cost") or {}).get(split_method(job.method)[0], 1.0))
    per_pretrain = factor * float(est.get("pretrain_image_epoch_s", 0.03))
    if job.task == "segmentation":
        fold = spec["fold_dirs"][job.fold]
        if job.method not in REFERENCES:
            seconds += fold["train_pairs"] * pre.get("epochs", 1) * per_pretrain
        seg = spec.get("segment") or {}
        by_fraction = _by_fraction(spec.get("segment_epochs"))
        repeats = _by_fraction(spec.get("segment_repeats"))
        val_every = int(seg.get("val_every_n_epochs", 1))
        for fraction in spec["label_fractions"]:
            epochs = by_fraction.get(float(fraction), seg.get("epochs", 20))
            runs = int(repeats.get(float(fraction), 1))
            images = max(2, round(fold["train_pairs"] * float(fraction)))
            validations = epochs // val_every + 1  # + the final model's score
            seconds += (
                (images * epochs + fold["val_pairs"] / 3 * validations)
                * runs
                * float(est.get("segment_image_epoch_s", 0.03))
            )
    else:
        subset = spec.get("subset") or {"train": 7007, "val": 1003, "test": 2005}
        if job.method not in REFERENCES:
            seconds += subset["train"] * pre.get("epochs", 1) * per_pretrain
        seconds += sum(subset.values()) * float(est.get("feature_image_s", 0.002))
        if job.method == "random" and "supervised" in study.get("references", []):
            sup = spec.get("supervised") or {}
            seconds += (
                subset["train"]
                * sup.get("finetune_epochs", 20)
                * float(est.get("pretrain_image_epoch_s", 0.03))
                / 2
            )
    return seconds


def print_plan(jobs: list[Job], study: dict[str, Any], done: set[str]) -> float:
    """Prints the jobs and the estimated wall time; returns it in seconds."""
    total = 0.0
    for job in jobs:
        seconds = estimate_seconds(job, study)
        state = "done" if job.id in done else f"~{seconds:5.0f} s"
        if job.id not in done:
            total += seconds
        print(f"  {job.id:<45} {state}")
    parallel = max(1, int(study.get("parallel", 1)))
    wall = total / parallel
    print(
        f"{len(jobs)} jobs ({sum(job.id in done for job in jobs)} done), about {total / 60:.1f} job-minutes; "
        f"{parallel} at a time: about {wall / 60:.1f} minutes of wall time "
        f"(budget {study.get('budget_minutes', '-')} minutes)"
    )
    return wall


# ----------------------------------------------------------------------------- running
#: The parts of a job's spec that make its protocol: a finished job counts only if the
#: study would run it the same way today.
PROTOCOL_KEYS = (
    "label_fractions",
    "limit",
    "resize",
    "subset",
    "pretrain",
    "method_args",
    "segment",
    "segment_epochs",
    "segment_repeats",
    "evaluate",
    "supervised",
)


def protocol(spec: dict[str, Any]) -> dict[str, Any]:
    """The protocol part of a job's spec, as its result JSON stores it."""
    part = {k: spec[k] for k in PROTOCOL_KEYS if k in spec}
    return json.loads(json.dumps(part, default=str))  # float keys -> strings, as stored


def job_protocol(spec: dict[str, Any], method: str) -> dict[str, Any]:
    """What of a stored or current protocol one job of ``method`` actually runs with.

    The ``method_args`` the method gets (:func:`_method_args`: another method's entry
    does not concern it), and for the reference rows, which do not pretrain, instead of
    the pretraining only the encoder they are built from (:func:`_backbone`): a change
    of the pretraining's epochs or optimiser does not make their finished fine-tunes
    another protocol.
    """
    part = protocol(spec)
    if method in REFERENCES:
        part.pop("method_args", None)
        part.pop("pretrain", None)
        part["backbone"] = _backbone(spec, method)
    elif "method_args" in part:
        part["method_args"] = _method_args(part, method)
    return part


def check_protocol(out: Path, jobs: list[Job], done: set[str]) -> None:
    """Refuses to continue ``out`` if a finished job ran under another protocol.

    A rerun skips finished jobs; after a change of the study (another label fraction,
    more fine-tuning epochs, ...) their results would be mixed with new ones in one
    table. Raises :class:`SystemExit` naming the first job, the differing setting and
    what to do; nothing in ``out`` is touched.
    """
    for job in jobs:
        if job.id not in done:
            continue
        stored = None
        # the result's record; results written before it held the protocol: the job's
        # own spec file (local to the machine that ran it)
        for path, key in (
            (out / "results" / f"{job.id}.json", "protocol"),
            (out / "jobs" / f"{job.id}.json", "spec"),
        ):
            try:
                stored = json.loads(path.read_text()).get(key)
            except (OSError, ValueError, AttributeError):
                continue
            if stored is not None:
                break
        if stored is None:
            continue
        old, new = job_protocol(stored, job.method), job_protocol(job.spec, job.method)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            key = changed[0]
            raise SystemExit(
                f"{out} holds {job.id} from another protocol ({key}: "
                f"{old.get(key)!r} then, {new.get(key)!r} now): pass a new --out "
                "(or move that folder away) so that the tables compare like with like"
            )


def finished(out: Path) -> set[str]:
    """Ids of jobs whose result JSON says ``ok``."""
    done = set()
    for path in (out / "results").glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("status") == "ok":
            done.add(record.get("id", path.stem))
    return done


def run_summary(header: dict[str, Any]) -> dict[str, Any]:
    """What one invocation of the study adds to ``study.json``'s ``runs`` list."""
    keys = ("command", "started", "wall_seconds", "status")
    summary = {k: header[k] for k in keys if k in header}
    summary["commit"] = header.get("machine", {}).get("commit")
    return summary


def earlier_runs(out: Path) -> list[dict[str, Any]]:
    """The invocations recorded in an existing ``study.json`` (a study run in pieces:
    reruns that finish cut jobs, ``--seeds`` added later), oldest first."""
    try:
        previous = json.loads((out / "study.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(previous, dict):
        return []
    runs = previous.get("runs")
    if isinstance(runs, list):
        return [r for r in runs if isinstance(r, dict)]
    return [run_summary(previous)] if previous.get("command") else []


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_jobs(
    jobs: list[Job],
    study: dict[str, Any],
    out: Path,
    deadline: float,
    on_finish: Any = None,
) -> dict[str, str]:
    """Runs the jobs, ``parallel`` at a time, each in its own process with a timeout.

    Returns:
        ``{job id: "ok" | "failed" | "timeout" | "not started"}``.
    """
    parallel = max(1, int(study.get("parallel", 1)))
    timeout = float(study.get("timeout_minutes", 30)) * 60
    pending = list(jobs)
    running: dict[str, tuple[subprocess.Popen[bytes], float, Job, Path]] = {}
    status: dict[str, str] = {}
    (out / "logs").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    threads = study.get("threads")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("PYTHONUNBUFFERED", "1")

    def stop(signum: int, frame: Any) -> None:
        raise StudyStopped(signum)

    # the jobs run in their own sessions: a SIGTERM to the driver must stop them too
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while pending or running:
            while pending and len(running) < parallel and time.time() < deadline:
                job = pending.pop(0)
                payload = job_payload(job, study, out)
                spec_path = out / "jobs" / f"{job.id}.json"
                write_json(spec_path, payload)
                log = out / "logs" / f"{job.id}.log"
                with open(log, "wb") as handle:
                    process = subprocess.Popen(
                        [
                            sys.executable,
                            str(Path(__file__).resolve()),
                            "--run-job",
                            str(spec_path),
                        ],
                        stdout=handle,
                        stderr=subprocess.STDOUT,
                        cwd=str(REPO),
                        env=env,
                        start_new_session=True,
                    )
                running[job.id] = (
                    process,
                    min(time.time() + timeout, deadline),
                    job,
                    log,
                )
                print(f"[study] started {job.id}", flush=True)
            if not pending and not running:
                break
            if pending and not running and time.time() >= deadline:
                break
            time.sleep(0.5)
            for job_id, (process, ends, job, log) in list(running.items()):
                code = process.poll()
                if code is None and time.time() < ends:
                    continue
                if code is None:
                    _kill(process)
                    state = "timeout"
                else:
                    state = "ok" if code == 0 else "failed"
                del running[job_id]
                result = out / "results" / f"{job_id}.json"
                if state == "ok" and not result.is_file():
                    state = "failed"
                if state != "ok":
                    write_json(
                        result,
                        {
                            "id": job_id,
                            "dataset": job.dataset,
                            "task": job.task,
                            "method": job.method,
                            "seed": job.seed,
                            "fold": job.fold,
                            "status": state,
                            "returncode": code,
                            "log_tail": _log_tail(log),
                            "rows": [],
                        },
                    )
                status[job_id] = state
                print(f"[study] {state}: {job_id}", flush=True)
                if on_finish is not None:
                    on_finish()
    except KeyboardInterrupt:
        print("[study] interrupted: stopping the running jobs", flush=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        for process, _, _, _ in running.values():
            _kill(process)
    for job in pending:
        status.setdefault(job.id, "not started")
    return status


# ----------------------------------------------------------------------------- self-check
def self_check(
    study: dict[str, Any], prepared: dict[str, dict[str, Any]], out: Path
) -> None:
    """Runs one tiny job per dataset (2 steps, 1 epoch, first method) with a short timeout.

    Raises:
        SystemExit: The check failed or ran past its time; the log is printed.
    """
    started = time.time()
    check = copy.deepcopy(study)
    check["methods"] = study["methods"][:1]
    check["seeds"] = [0]
    check["references"] = []
    check["imagenet_methods"] = []
    check["parallel"] = len(study["datasets"])
    check["timeout_minutes"] = float(study.get("self_check_timeout_s", 60)) / 60
    jobs = []
    for spec in check["datasets"].values():
        spec["pretrain"] = {**(spec.get("pretrain") or {}), "epochs": 1, "max_steps": 2}
        spec["label_fractions"] = spec.get("label_fractions", [1.0])[-1:]
        spec["segment"] = {**(spec.get("segment") or {}), "epochs": 1, "limit": 16}
        spec["segment_epochs"] = {}
        spec["segment_repeats"] = {}
        spec["evaluate"] = {**(spec.get("evaluate") or {}), "fractions": []}
    for job in build_jobs(check, prepared):
        if job.fold is None or job.fold == prepared[job.dataset]["folds"][0]:
            jobs.append(job)
    check_out = out / "self_check"
    status = run_jobs(
        jobs, check, check_out, time.time() + check["timeout_minutes"] * 60
    )
    bad = {k: v for k, v in status.items() if v != "ok"}
    if bad:
        for job_id in bad:
            print(
                f"--- {job_id}: {bad[job_id]}\n{_log_tail(check_out / 'logs' / f'{job_id}.log', 40)}"
            )
        raise SystemExit(f"self-check failed ({', '.join(bad)}); nothing else was run")
    print(f"[study] self-check passed in {time.time() - started:.0f} s", flush=True)


def describe_machine() -> dict[str, Any]:
    """Python, torch, CPU count and GPU name of this machine."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        info["commit"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=REPO,
                capture_output=True,
                text=True,
            ).stdout.strip()
            or None
        )
    except OSError:
        info["commit"] = None
    return info


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.study", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--study", help="the study YAML (benchmarks/studies/*.yaml)")
    parser.add_argument("--scale", choices=SCALES, default="smoke")
    parser.add_argument("--out", help="the output folder (results/, report.md, ...)")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="the scale's grid at toy size (the YAML's tiny: block)",
    )
    parser.add_argument(
        "--plan-only",
        action="store_true",
        help="print the jobs and a time estimate, run nothing",
    )
    parser.add_argument(
        "--data-root",
        action="append",
        default=None,
        help="where dataset folders are (repeatable)",
    )
    parser.add_argument(
        "--test-data",
        help="an ISIC folder scored once after every fine-tune (no choice uses it)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        help="only these jobs' methods: methods (gravis), methods continued from "
        "ImageNet (gravis+imagenet) and reference rows (random, imagenet, supervised)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, help="only these seeds")
    parser.add_argument("--datasets", nargs="+", help="only these datasets")
    parser.add_argument(
        "--folds", nargs="+", type=int, help="only these ISIC folds (held-out fold)"
    )
    parser.add_argument(
        "--label-fractions",
        nargs="+",
        type=float,
        help="only these of the ISIC label fractions (the results then go into a "
        "folder of their own: the fractions are part of a job's protocol)",
    )
    parser.add_argument(
        "--parallel", type=int, help="jobs at a time (default: the scale's)"
    )
    parser.add_argument(
        "--budget-minutes",
        type=float,
        help="wall time after which running jobs are stopped (default: the scale's)",
    )
    parser.add_argument("--no-self-check", action="store_true")
    parser.add_argument(
        "--stage-data",
        metavar="DIR",
        help="write the scale's datasets, small enough for a device machine, into DIR "
        "(e.g. benchmarks/data) and stop",
    )
    parser.add_argument("--run-job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_job is None and args.study is None:
        parser.error("--study is required")
    if args.run_job is None and args.out is None and args.stage_data is None:
        parser.error("--out is required")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs a study (or, with ``--run-job``, one job in this process)."""
    args = parse_args(argv)
    if args.run_job:
        return _child_main(args.run_job)
    study = load_study(args.study, args.scale, tiny=args.tiny)
    if args.methods:
        # job names: a method, a method continued from ImageNet ("gravis+imagenet"),
        # a reference row ("random")
        study["methods"] = [
            m
            for m in args.methods
            if m not in REFERENCES and not m.endswith(IMAGENET_SUFFIX)
        ]
        study["imagenet_methods"] = [
            m.removesuffix(IMAGENET_SUFFIX)
            for m in args.methods
            if m.endswith(IMAGENET_SUFFIX)
        ]
        study["references"] = [
            m for m in study.get("references", []) if m in args.methods
        ]
    if args.seeds:
        study["seeds"] = args.seeds
    if args.datasets:
        unknown = set(args.datasets) - set(study["datasets"])
        if unknown:
            raise SystemExit(f"--datasets: unknown {', '.join(sorted(unknown))}")
        study["datasets"] = {
            k: v for k, v in study["datasets"].items() if k in args.datasets
        }
    if args.folds:
        for spec in study["datasets"].values():
            if spec["task"] == "segmentation":
                bad = set(args.folds) - set(range(int(spec.get("folds", 3))))
                if bad:
                    raise SystemExit(f"--folds: no fold {sorted(bad)[0]}")
                spec["only_folds"] = args.folds
    if args.label_fractions:
        for spec in study["datasets"].values():
            if spec["task"] == "segmentation":
                known = [float(f) for f in spec.get("label_fractions", [1.0])]
                missing = [f for f in args.label_fractions if f not in known]
                if missing:
                    raise SystemExit(
                        f"--label-fractions: {missing[0]:g} is not one of the study's "
                        f"({', '.join(f'{f:g}' for f in known)})"
                    )
                spec["label_fractions"] = [
                    f for f in known if f in args.label_fractions
                ]
    if args.parallel:
        study["parallel"] = args.parallel
    if args.budget_minutes:
        study["budget_minutes"] = args.budget_minutes
    roots = [Path(r) for r in args.data_root] if args.data_root else default_roots()
    if args.stage_data:
        for folder in stage_data(study, roots, Path(args.stage_data)):
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            print(f"[study] staged {folder} ({size / 2**20:.1f} MiB)")
        return 0
    out = Path(args.out)
    started = time.time()
    prepared = prepare_data(
        study, roots, out, Path(args.test_data) if args.test_data else None
    )
    jobs = build_jobs(study, prepared)
    done = finished(out)
    check_protocol(out, jobs, done)
    print(
        f"[study] {study['name']} at scale {args.scale}{' (tiny)' if args.tiny else ''}: data staged in {time.time() - started:.0f} s"
    )
    print_plan(jobs, study, done)
    if args.plan_only:
        return 0
    header = {
        "study": study["name"],
        "study_file": study["study_file"],
        "scale": args.scale,
        "tiny": args.tiny,
        "command": "python -m benchmarks.study "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": describe_machine(),
        "settings": {k: v for k, v in study.items() if k not in ("study_file",)},
        "data": {
            k: {kk: vv for kk, vv in v.items() if kk != "fold_dirs"}
            for k, v in prepared.items()
        },
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
    }
    header["runs"] = earlier_runs(out) + [run_summary(header)]
    write_json(out / "study.json", header)
    deadline = started + float(study.get("budget_minutes", 60)) * 60
    if study.get("self_check") and not args.no_self_check:
        self_check(study, prepared, out)
    todo = [j for j in jobs if j.id not in done]

    def report() -> None:
        try:
            study_report.write_report(out)
        except Exception:  # the report must never stop the study
            traceback.print_exc()

    try:
        status = run_jobs(todo, study, out, deadline, on_finish=report)
    except KeyboardInterrupt as stopped:
        # Ctrl-C or SIGTERM: what finished is kept, a rerun continues the rest
        report()
        signum = getattr(stopped, "signum", signal.SIGINT)
        print(
            f"[study] stopped ({signal.Signals(signum).name}); finished jobs are in "
            f"{out}/results; run the same command again to continue",
            file=sys.stderr,
            flush=True,
        )
        return 128 + int(signum)
    header["wall_seconds"] = round(time.time() - started, 1)
    header["status"] = {
        s: sum(1 for v in status.values() if v == s) for s in set(status.values())
    }
    header["runs"][-1] = run_summary(header)
    write_json(out / "study.json", header)
    report()
    print(
        f"[study] done in {header['wall_seconds']:.0f} s: {header['status']}; report in {out}/report.md"
    )
    return 0 if all(v == "ok" for v in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
