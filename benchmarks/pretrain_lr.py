"""Does SSL pretraining on a few hundred images move the encoder at all?

The study's ``cpu`` scale pretrains on 193 ISIC images for 10 epochs at batch 16: 120
steps, until 2026-12-05 of SGD at lr 0.0075 (lightly's 0.06 scaled linearly to the
batch; since then AdamW at 1e-3, for what this script found). The fine-tune
that follows runs AdamW at 1e-3, whose every step moves each weight by about 1e-3 —
several times further, relative to a ResNet's weights, than the whole pretraining. If
the pretrained encoder is still (almost) its random initialisation, no transfer
setting can make it help, and the learning-rate rule made for 100,000-step ImageNet
runs is the thing to change.

This script pretrains each method with an optimizer, learning rates and epochs on fold
``k``'s training images (the study's cpu-scale options otherwise, through the library's
``pretrain`` job), records how far every backbone stage moved from its initialisation
(relative Frobenius distance of the conv weights), and fine-tunes each backbone
(:func:`benchmarks.finetune_length.finetune`), paired with random init by fine-tune
seed:

- ``--split validation`` (the choice): on two thirds of fold ``k``'s training pairs,
  scored on the remaining third; the held-out fold is not read;
- ``--split test`` (the check): on fold ``k``'s training pairs, scored on the held-out
  fold. Pretraining reads fold ``k``'s training images in both, so the test split
  reuses the validation split's pretrainings.

What the papers leave open is varied the same way: ``--method-args`` passes further
constructor arguments to the methods (a JSON object, e.g. GraVIS's ``num_views`` or
``temperature``, AP-BYOL's ``warmup_fraction``), recorded in every row and in the
pretraining's folder name.

How the fine-tune treats the pretrained encoder is a choice of its own: trained at the
decoder's rate (the default), at ``--encoder-lr-scale`` times it (random init always at
the full rate), ``--rescale`` (its conv weights first scaled back to their norms at
random initialisation, :func:`benchmarks.finetune_length.rescale_to_init`: the same
function, the same effective step as random init's), or ``--frozen`` (decoder and head
only; random init frozen too, so the score says what the encoder's features carry).

Example (after the study's cpu scale has staged its data)::

    python benchmarks/pretrain_lr.py --study-out benchmarks/results/study_cpu_3pct \
        --jobs /tmp/pretrain_lr --folds 0 1 --methods byol ap_byol \
        --lrs 0.0075 0.06 0.3 --finetune-seeds 0 1 2 --label-fractions 0.03 0.1 \
        --split validation --output benchmarks/results/pretrain_lr_cpu.md
"""

from __future__ import annotations

import argparse
import json
import operator
import shlex
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script
from benchmarks.finetune_length import (  # noqa: E402
    add_grid_arguments,
    append_row,
    finetune,
    paired_cells,
    read_rows,
)
from benchmarks.view_variants import VARIANTS, patched_views  # noqa: E402

#: The study's cpu-scale pretraining options for ISIC (benchmarks/studies/derm_ssl.yaml).
PRETRAIN = {
    "backbone": "resnet18",
    "input_size": 64,
    "epochs": 10,
    "batch_size": 16,
    "num_workers": 1,
}
EPOCHS = 100
#: The method arguments every pretraining of the grid sets (``--method-args`` may not).
GRID_ARGS: tuple[str, ...] = ("lr", "optimizer", "momentum", "weight_decay")
STAGES = ("conv1", "layer1", "layer2", "layer3", "layer4")


def stage_change(
    start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, float]]:
    """How each ResNet stage's conv weights changed from ``start`` to ``end``.

    Returns per measure and stage: ``moved``, the relative distance
    ``||W_end - W_start|| / ||W_start||``; ``norm``, the ratio ``||W_end|| /
    ||W_start||``; ``turned``, the mean angle in degrees between each output filter's
    start and end weights. Every conv of a ResNet feeds a batch norm, which undoes any
    positive scale of a filter, so only ``turned`` is a change of what the stage
    computes: weight decay that shrinks a stage "moves" it without changing it.
    ``norm`` and ``turned`` are the library's
    :func:`~lightly_derm.callbacks.filter_turn` (what the ``pretrain`` job reports).
    """
    from lightly_derm.callbacks import filter_turn

    stages = {k: _stage(k) for k in start if start[k].ndim == 4}
    change = filter_turn(start, end, {k: s for k, s in stages.items() if s in STAGES})
    out: dict[str, dict[str, float]] = {"moved": {}, "norm": {}, "turned": {}}
    for stage in STAGES:
        keys = [k for k, s in stages.items() if s == stage]
        before = torch.cat([start[k].double().flatten() for k in keys])
        after = torch.cat([end[k].detach().double().flatten() for k in keys])
        out["moved"][stage] = float((after - before).norm() / before.norm())
        out["norm"][stage] = change[stage].norm
        out["turned"][stage] = change[stage].turned
    return out


class Movement(pl.Callback):
    """:func:`stage_change` of a module's ResNet over one fit (``module``: the
    attribute path of the ResNet in the LightningModule)."""

    def __init__(self, module: str = "backbone") -> None:
        self.module = operator.attrgetter(module)
        self.start: dict[str, torch.Tensor] = {}
        self.moved: dict[str, float] = {}
        self.norm: dict[str, float] = {}
        self.turned: dict[str, float] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.start = {
            k: v.detach().clone()
            for k, v in self.module(pl_module).state_dict().items()
            if v.ndim == 4
        }

    def on_fit_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        change = stage_change(self.start, self.module(pl_module).state_dict())
        self.moved, self.norm, self.turned = (
            change["moved"],
            change["norm"],
            change["turned"],
        )


def _encoder(row: dict[str, Any]) -> tuple[Any, ...]:
    """What a row's pretraining was: optimizer, lr, epochs, views, further method
    arguments, images (random init: sgd, None, None, default, "", fold)."""
    return (
        row["optimizer"], row["lr"], row["epochs"], row["views"],
        row.get("method_args", ""), row["pretrain_data"],
    )  # fmt: skip


def method_args_key(text: str) -> str:
    """``--method-args`` as rows and run folders record it: canonical JSON of an
    object (sorted keys, no spaces), ``""`` for none.

    Raises:
        SystemExit: one line, where ``text`` is not a JSON object or names an
            argument the grid sets itself (:data:`GRID_ARGS`: the row would record
            the grid's value, not the one trained with).
    """
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as error:
        raise SystemExit(f"--method-args is not JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"--method-args must be a JSON object, got {text!r}")
    if taken := sorted(set(value) & set(GRID_ARGS)):
        raise SystemExit(
            f"--method-args sets {', '.join(taken)}, which the grid sets itself: use "
            "--optimizer and --lrs (momentum 0.9 and weight decay 5e-4 are fixed)"
        )
    return json.dumps(value, sort_keys=True, separators=(",", ":")) if value else ""


def _transfer(row: dict[str, Any]) -> tuple[bool, float, bool]:
    """How a row's fine-tune treated the encoder: frozen, encoder lr scale, rescaled."""
    return (row["frozen"], row["encoder_lr_scale"], row["rescale"])


def _order(encoder: tuple[Any, ...]) -> tuple[Any, ...]:
    """Report order: fine-tune variant, then random init first, then the pretrainings."""
    method, optimizer, lr, epochs, views, margs, data, frozen, scale, rescale = encoder
    return (
        frozen, -scale, rescale, method != "random", method, optimizer, lr or 0,
        epochs or 0, views != "default", views, margs != "", margs, data != "fold",
        data,
    )  # fmt: skip


def _transfer_cell(frozen: bool, scale: float, rescale: bool) -> str:
    """The report's fine-tune column."""
    if frozen:
        return "frozen"
    if rescale:
        return "rescaled"
    return "full" if scale == 1 else f"encoder lr ×{scale:g}"


def _stage(key: str) -> str:
    """``layer2.0.conv1.weight`` → ``layer2``; the stem's keys → ``conv1``."""
    head = key.split(".")[0]
    return head if head.startswith("layer") else "conv1"


def main(argv: list[str] | None = None) -> int:
    from lightly_derm.jobs import pretrain

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-out", required=True, type=Path)
    parser.add_argument("--split", choices=["validation", "test"], default="validation")
    parser.add_argument("--jobs", required=True, type=Path, help="pretraining runs")
    parser.add_argument("--folds", nargs="+", type=int, default=[0])
    parser.add_argument("--methods", nargs="+", default=["byol", "ap_byol"])
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.0075, 0.06, 0.3])
    parser.add_argument(
        "--optimizer",
        choices=["sgd", "lars", "adamw"],
        default="sgd",
        help="of the --lrs",
    )
    parser.add_argument(
        "--epochs", type=int, default=PRETRAIN["epochs"], help="pretraining epochs"
    )
    parser.add_argument(
        "--views",
        choices=sorted(VARIANTS),
        default="default",
        help="the methods' view transform (benchmarks/view_variants.py's variants)",
    )
    parser.add_argument(
        "--method-args",
        default="",
        help="further constructor arguments of the methods, a JSON object "
        "(e.g. '{\"num_views\": 8}'), recorded in every row",
    )
    parser.add_argument(
        "--pretrain-data",
        type=Path,
        help="pretrain on these images instead of fold k's training images (one "
        "pretraining for every fold), e.g. another data set's unlabelled images",
    )
    parser.add_argument("--pretrain-seed", type=int, default=0)
    transfer = parser.add_mutually_exclusive_group()
    transfer.add_argument(
        "--encoder-lr-scale",
        type=float,
        default=1.0,
        help="a pretrained encoder fine-tunes at this multiple of the decoder's lr",
    )
    transfer.add_argument(
        "--frozen", action="store_true", help="fine-tune decoder and head only"
    )
    transfer.add_argument(
        "--rescale",
        action="store_true",
        help="scale a pretrained encoder's conv weights to their init norms first",
    )
    add_grid_arguments(parser, finetune_seeds=[0, 1, 2])
    args = parser.parse_args(argv)

    jsonl = args.output.with_suffix(".jsonl")
    rows = read_rows(jsonl)  # a rerun continues

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (
            r["split"], r["fold"], r["method"], *_encoder(r), *_transfer(r),
            r["label_fraction"], r["seed"],
        )  # fmt: skip

    done = {key(r) for r in rows}
    images = args.pretrain_data.name if args.pretrain_data else "fold"
    margs = method_args_key(args.method_args)
    encoders = [("random", "sgd", None, None, "default", "", "fold")] + [
        (m, args.optimizer, lr, args.epochs, args.views, margs, images)
        for m in args.methods
        for lr in args.lrs
    ]
    for fold_index in args.folds:
        for method, optimizer, lr, epochs, views, margs, data in encoders:
            # random init trains at the full rate, frozen or not as the others
            scale = 1.0 if method == "random" else args.encoder_lr_scale
            rescale = method != "random" and args.rescale
            encoder = (
                args.split, fold_index, method, optimizer, lr, epochs, views, margs,
                data, args.frozen, scale, rescale,
            )  # fmt: skip
            todo = [
                (fraction, seed)
                for fraction in args.label_fractions
                for seed in args.finetune_seeds
                if (*encoder, fraction, seed) not in done
            ]
            if not todo:
                continue
            folds = sorted(
                (args.study_out / "data").glob(f"isic_*/folds/fold_{fold_index}")
            )
            if len(folds) != 1:
                raise SystemExit(
                    f"no staged ISIC fold {fold_index} under {args.study_out / 'data'} "
                    "(run the study's cpu scale with this --study-out first)"
                )
            fold = folds[0]
            backbone: Path | None = None
            pretrained: dict[str, Any] = {}
            if method != "random":
                backbone, pretrained = _pretrain(
                    pretrain,
                    method,
                    optimizer,
                    lr,
                    epochs,
                    views,
                    margs,
                    args.pretrain_data or fold / "train",
                    fold_index,
                    args,
                )
            for fraction, seed in todo:
                started = time.time()
                turn = Movement("net.encoder")
                scores = finetune(
                    backbone,
                    fold / "train",
                    None if args.split == "validation" else fold / "val",
                    EPOCHS,
                    seed,
                    fraction,
                    frozen=args.frozen,
                    encoder_lr_scale=scale,
                    rescale_encoder=rescale,
                    callbacks=[turn],
                )
                row = {
                    "split": args.split,
                    "fold": fold_index,
                    "method": method,
                    "optimizer": optimizer,
                    "lr": lr,
                    "epochs": epochs,
                    "views": views,
                    "method_args": margs,
                    "pretrain_data": data,
                    "pretrain_seed": None if method == "random" else args.pretrain_seed,
                    **pretrained,
                    "frozen": args.frozen,
                    "encoder_lr_scale": scale,
                    "rescale": rescale,
                    "label_fraction": fraction,
                    "seed": seed,
                    "val_jaccard": scores["val_jaccard"],
                    # how the fine-tune changed the encoder (after any rescaling)
                    "finetune_norm": {k: round(v, 4) for k, v in turn.norm.items()},
                    "finetune_turned": {k: round(v, 2) for k, v in turn.turned.items()},
                    "seconds": round(time.time() - started, 1),
                }
                print(row, flush=True)
                rows.append(row)
                done.add(key(row))
                append_row(jsonl, row)
    # the report shows every pretraining the rows hold (earlier invocations' too)
    seen = {
        (r["method"], *_encoder(r), *_transfer(r))
        for r in rows
        if r["split"] == args.split
    }
    args.output.write_text(report(rows, args, argv, sorted(seen, key=_order)))
    print(args.output.read_text())
    return 0


def _pretrain(
    pretrain: Any,
    method: str,
    optimizer: str,
    lr: float,
    epochs: int,
    views: str,
    margs: str,
    images: Path,
    fold_index: int,
    args: argparse.Namespace,
) -> tuple[Path, dict[str, Any]]:
    """One pretraining (the study's cpu options otherwise); its backbone file and what
    the rows record of it: per-stage movement, losses, time.

    A pretraining is the same for both splits (fold k's training images): one that
    finished before (its ``backbone.pt`` and ``pretrain_lr.json`` are there) is reused.
    """
    out = _out(method, optimizer, lr, epochs, views, margs, fold_index, args)
    if args.pretrain_data:  # the same pretraining for every fold
        out = out.with_name(
            out.name.rsplit("-fold", 1)[0] + f"-on-{args.pretrain_data.name}"
        )
    record = out / "pretrain_lr.json"
    if record.is_file() and (out / "backbone.pt").is_file():
        return out / "backbone.pt", json.loads(record.read_text())
    movement = Movement()
    started = time.time()
    with patched_views(method, views):
        result = pretrain(
            method=method,
            method_args={
                "lr": lr,
                "momentum": 0.9,
                "weight_decay": 5e-4,
                "optimizer": optimizer,
                **json.loads(margs or "{}"),
            },
            data=str(images),
            seed=args.pretrain_seed,
            out=str(out),
            overwrite=True,
            verbose=False,
            tensorboard=False,
            progress_bar=False,
            plots=False,
            callbacks=[movement],
            **{**PRETRAIN, "epochs": epochs},
        )
    losses = result.summary.get("metrics") or {}
    info = {
        "moved": {k: round(v, 4) for k, v in movement.moved.items()},
        "norm": {k: round(v, 4) for k, v in movement.norm.items()},
        "turned": {k: round(v, 2) for k, v in movement.turned.items()},
        "final_train_loss": losses.get("train_loss_epoch"),
        "pretrain_seconds": round(time.time() - started, 1),
    }
    record.write_text(json.dumps(info))
    return out / "backbone.pt", info


def _out(
    method: str,
    optimizer: str,
    lr: float,
    epochs: int,
    views: str,
    margs: str,
    fold_index: int,
    args: argparse.Namespace,
) -> Path:
    """The run folder of one pretraining (method arguments as ``-name_value``)."""
    name = f"{method}-{optimizer}{lr:g}-e{epochs}-seed{args.pretrain_seed}"
    if views != "default":
        name += f"-{views}"
    for key, value in json.loads(margs or "{}").items():
        name += "-" + "".join(
            c if c.isalnum() or c in "._" else "_" for c in f"{key}_{value}"
        )
    return args.jobs / f"{name}-fold{fold_index}"


def _mean_per_stage(per_fold: dict[int, dict[str, float]], spec: str) -> str:
    """``a / b / c / d / e``: a measure's per-stage means over the folds."""
    return " / ".join(
        f"{sum(m[s] for m in per_fold.values()) / len(per_fold):.{spec}}"
        for s in STAGES
    )


def report(
    rows: list[dict[str, Any]],
    args: argparse.Namespace,
    argv: Any,
    encoders: list[tuple[Any, ...]],
) -> str:
    """The Markdown table: per fraction, fine-tune variant, method and lr, movement and
    Δ to random init (random init fine-tuned the same way: frozen or not; its encoder
    always at the full rate)."""
    command = shlex.join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Pretraining optimizer and length: does the encoder move, and does it help? "
        f"({args.split} split)",
        "",
        f"command: `python benchmarks/pretrain_lr.py {command}`",
        "",
        "ResNet-18 pretrained on fold k's training images ('images': fold) or on "
        "another folder of images (its name; one pretraining for every fold) (batch "
        f"{PRETRAIN['batch_size']}, {PRETRAIN['input_size']} px, "
        f"momentum 0.9, weight decay 5e-4, cosine decay from the lr shown; seed "
        f"{args.pretrain_seed}; folds {', '.join(map(str, args.folds))}). "
        "Per stage (stem / layer1 / … / layer4, mean over folds): 'moved', the "
        "relative distance of the conv weights from their initialisation; 'turned', "
        "the mean angle between each filter's initial and final weights (batch norm "
        "undoes a filter's scale, so only turning changes what a stage computes; '–': "
        "not recorded). 'fine-tune turned': the same angle for layer4 over the "
        f"fine-tune (mean over the fine-tunes that recorded it). FlexibleUNet fine-tuned {EPOCHS} "
        + (
            "epochs on two thirds of fold k's training pairs, scored on the remaining "
            "third"
            if args.split == "validation"
            else "epochs on fold k's training pairs, scored on the held-out fold k"
        )
        + "; Δ paired with random init of the same fold and fine-tune seed, fine-tuned "
        "the same way ('fine-tune': the encoder trained at the decoder's rate, at a "
        "multiple of it — random init always at the full rate —, its conv weights "
        "first rescaled to their norms at random initialisation, or frozen).",
        "",
        "| masks | fine-tune | encoder | optimizer | lr | epochs | views "
        "| method args | images "
        "| moved (stem, layer1–4) | turned ° (stem, layer1–4) "
        "| fine-tune turned layer4 ° | folds | fine-tunes | Jaccard | Δ vs random init "
        "| Δ > 0 |",
        "|---:|---|---|---|---:|---:|---|---|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    ours = [r for r in rows if r["fold"] in args.folds and r["split"] == args.split]
    for fraction in args.label_fractions:
        base = {
            (r["frozen"], r["fold"], r["seed"]): r["val_jaccard"]
            for r in ours
            if r["method"] == "random" and r["label_fraction"] == fraction
        }
        for encoder in encoders:
            method, (frozen, scale, rescale) = encoder[0], encoder[7:]
            group = [
                r
                for r in ours
                if (r["method"], *_encoder(r), *_transfer(r)) == encoder
                and r["label_fraction"] == fraction
                and r["seed"] in args.finetune_seeds
            ]
            if not group:
                continue
            scores = [r["val_jaccard"] for r in group]
            deltas = [
                r["val_jaccard"] - base[(frozen, r["fold"], r["seed"])]
                for r in group
                if method != "random" and (frozen, r["fold"], r["seed"]) in base
            ]
            moved = turned = "–"
            if method != "random":
                moved = _mean_per_stage({r["fold"]: r["moved"] for r in group}, "3f")
                # not recorded for pretrainings made before the measure existed
                if all("turned" in r for r in group):
                    per_fold = {r["fold"]: r["turned"] for r in group}
                    turned = _mean_per_stage(per_fold, "1f")
            cells = " | ".join(
                "–"
                if method == "random" or v == ""
                else f"{v:g}"
                if isinstance(v, float)
                else str(v)
                for v in encoder[1:7]
            )
            # how far the fine-tune turned layer4 (rows since the measure existed)
            tuned = [
                r["finetune_turned"]["layer4"]
                for r in group
                if "layer4" in r.get("finetune_turned", {})
            ]
            tuned_cell = f"{sum(tuned) / len(tuned):.1f}" if tuned else "–"
            lines.append(
                f"| {fraction:.0%} | {_transfer_cell(frozen, scale, rescale)} | {method} "
                f"| {cells} | {moved} | {turned} | {tuned_cell} | "
                f"{', '.join(str(f) for f in sorted({r['fold'] for r in group}))} | "
                f"{paired_cells(scores, deltas)} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
