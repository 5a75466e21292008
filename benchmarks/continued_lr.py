"""How fast should continued pretraining move ImageNet weights? Chosen on a validation split.

The study's rows "continued from ImageNet" pretrain the ImageNet-1k EfficientNet-Lite0
with each method at the study's learning rate for every parameter (SGD 0.0075 at the
``cpu`` scale until 2026-12-05), and at 3 % of the masks lose to plain ImageNet
transfer. The FG-SSL authors continue from ImageNet with the backbone at a tenth of the
new layers' rate. This script pretrains BYOL-family methods continued from ImageNet
with the backbone at ``scale`` × the heads' rate (the methods' ``backbone_lr``),
fine-tunes a FlexibleUNet from each encoder and from plain ImageNet weights with the
same fine-tune seeds, and reports the paired difference to ImageNet.

Two splits, so that the choice never sees a test fold:

- ``--split validation`` (the choice): pretraining on the images of one study fold's
  training folds (``fold_<k>/train``, unlabelled), fine-tuning on a fraction of the
  masks of two thirds of those pairs and scoring on the remaining third (``segment``'s
  ``val_fraction``; the split depends on the fine-tune seed);
- ``--split test`` (the check): the study's protocol on the held-out folds — fine-tuning
  on ``fold_<k>/train``, scoring on ``fold_<k>/val``.

Everything runs through the library's jobs (``pretrain``, ``segment``) as a user would;
the pretraining settings are the study's ``cpu`` scale until 2026-12-05 (64 px, 10
epochs of batch 16, SGD 0.0075, momentum 0.9, weight decay 5e-4), the fine-tunes its
segment settings (100 epochs, batch 16, AdamW 1e-3), scored once at the end.
``--input-size`` sets the image size of both (from a study whose data is staged at
least that large, e.g. the ``gpu`` scale's 256 px: ``python -m benchmarks.study ...
--scale gpu --plan-only``) and ``--epochs`` the pretraining's length; rows of other
sizes and lengths are kept apart. ``--preset-methods`` pretrains methods with their
own preset instead of the study's optimiser (FG-SSL: its authors' loss and rates, the
backbone at a tenth from ImageNet weights — the study's ``fgssl+imagenet`` rows); their
variant is ``<method>@preset``.

Example (after the study's cpu scale has prepared its data)::

    python benchmarks/continued_lr.py --study-out benchmarks/results/study_cpu_3pct \
        --split validation --folds 0 --methods ap_byol byol \
        --backbone-lr-scales 1 0.1 0.01 --finetune-seeds 0 1 2 3 \
        --label-fractions 0.03 0.1 --work /tmp/continued_lr \
        --output benchmarks/results/continued_lr_val_cpu.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script
from benchmarks.finetune_length import (  # noqa: E402
    add_grid_arguments,
    append_row,
    paired_cells,
    read_rows,
)

IMAGENET = "imagenet:efficientnet-lite0"
#: The study's ``cpu`` scale (ISIC block) until 2026-12-05: pretraining, optimiser.
LR = 0.0075
PRETRAIN: dict[str, Any] = {
    "backbone": "efficientnet-lite0",
    "backbone_weights": IMAGENET,
    "input_size": 64,
    "epochs": 10,
    "batch_size": 16,
    "num_workers": 0,
}
SEGMENT: dict[str, Any] = {
    "input_size": 64,
    "epochs": 100,
    "batch_size": 16,
    "lr": 1e-3,
    "num_workers": 0,
    "cache_rate": 1.0,
    "val_every_n_epochs": 100,
}
QUIET: dict[str, Any] = {"progress_bar": False, "plots": False, "tensorboard": False}


def pretrain_continued(
    method: str,
    scale: float | None,
    data: Path,
    out: Path,
    seed: int,
    optimizer: str = "sgd",
    lr: float = LR,
    input_size: int = PRETRAIN["input_size"],
    epochs: int = PRETRAIN["epochs"],
) -> Path:
    """Pretrains ``method`` from ImageNet with backbone_lr = scale × lr (``scale``
    ``None``: the method's own preset, no optimiser arguments); its run folder."""
    from lightly_derm.jobs import pretrain

    if (out / "backbone.pt").is_file():
        return out
    method_args: dict[str, Any] = (
        {}
        if scale is None
        else {"lr": lr, "momentum": 0.9, "weight_decay": 5e-4, "optimizer": optimizer}
    )
    if scale is not None and scale != 1.0:
        method_args["backbone_lr"] = lr * scale
    pretrain(
        method=method,
        method_args=method_args,
        data=str(data),
        seed=seed,
        out=str(out),
        overwrite=True,
        verbose=False,
        **{**PRETRAIN, "input_size": input_size, "epochs": epochs},
        **QUIET,
    )
    return out


def finetune(
    checkpoint: str,
    fold: Path,
    split: str,
    fraction: float,
    seed: int,
    out: Path,
    input_size: int = SEGMENT["input_size"],
) -> float:
    """One fine-tune's Jaccard on the split's scoring images."""
    from lightly_derm.jobs import segment

    where: dict[str, Any] = (
        {"val_fraction": 1 / 3}
        if split == "validation"
        else {"val_data": str(fold / "val")}
    )
    report = segment(
        checkpoint=checkpoint,
        data=str(fold / "train"),
        label_fraction=fraction,
        seed=seed,
        out=str(out),
        overwrite=True,
        verbose=False,
        **where,
        **{**SEGMENT, "input_size": input_size},
        **QUIET,
    )
    scores = next(iter(report["results"].values()))
    return float(scores["val_jaccard"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-out", required=True, type=Path)
    parser.add_argument("--split", choices=["validation", "test"], required=True)
    parser.add_argument("--folds", nargs="+", type=int, default=[0])
    parser.add_argument("--methods", nargs="*", default=["ap_byol", "byol"])
    parser.add_argument(
        "--preset-methods",
        nargs="*",
        default=[],
        help="methods pretrained with their own preset instead (no optimiser "
        "arguments; FG-SSL: its authors' loss and learning rates, the backbone's a "
        "tenth from ImageNet weights), as the study's fgssl+imagenet rows",
    )
    parser.add_argument(
        "--backbone-lr-scales", nargs="+", type=float, default=[1.0, 0.1, 0.01]
    )
    parser.add_argument("--optimizer", choices=["sgd", "lars", "adamw"], default="sgd")
    parser.add_argument("--lr", type=float, default=LR, help="the heads' rate")
    parser.add_argument("--pretrain-seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--input-size",
        type=int,
        default=PRETRAIN["input_size"],
        help="pretraining and fine-tuning image size (the study's data must be "
        "staged at least this large)",
    )
    parser.add_argument(
        "--epochs", type=int, default=PRETRAIN["epochs"], help="pretraining epochs"
    )
    parser.add_argument("--work", type=Path, default=Path("continued_lr_work"))
    add_grid_arguments(parser, finetune_seeds=[0, 1, 2, 3])
    args = parser.parse_args(argv)

    jsonl = args.output.with_suffix(".jsonl")
    rows = read_rows(jsonl)  # a rerun continues

    for r in rows:  # rows of earlier runs: the defaults
        r.setdefault("input_size", PRETRAIN["input_size"])
        r.setdefault(
            "epochs", None if r["variant"] == "imagenet" else PRETRAIN["epochs"]
        )

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (
            r["split"], r["fold"], r["variant"], r["pretrain_seed"],
            r["label_fraction"], r["seed"], r["input_size"], r["epochs"],
        )  # fmt: skip

    done = {key(r) for r in rows}
    variants = ["imagenet"] + list(_variants(args))
    for fold_index in args.folds:
        (fold,) = sorted(
            (args.study_out / "data").glob(f"isic_*/folds/fold_{fold_index}")
        )
        for variant in variants:
            for pretrain_seed in (
                [None] if variant == "imagenet" else args.pretrain_seeds
            ):
                checkpoint = IMAGENET
                for fraction in args.label_fractions:
                    for seed in args.finetune_seeds:
                        row = {
                            "split": args.split,
                            "fold": fold_index,
                            "variant": variant,
                            "pretrain_seed": pretrain_seed,
                            "label_fraction": fraction,
                            "seed": seed,
                            "input_size": args.input_size,
                            "epochs": None if variant == "imagenet" else args.epochs,
                        }
                        if key(row) in done:
                            continue
                        if variant != "imagenet" and checkpoint == IMAGENET:
                            method, scale = _variants(args)[variant]
                            run = variant.replace("@", "-") + _run_tag(args)
                            started = time.time()
                            checkpoint = str(
                                pretrain_continued(
                                    method,
                                    scale,
                                    fold / "train",
                                    args.work
                                    / f"fold{fold_index}-{run}-seed{pretrain_seed}",
                                    int(pretrain_seed or 0),
                                    optimizer=args.optimizer,
                                    lr=args.lr,
                                    input_size=args.input_size,
                                    epochs=args.epochs,
                                )
                            )
                            print(
                                f"{variant} fold {fold_index} seed {pretrain_seed}: "
                                f"pretrained in {time.time() - started:.0f} s",
                                flush=True,
                            )
                        started = time.time()
                        row["val_jaccard"] = finetune(
                            checkpoint,
                            fold,
                            args.split,
                            fraction,
                            seed,
                            args.work / "segment",
                            input_size=args.input_size,
                        )
                        row["seconds"] = round(time.time() - started, 1)
                        print(row, flush=True)
                        rows.append(row)
                        append_row(jsonl, row)
    args.output.write_text(report(rows, args, argv))
    print(args.output.read_text())
    return 0


def _run_tag(args: argparse.Namespace) -> str:
    """The run folder's suffix for another image size or length than the study's."""
    size = "" if args.input_size == PRETRAIN["input_size"] else f"-{args.input_size}px"
    epochs = "" if args.epochs == PRETRAIN["epochs"] else f"-e{args.epochs}"
    return size + epochs


def _variants(args: argparse.Namespace) -> dict[str, tuple[str, float | None]]:
    """The pretrained variants by name (``byol@0.1``; another optimiser or rate than
    the study's: ``byol-adamw0.0001@0.1``; a method's own preset: ``fgssl@preset``):
    their method and backbone lr scale (``None``: the preset)."""
    tag = (
        ""
        if (args.optimizer, args.lr) == ("sgd", LR)
        else f"-{args.optimizer}{args.lr:g}"
    )
    variants: dict[str, tuple[str, float | None]] = {
        f"{m}{tag}@{s:g}": (m, s) for m in args.methods for s in args.backbone_lr_scales
    }
    variants.update({f"{m}@preset": (m, None) for m in args.preset_methods})
    return variants


def report(rows: list[dict[str, Any]], args: argparse.Namespace, argv: Any) -> str:
    """The Markdown table: per fraction and variant, Δ paired with plain ImageNet."""
    command = " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Continued pretraining from ImageNet: the backbone's learning rate "
        f"({args.split} split)",
        "",
        f"command: `python benchmarks/continued_lr.py {command}`",
        "",
        f"EfficientNet-Lite0 from ImageNet-1k weights, pretrained {args.epochs} epochs "
        f"at {args.input_size} px with "
        f"heads at lr {args.lr:g} ({args.optimizer}) and the backbone at scale × lr; FlexibleUNet fine-tuned 100 "
        "epochs. Scores: "
        + (
            "a third of the training folds' pairs held out (per fine-tune seed)"
            if args.split == "validation"
            else "the held-out fold"
        )
        + ". Δ paired with plain ImageNet transfer of the same fold and fine-tune seed.",
        "",
        "| masks | variant (method@backbone lr scale) | fine-tunes | Jaccard | Δ vs ImageNet | Δ > 0 |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    ours = [
        r
        for r in rows
        if r["split"] == args.split
        and r["fold"] in args.folds
        and r["input_size"] == args.input_size
        and r["epochs"] in (None, args.epochs)
    ]
    for fraction in args.label_fractions:
        base = {
            (r["fold"], r["seed"]): r["val_jaccard"]
            for r in ours
            if r["variant"] == "imagenet" and r["label_fraction"] == fraction
        }
        for variant in ["imagenet", *_variants(args)]:
            group = [
                r
                for r in ours
                if r["variant"] == variant
                and r["label_fraction"] == fraction
                and r["seed"] in args.finetune_seeds
                and r["pretrain_seed"] in ([None] + args.pretrain_seeds)
            ]
            if not group:
                continue
            scores = [r["val_jaccard"] for r in group]
            deltas = [
                r["val_jaccard"] - base[(r["fold"], r["seed"])]
                for r in group
                if variant != "imagenet" and (r["fold"], r["seed"]) in base
            ]
            lines.append(
                f"| {fraction:.0%} | {variant} | {paired_cells(scores, deltas)} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
