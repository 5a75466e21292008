"""Does an SSL encoder's gain at few masks survive a longer fine-tune?

The study's ``cpu`` scale fine-tunes for 20 epochs at 10 % of the ISIC masks (19 images,
about 40 optimizer steps), far from convergence, where a pretrained encoder can look
better only because it starts closer. This script fine-tunes the same pretrained
backbones (the study's ``jobs/<job>/pretrain/backbone.pt``) and a random encoder for
longer, on the same masks, seed and held-out fold, and scores the final model on the
held-out fold once at the end (no per-epoch validation: that is most of the cost on a
CPU). It uses the library's blocks as a user would: MONAI's FlexibleUNet through
:class:`~lightly_derm.segmentation.LesionSegmentation`,
:class:`~lightly_derm.data.ISICSegmentationDataModule` and a Lightning ``Trainer``.

Example (after the study's cpu scale has run)::

    python benchmarks/finetune_length.py --study-out benchmarks/results/study_cpu \
        --pretrain-seeds 0 --finetune-seeds 0 1 2 3 4 --methods random simclr byol \
        --epochs 20 100 \
        --output benchmarks/results/finetune_length_cpu.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from lightly_derm.data import ISICSegmentationDataModule, find_isic_pairs
from lightly_derm.segmentation import LesionSegmentation

#: The fine-tune's learning rate (decoder and head; the encoder's too, unless scaled).
LR = 1e-3


def finetune(
    backbone_file: Path | None,
    train_dir: Path,
    val_dir: Path | None,
    epochs: int,
    seed: int,
    label_fraction: float = 0.1,
    image_size: int = 64,
    batch_size: int = 16,
    frozen: bool = False,
    freeze_epochs: int = 0,
    encoder_lr_scale: float = 1.0,
    random_stages: int = 0,
    rescale_encoder: bool = False,
    callbacks: Sequence[pl.Callback] = (),
) -> dict[str, float]:
    """Fine-tunes one FlexibleUNet-ResNet-18 and returns its held-out scores.

    ``frozen``: the encoder stays as loaded (``freeze_encoder_epochs=epochs``); only the
    decoder and head train, so the score says what the encoder's features carry.
    ``freeze_epochs``: the encoder is frozen for the first epochs only (decoder first,
    then everything: "linear probing, then fine-tuning", Kumar et al. 2022); pretrained
    encoders only, random init is always trained from the start.
    ``encoder_lr_scale``: a pretrained encoder trains at this multiple of the decoder's
    learning rate (discriminative fine-tuning); random init always at the full rate.
    ``val_dir=None``: a third of ``train_dir``'s pairs is held out and scored instead
    (a validation split inside the training folds; it depends on ``seed``).
    ``random_stages``: the first N encoder stages keep the random initialisation that
    random init's fine-tune of the same seed has (``LesionSegmentation``'s option).
    ``rescale_encoder``: a pretrained encoder's conv weights are scaled to the norms
    they have at random initialisation (:func:`rescale_to_init`) before fine-tuning.
    ``callbacks``: Lightning callbacks of the fine-tune's ``Trainer``.
    """
    pl.seed_everything(seed, workers=True, verbose=False)
    split: dict[str, Any] = (
        {"val_fraction": 1 / 3}
        if val_dir is None
        else {"val_pairs": find_isic_pairs(val_dir)}
    )
    data = ISICSegmentationDataModule(
        pairs=find_isic_pairs(train_dir),
        **split,
        label_fraction=label_fraction,
        seed=seed,
        image_size=image_size,
        batch_size=batch_size,
        num_workers=0,
        cache_rate=1.0,
    )
    model = LesionSegmentation(
        backbone="lightly-derm-resnet18",
        pretrained=backbone_file,
        random_stages=random_stages if backbone_file is not None else 0,
        lr=LR,
        encoder_lr=LR * encoder_lr_scale if backbone_file is not None else None,
        freeze_encoder_epochs=(
            epochs if frozen else (freeze_epochs if backbone_file is not None else 0)
        ),
    )
    if rescale_encoder and backbone_file is not None:
        with torch.random.fork_rng():  # random init's pair keeps the same draws
            fresh = LesionSegmentation(backbone="lightly-derm-resnet18")
        rescale_to_init(model.net.encoder, fresh.net.encoder)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        check_val_every_n_epoch=epochs,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(model, datamodule=data)
        (scores,) = trainer.validate(model, datamodule=data, verbose=False)
    return {k: float(v) for k, v in scores.items()}


def rescale_to_init(encoder: torch.nn.Module, init: torch.nn.Module) -> None:
    """Scales every conv weight of ``encoder`` to the norm of the same tensor in
    ``init`` (a freshly initialised encoder), in place.

    Every convolution of a ResNet feeds a batch norm, so a conv weight's scale does not
    change what the network computes in training mode, only how far a fixed-size step
    turns it: Adam's steps are about ``lr`` per weight whatever the norm. SSL with
    weight decay shrinks the deep stages' weights (LARS at lr 1 for 600 steps: layer4
    to 0.42 of its initial norm), so the same fine-tune turns a pretrained encoder's
    filters faster than a random one's. Rescaling gives both the same effective step.
    """
    reference = dict(init.named_parameters())
    with torch.no_grad():
        for name, weight in encoder.named_parameters():
            if weight.ndim == 4:
                weight.mul_(reference[name].norm() / weight.norm())


def add_grid_arguments(
    parser: argparse.ArgumentParser, finetune_seeds: list[int]
) -> None:
    """The fine-tune grid's arguments shared by the paired-fine-tune scripts:
    ``--finetune-seeds``, ``--label-fractions`` (3 % and 10 %) and ``--output`` (the
    Markdown table; its rows go to the ``.jsonl`` beside it, read back by
    :func:`read_rows`)."""
    parser.add_argument(
        "--finetune-seeds", nargs="+", type=int, default=list(finetune_seeds)
    )
    parser.add_argument("--label-fractions", nargs="+", type=float, default=[0.03, 0.1])
    parser.add_argument("--output", required=True, type=Path)


def read_rows(jsonl: Path) -> list[dict[str, Any]]:
    """The rows a run of a fine-tune script wrote so far (none yet: ``[]``); a rerun
    continues from them."""
    if not jsonl.is_file():
        return []
    return [json.loads(line) for line in jsonl.read_text().splitlines() if line]


def append_row(jsonl: Path, row: dict[str, Any]) -> None:
    """Appends one finished fine-tune's row, the moment it finishes."""
    with jsonl.open("a") as f:
        f.write(json.dumps(row) + "\n")


def paired_cells(scores: list[float], deltas: list[float]) -> str:
    """Table cells ``n | mean ± sd | Δ mean ± sd | Δ > 0`` of one row of fine-tunes.

    ``deltas``: the paired differences to random init (empty for random init itself:
    ``–``). The standard deviation of a single value is shown as 0.
    """

    def mean_sd(values: list[float], sign: str = "") -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):{sign}.3f} ± {sd:.3f}"

    paired = (
        f"{mean_sd(deltas, '+')} | {sum(d > 0 for d in deltas)}/{len(deltas)}"
        if deltas
        else "– | –"
    )
    return f"{len(scores)} | {mean_sd(scores)} | {paired}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-out", required=True, type=Path)
    parser.add_argument(
        "--pretrain-seeds", nargs="+", type=int, default=[0], help="the study's seeds"
    )
    parser.add_argument(
        "--finetune-seeds",
        nargs="+",
        type=int,
        default=[0, 1, 2],
        help="seeds of the fine-tune (mask subset, decoder init, batches)",
    )
    parser.add_argument(
        "--methods", nargs="+", default=["random", "gravis", "simclr", "fgssl"]
    )
    parser.add_argument("--epochs", nargs="+", type=int, default=[100])
    parser.add_argument("--label-fraction", type=float, default=0.1)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument(
        "--frozen",
        action="store_true",
        help="keep the encoder frozen (train decoder and head only)",
    )
    parser.add_argument(
        "--freeze-epochs",
        type=int,
        default=0,
        help="pretrained encoders stay frozen for this many first epochs",
    )
    parser.add_argument(
        "--encoder-lr-scale",
        type=float,
        default=1.0,
        help=f"pretrained encoders train at this multiple of the learning rate ({LR:g})",
    )
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    folds = args.study_out / "data"
    (fold_root,) = sorted(folds.glob(f"isic_*/folds/fold_{args.fold}"))
    jsonl = args.output.with_suffix(".jsonl")
    rows = read_rows(jsonl)  # a rerun continues
    done = {(r["method"], r["pretrain_seed"], r["seed"], r["epochs"]) for r in rows}
    for epochs in args.epochs:
        for seed in args.finetune_seeds:
            for method in args.methods:
                for pretrain_seed in (
                    [None] if method == "random" else args.pretrain_seeds
                ):
                    if (method, pretrain_seed, seed, epochs) in done:
                        continue
                    backbone = None
                    if pretrain_seed is not None:
                        job = f"isic2017-{method}-seed{pretrain_seed}-fold{args.fold}"
                        backbone = (
                            args.study_out / "jobs" / job / "pretrain" / "backbone.pt"
                        )
                        if not backbone.is_file():
                            print(f"skipped {job}: no {backbone}")
                            continue
                    started = time.time()
                    scores = finetune(
                        backbone,
                        fold_root / "train",
                        fold_root / "val",
                        epochs,
                        seed,
                        args.label_fraction,
                        frozen=args.frozen,
                        freeze_epochs=args.freeze_epochs,
                        encoder_lr_scale=args.encoder_lr_scale,
                    )
                    row = {
                        "method": method,
                        "pretrain_seed": pretrain_seed,
                        "seed": seed,
                        "epochs": epochs,
                        "frozen": args.frozen,
                        "freeze_epochs": args.freeze_epochs,
                        "encoder_lr_scale": args.encoder_lr_scale,
                        "val_jaccard": scores.get("val_jaccard"),
                        "val_dice": scores.get("val_dice"),
                        "seconds": round(time.time() - started, 1),
                    }
                    print(row, flush=True)
                    rows.append(row)
                    append_row(jsonl, row)
    lines = [
        f"# Fine-tune length at {args.label_fraction:.0%} of the masks "
        f"(ISIC fold {args.fold}, held-out Jaccard of the final model)",
        "",
        "command: `python benchmarks/finetune_length.py "
        + " ".join(argv if argv is not None else sys.argv[1:])
        + "`",
        "",
        "Per row: mean ± standard deviation over the fine-tune seeds of the held-out "
        "Jaccard, and of the paired difference to random init (same fine-tune seed and "
        "epochs: same mask subset, decoder init and batches).",
        "",
        "| method | pretrain seed | epochs | fine-tune seeds | Jaccard | Δ Jaccard vs random | Δ > 0 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    random = {
        (r["seed"], r["epochs"]): r["val_jaccard"]
        for r in rows
        if r["method"] == "random"
    }
    groups: dict[tuple[int, str, Any], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["epochs"], r["method"], r["pretrain_seed"]), []).append(r)
    for (epochs, method, pretrain_seed), group in sorted(
        groups.items(),
        key=lambda kv: (kv[0][0], kv[0][1] != "random", kv[0][1], str(kv[0][2])),
    ):
        jaccards = [r["val_jaccard"] for r in group]
        deltas = [
            r["val_jaccard"] - random[(r["seed"], epochs)]
            for r in group
            if method != "random" and (r["seed"], epochs) in random
        ]
        lines.append(
            f"| {method} | {'–' if pretrain_seed is None else pretrain_seed} | {epochs} "
            f"| {paired_cells(jaccards, deltas)} |"
        )
    args.output.write_text("\n".join(lines) + "\n")
    print(args.output.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
