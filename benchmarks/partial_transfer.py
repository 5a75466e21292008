"""Which stages of an SSL encoder should lesion segmentation take over?

A FlexibleUNet's decoder reads every stage of its encoder through skip connections, the
highest-resolution ones from the stem (``conv1``) and ``layer1``. SSL pretraining moves
exactly those layers most (``benchmarks/backbone_movement.py``: 20 BYOL steps change
``conv1`` by 60 % of its norm and cut its colour share from 0.65 to 0.52, while
``layer4`` moves by 1 %), towards the colour- and crop-invariance its views teach —
and lesion segmentation needs the colour and edges at full resolution. Hypothesis:
transferring only the deeper stages (the early ones keep random init) keeps what SSL
learned about lesions without its damage to the skip features.

This script fine-tunes the study's pretrained backbones (``jobs/<job>/pretrain/
backbone.pt`` of the ``cpu`` scale, ResNet-18) with each transfer variant and a random
encoder (:func:`benchmarks.finetune_length.finetune`), paired by fine-tune seed: a
variant's untransferred layers hold exactly the random-init fine-tune's initial values.

- ``--split validation`` (the choice): fine-tuning on two thirds of fold ``k``'s
  training pairs, scored on the remaining third (per fine-tune seed);
- ``--split test`` (the check): fine-tuning on fold ``k``'s training pairs, scored on the
  held-out fold.

Example (after the study's cpu scale has run)::

    python benchmarks/partial_transfer.py --study-out benchmarks/results/study_cpu_3pct \
        --split validation --folds 0 1 --methods ap_byol byol \
        --variants all no_stem deep --finetune-seeds 0 1 2 \
        --label-fractions 0.03 0.1 --output benchmarks/results/partial_transfer_val_cpu.md
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
    finetune,
    paired_cells,
    read_rows,
)
from lightly_derm.segmentation.transfer import resnet_stage_prefixes  # noqa: E402

#: Encoder stages each variant leaves at random init (``segment --random-stages``).
VARIANTS: dict[str, int] = {"all": 0, "no_stem": 1, "deep": 2}
EPOCHS = 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-out", required=True, type=Path)
    parser.add_argument("--split", choices=["validation", "test"], required=True)
    parser.add_argument("--folds", nargs="+", type=int, default=[0])
    parser.add_argument("--methods", nargs="+", default=["ap_byol", "byol"])
    parser.add_argument(
        "--variants", nargs="+", default=["all", "deep"], choices=sorted(VARIANTS)
    )
    parser.add_argument("--pretrain-seed", type=int, default=0)
    add_grid_arguments(parser, finetune_seeds=[0, 1, 2])
    args = parser.parse_args(argv)

    jsonl = args.output.with_suffix(".jsonl")
    rows = read_rows(jsonl)  # a rerun continues

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (
            r["split"], r["fold"], r["method"], r["variant"],
            r["label_fraction"], r["seed"],
        )  # fmt: skip

    done = {key(r) for r in rows}
    encoders = [("random", "–")] + [(m, v) for m in args.methods for v in args.variants]
    # every backbone first: a missing one stops the run before any fine-tune
    backbones: dict[tuple[str, int], Path] = {}
    for fold_index in args.folds:
        for method in args.methods:
            path = (
                args.study_out
                / "jobs"
                / f"isic2017-{method}-seed{args.pretrain_seed}-fold{fold_index}"
                / "pretrain"
                / "backbone.pt"
            )
            if not path.is_file():
                raise SystemExit(f"no pretrained backbone at {path}")
            backbones[method, fold_index] = path
    for fold_index in args.folds:
        (fold,) = sorted(
            (args.study_out / "data").glob(f"isic_*/folds/fold_{fold_index}")
        )
        for fraction in args.label_fractions:
            for seed in args.finetune_seeds:
                for method, variant in encoders:
                    row = {
                        "split": args.split,
                        "fold": fold_index,
                        "method": method,
                        "variant": variant,
                        "pretrain_seed": None
                        if method == "random"
                        else args.pretrain_seed,
                        "label_fraction": fraction,
                        "seed": seed,
                    }
                    if key(row) in done:
                        continue
                    backbone = backbones.get((method, fold_index))
                    started = time.time()
                    scores = finetune(
                        backbone,
                        fold / "train",
                        None if args.split == "validation" else fold / "val",
                        EPOCHS,
                        seed,
                        fraction,
                        random_stages=VARIANTS.get(variant, 0),
                    )
                    row["val_jaccard"] = scores["val_jaccard"]
                    row["seconds"] = round(time.time() - started, 1)
                    print(row, flush=True)
                    rows.append(row)
                    done.add(key(row))
                    append_row(jsonl, row)
    args.output.write_text(report(rows, args, argv, encoders))
    print(args.output.read_text())
    return 0


def report(
    rows: list[dict[str, Any]],
    args: argparse.Namespace,
    argv: Any,
    encoders: list[tuple[str, str]],
) -> str:
    """The Markdown table: per fraction and encoder, Δ paired with random init."""
    command = " ".join(argv if argv is not None else sys.argv[1:])
    where = (
        "a third of fold k's training pairs held out (per fine-tune seed)"
        if args.split == "validation"
        else "the held-out fold k"
    )
    lines = [
        f"# Partial transfer of SSL encoders to lesion segmentation ({args.split} split)",
        "",
        f"command: `python benchmarks/partial_transfer.py {command}`",
        "",
        f"The study's ResNet-18 backbones (pretraining seed {args.pretrain_seed}, folds "
        f"{', '.join(map(str, args.folds))}); FlexibleUNet fine-tuned {EPOCHS} epochs; "
        f"scored on {where}. Variants: which backbone layers keep random init "
        + "; ".join(
            f"{v}: {', '.join(resnet_stage_prefixes(VARIANTS[v])) or 'none'}"
            for v in args.variants
        )
        + ". Δ paired with random init of the same fold and fine-tune seed.",
        "",
        "| masks | encoder | transfer | fine-tunes | Jaccard | Δ vs random init | Δ > 0 |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    ours = [r for r in rows if r["split"] == args.split and r["fold"] in args.folds]
    for fraction in args.label_fractions:
        base = {
            (r["fold"], r["seed"]): r["val_jaccard"]
            for r in ours
            if r["method"] == "random" and r["label_fraction"] == fraction
        }
        for method, variant in encoders:
            group = [
                r
                for r in ours
                if (r["method"], r["variant"]) == (method, variant)
                and r["label_fraction"] == fraction
                and r["seed"] in args.finetune_seeds
            ]
            if not group:
                continue
            scores = [r["val_jaccard"] for r in group]
            deltas = [
                r["val_jaccard"] - base[(r["fold"], r["seed"])]
                for r in group
                if method != "random" and (r["fold"], r["seed"]) in base
            ]
            lines.append(
                f"| {fraction:.0%} | {method} | {variant} | {paired_cells(scores, deltas)} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
