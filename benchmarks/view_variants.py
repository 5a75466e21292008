"""Which pretraining views make an SSL encoder transfer to lesion segmentation?

Pretrains one method exactly as the study's ``cpu`` scale did until 2026-12-05
(ResNet-18, 64 px, 10 epochs of batch 16 on the 193 images of ISIC fold 0's training
folds, SGD lr 0.0075; the scale has used AdamW since)
with its default views and with view variants, then fine-tunes each encoder and a
random one on a fraction of the masks for several fine-tune seeds
(:func:`benchmarks.finetune_length.finetune`) and reports the paired difference to
random init on the held-out fold.

Two hypotheses about the views, both about what a positive pair teaches on dermoscopy
images, where one lesion fills the middle of every image:

- **colour** (GraVIS): strong colour jitter and random grayscale teach the encoder to
  ignore colour, while lesion segmentation leans on colour contrast;
- **crop scale** (every method): with lightly's ``min_scale`` 0.08 (BYOL, AP-BYOL;
  GraVIS 0.2), one view of a pair is often all lesion and the other all skin, and the
  loss pulls the two together — it teaches the encoder that lesion and skin look the
  same, the opposite of what segmentation needs. Larger crops keep both, and the
  border, in every view.

A variant is a set of arguments of the method's view transform
(:class:`~lightly_derm.transforms.GraVISTransform` for GraVIS; lightly's
``BYOLView1Transform`` and ``BYOLView2Transform``, both views, for BYOL and AP-BYOL),
set by replacing the method's ``cpu_view_transform`` in this process (an experiment, not
an API).

Example (after the study's cpu scale has run; ``--random-from`` reuses the random-init
and default-view fine-tunes of a ``finetune_length.py`` run with the same fraction and
epochs)::

    python benchmarks/view_variants.py --study-out benchmarks/results/study_cpu \
        --method ap_byol --variants default scale05 --pretrain-seeds 0 1 \
        --finetune-seeds 0 1 2 3 4 5 --label-fraction 0.03 --epochs 100 \
        --random-from benchmarks/results/few_masks_cpu.jsonl \
        --output benchmarks/results/view_scale_cpu.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script
from benchmarks.finetune_length import (  # noqa: E402
    append_row,
    finetune,
    paired_cells,
    read_rows,
)

#: View-transform arguments of each variant (the rest: the method's defaults).
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    # colour kept: no hue shift, no grayscale, half-strength jitter (GraVIS only)
    "colour": {"cj_hue": 0.0, "random_gray_scale": 0.0, "cj_strength": 0.5},
    # no colour augmentation at all (GraVIS only)
    "nocolour": {"cj_prob": 0.0, "random_gray_scale": 0.0},
    # crops of at least 30 %, 50 % of the image
    "scale03": {"min_scale": 0.3},
    "scale05": {"min_scale": 0.5},
}

#: The ``cpu`` scale's ISIC pretraining settings until 2026-12-05.
METHOD_ARGS: dict[str, Any] = {"lr": 0.0075, "momentum": 0.9, "weight_decay": 5e-4}


def _views(method: str, kwargs: dict[str, Any]) -> tuple[type, Callable[..., Any]]:
    """The method class whose ``cpu_view_transform`` to replace, and the replacement."""
    if method == "gravis":
        from lightly_derm.methods import GraVIS
        from lightly_derm.transforms import GraVISTransform

        def gravis_views(self: GraVIS, input_size: int = 224) -> Any:
            return GraVISTransform(
                num_views=self.num_views, input_size=input_size, **kwargs
            )

        return GraVIS, gravis_views
    if method in ("byol", "ap_byol"):
        from lightly.transforms import (
            BYOLTransform,
            BYOLView1Transform,
            BYOLView2Transform,
        )

        from lightly_derm.methods import APBYOL, BYOL
        from lightly_derm.transforms import RGBInput

        def byol_views(self: BYOL, input_size: int = 224) -> Any:
            return RGBInput(
                BYOLTransform(
                    view_1_transform=BYOLView1Transform(
                        input_size=input_size, **kwargs
                    ),
                    view_2_transform=BYOLView2Transform(
                        input_size=input_size, **kwargs
                    ),
                )
            )

        return (APBYOL if method == "ap_byol" else BYOL), byol_views
    raise ValueError(f"--method must be gravis, byol or ap_byol, got {method!r}")


def pretrain_variant(
    method: str, variant: str, data: Path, out: Path, seed: int
) -> Path:
    """Pretrains ``method`` with the variant's views; returns the backbone file."""
    from lightly_derm.jobs import pretrain

    backbone = out / "backbone.pt"
    if backbone.is_file():
        return backbone
    with patched_views(method, variant):
        pretrain(
            method=method,
            method_args=dict(METHOD_ARGS),
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
    return backbone


@contextmanager
def patched_views(method: str, variant: str) -> Iterator[None]:
    """Inside the block, ``method`` makes its views with the variant's arguments (its
    class's ``cpu_view_transform`` replaced, restored after; ``"default"``: none)."""
    if variant == "default":
        yield
        return
    cls, views = _views(method, VARIANTS[variant])
    had_own = "cpu_view_transform" in vars(cls)
    original = vars(cls).get("cpu_view_transform")
    cls.cpu_view_transform = views  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if had_own:
            cls.cpu_view_transform = original  # type: ignore[attr-defined]
        else:
            del cls.cpu_view_transform  # type: ignore[attr-defined]


def _reused(path: Path | None, method: str, epochs: int) -> list[dict[str, Any]]:
    """Random-init and default-view rows of a ``finetune_length.py`` ``.jsonl``."""
    if path is None or not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        r = json.loads(line) if line else None
        if not r or r["epochs"] != epochs or r.get("frozen") or r.get("freeze_epochs"):
            continue
        if r.get("encoder_lr_scale", 1.0) != 1.0:
            continue
        if r["method"] == "random":
            rows.append({**r, "variant": "random", "pretrain_seed": None})
        elif r["method"] == method:
            rows.append({**r, "variant": "default"})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-out", required=True, type=Path)
    parser.add_argument(
        "--method", default="gravis", choices=["gravis", "byol", "ap_byol"]
    )
    parser.add_argument(
        "--variants", nargs="+", default=["default", "colour"], choices=sorted(VARIANTS)
    )
    parser.add_argument("--pretrain-seeds", nargs="+", type=int, default=[1])
    parser.add_argument(
        "--finetune-seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4]
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--label-fraction", type=float, default=0.1)
    parser.add_argument("--work", type=Path, default=Path("view_variants_work"))
    parser.add_argument(
        "--random-from",
        type=Path,
        help="a finetune_length .jsonl of the same label fraction: its random-init and "
        "this method's fine-tunes are reused as the random and default rows",
    )
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)

    (fold,) = sorted((args.study_out / "data").glob("isic_*/folds/fold_0"))
    jsonl = args.output.with_suffix(".jsonl")
    rows = read_rows(jsonl)  # a rerun continues
    done = {(r["variant"], r.get("pretrain_seed"), r["seed"]) for r in rows}
    for r in _reused(args.random_from, args.method, args.epochs):
        key = (r["variant"], r["pretrain_seed"], r["seed"])
        if key not in done:
            rows.append(r)
            done.add(key)
    for variant in ["random", *args.variants]:
        for pretrain_seed in [None] if variant == "random" else args.pretrain_seeds:
            todo = [
                s
                for s in args.finetune_seeds
                if (variant, pretrain_seed, s) not in done
            ]
            if not todo:
                continue
            backbone = None
            if pretrain_seed is not None:
                study_backbone = (
                    args.study_out
                    / "jobs"
                    / f"isic2017-{args.method}-seed{pretrain_seed}-fold0"
                    / "pretrain"
                    / "backbone.pt"
                )
                if variant == "default" and study_backbone.is_file():
                    backbone = study_backbone  # the study's own run: the same settings
                else:
                    started = time.time()
                    backbone = pretrain_variant(
                        args.method,
                        variant,
                        fold / "train",
                        args.work / f"{args.method}-{variant}-seed{pretrain_seed}",
                        pretrain_seed,
                    )
                    print(
                        f"{variant} seed {pretrain_seed}: pretrained in "
                        f"{time.time() - started:.0f} s",
                        flush=True,
                    )
            for seed in todo:
                started = time.time()
                scores = finetune(
                    backbone,
                    fold / "train",
                    fold / "val",
                    args.epochs,
                    seed,
                    args.label_fraction,
                )
                row = {
                    "variant": variant,
                    "method": "random" if variant == "random" else args.method,
                    "pretrain_seed": pretrain_seed,
                    "seed": seed,
                    "epochs": args.epochs,
                    "label_fraction": args.label_fraction,
                    "val_jaccard": scores["val_jaccard"],
                    "val_dice": scores["val_dice"],
                    "seconds": round(time.time() - started, 1),
                }
                print(row, flush=True)
                rows.append(row)
                append_row(jsonl, row)
    random = {r["seed"]: r["val_jaccard"] for r in rows if r["variant"] == "random"}
    lines = [
        f"# {args.method} views and transfer to lesion segmentation "
        f"(ISIC fold 0, {args.label_fraction:.0%} of the masks, {args.epochs} epochs)",
        "",
        "command: `python benchmarks/view_variants.py "
        + " ".join(argv if argv is not None else sys.argv[1:])
        + "`",
        "",
        f"{args.method} pretrained per variant and pretraining seed; each encoder "
        f"fine-tuned {args.epochs} epochs with every fine-tune seed; mean ± sd over "
        "fine-tune seeds, Δ paired with random init's same fine-tune seed.",
        "",
        "| variant | views (transform arguments) | pretrain seed | fine-tunes | Jaccard | Δ Jaccard vs random | Δ > 0 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for variant in ["random", *args.variants]:
        for pretrain_seed in [None] if variant == "random" else args.pretrain_seeds:
            group = [
                r
                for r in rows
                if r["variant"] == variant
                and r.get("pretrain_seed") == pretrain_seed
                and r["seed"] in args.finetune_seeds
            ]
            if not group:
                continue
            jaccards = [r["val_jaccard"] for r in group]
            deltas = [
                r["val_jaccard"] - random[r["seed"]]
                for r in group
                if variant != "random" and r["seed"] in random
            ]
            views = "–" if variant == "random" else (str(VARIANTS[variant]) or "{}")
            lines.append(
                f"| {variant} | {views} | {'–' if pretrain_seed is None else pretrain_seed} "
                f"| {paired_cells(jaccards, deltas)} |"
            )
    args.output.write_text("\n".join(lines) + "\n")
    print(args.output.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
