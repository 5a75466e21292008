"""Do colour-preserving views make GraVIS's encoder transfer better to lesion segmentation?

Hypothesis (docs/results.rst, "Does pretraining change the encoder at all?"): strong
colour jitter (hue 0.1) and random grayscale teach the encoder to ignore colour, while
lesion segmentation leans on colour contrast. This pretrains GraVIS exactly as the
study's ``cpu`` scale does (ResNet-18, 64 px, 10 epochs of batch 16 on the 193 images of
ISIC fold 0's training folds, SGD lr 0.0075) with its default views and with views that
keep colour, then fine-tunes each encoder and a random one on 10 % of the masks for
several fine-tune seeds (:func:`benchmarks.finetune_length.finetune`) and reports the
paired difference to random init on the held-out fold.

The view variants are GraVISTransform arguments, set by replacing
``GraVIS.cpu_view_transform`` in this process (an experiment, not an API).

Example::

    python benchmarks/colour_views.py --study-out benchmarks/results/study_cpu \
        --variants default colour --finetune-seeds 0 1 2 3 4 \
        --output benchmarks/results/colour_views_cpu.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script
from benchmarks.finetune_length import _mean, _std, finetune  # noqa: E402

#: GraVISTransform arguments of each variant (the rest: GraVIS's defaults).
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    # colour kept: no hue shift, no grayscale, half-strength jitter, larger crops
    "colour": {"cj_hue": 0.0, "random_gray_scale": 0.0, "cj_strength": 0.5},
    # no colour augmentation at all
    "nocolour": {"cj_prob": 0.0, "random_gray_scale": 0.0},
}


def pretrain_variant(variant: str, data: Path, out: Path, seed: int) -> Path:
    """Pretrains GraVIS with the variant's views; returns the backbone file."""
    from lightly_derm.jobs import pretrain
    from lightly_derm.methods import GraVIS
    from lightly_derm.transforms import GraVISTransform

    backbone = out / "backbone.pt"
    if backbone.is_file():
        return backbone
    kwargs = VARIANTS[variant]

    def views(self: GraVIS, input_size: int = 224) -> GraVISTransform:
        return GraVISTransform(
            num_views=self.num_views, input_size=input_size, **kwargs
        )

    original = GraVIS.cpu_view_transform
    GraVIS.cpu_view_transform = views  # type: ignore[method-assign]
    try:
        pretrain(
            method="gravis",
            method_args={"lr": 0.0075, "momentum": 0.9, "weight_decay": 5e-4},
            data=str(data),
            backbone="resnet18",
            input_size=64,
            epochs=10,
            batch_size=16,
            num_workers=0,
            seed=seed,
            out=str(out),
            overwrite=True,
            tensorboard=False,
            plots=False,
            progress_bar=False,
            verbose=False,
        )
    finally:
        GraVIS.cpu_view_transform = original  # type: ignore[method-assign]
    return backbone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-out", required=True, type=Path)
    parser.add_argument("--variants", nargs="+", default=["default", "colour"])
    parser.add_argument("--pretrain-seed", type=int, default=1)
    parser.add_argument(
        "--finetune-seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4]
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("colour_views_work"))
    parser.add_argument("--random-from", type=Path, help="a finetune_length .jsonl")
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)

    (fold,) = sorted((args.study_out / "data").glob("isic_*/folds/fold_0"))
    jsonl = args.output.with_suffix(".jsonl")
    rows = (
        [json.loads(x) for x in jsonl.read_text().splitlines() if x]
        if jsonl.is_file()
        else []
    )
    if args.random_from and args.random_from.is_file():
        for line in args.random_from.read_text().splitlines():
            r = json.loads(line)
            if r["method"] == "random" and r["epochs"] == args.epochs:
                if not any(
                    x["variant"] == "random" and x["seed"] == r["seed"] for x in rows
                ):
                    rows.append({"variant": "random", **r})
    done = {(r["variant"], r["seed"]) for r in rows}
    for variant in ["random", *args.variants]:
        backbone = None
        study_backbone = (
            args.study_out
            / "jobs"
            / f"isic2017-gravis-seed{args.pretrain_seed}-fold0"
            / "pretrain"
            / "backbone.pt"
        )
        if variant == "default" and study_backbone.is_file():
            backbone = study_backbone  # the study's own GraVIS run: the same settings
        elif variant != "random":
            started = time.time()
            backbone = pretrain_variant(
                variant,
                fold / "train",
                args.work / f"gravis-{variant}-seed{args.pretrain_seed}",
                args.pretrain_seed,
            )
            print(f"{variant}: pretrained in {time.time() - started:.0f} s", flush=True)
        for seed in args.finetune_seeds:
            if (variant, seed) in done:
                continue
            started = time.time()
            scores = finetune(backbone, fold / "train", fold / "val", args.epochs, seed)
            row = {
                "variant": variant,
                "seed": seed,
                "epochs": args.epochs,
                "val_jaccard": scores["val_jaccard"],
                "val_dice": scores["val_dice"],
                "seconds": round(time.time() - started, 1),
            }
            print(row, flush=True)
            rows.append(row)
            with jsonl.open("a") as f:
                f.write(json.dumps(row) + "\n")
    random = {r["seed"]: r["val_jaccard"] for r in rows if r["variant"] == "random"}
    lines = [
        "# GraVIS views and transfer to lesion segmentation (ISIC fold 0, 10 % masks)",
        "",
        "command: `python benchmarks/colour_views.py "
        + " ".join(argv if argv is not None else sys.argv[1:])
        + "`",
        "",
        f"GraVIS pretrained with seed {args.pretrain_seed} per variant; each encoder "
        f"fine-tuned {args.epochs} epochs with every fine-tune seed; mean ± sd over "
        "fine-tune seeds, Δ paired with random init's same fine-tune seed.",
        "",
        "| variant | views (GraVISTransform arguments) | fine-tunes | Jaccard | Δ Jaccard vs random | Δ > 0 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for variant in ["random", *args.variants]:
        group = [r for r in rows if r["variant"] == variant]
        if not group:
            continue
        scores = [r["val_jaccard"] for r in group]
        deltas = [
            r["val_jaccard"] - random[r["seed"]]
            for r in group
            if variant != "random" and r["seed"] in random
        ]
        views = "–" if variant == "random" else (str(VARIANTS[variant]) or "defaults")
        lines.append(
            f"| {variant} | {views} | {len(group)} | {_mean(scores):.3f} ± {_std(scores):.3f} | "
            + (
                f"{_mean(deltas):+.3f} ± {_std(deltas):.3f} | {sum(d > 0 for d in deltas)}/{len(deltas)} |"
                if deltas
                else "– | – |"
            )
        )
    args.output.write_text("\n".join(lines) + "\n")
    print(args.output.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
