"""FG-SSL's learning rates per loss: the measurement behind the defaults of ``FGSSL``.

For each loss (``barlow_twins``: lightly's Barlow Twins loss, λ = 0.0051; ``authors``:
the FG-SSL code's λ²‖C − I‖²) and each head learning rate in a grid, it trains
:class:`~lightly_derm.methods.FGSSL` (ResNet-18 from scratch, its default embedding and
block widths, grids (16, 8, 4), 64 px views, batch 32, progressive schedule, constant
learning rate) on the shared ISIC 2017 images for a few batches and records:

- the summed loss of every batch (first, last, and whether it rose: the mean of the
  last three batches above the mean of the first three);
- the per-step relative weight change ‖ΔW‖ / ‖W‖ of the head (blocks) and of the
  backbone, the largest over all optimizer steps.

A setting is *stable* when every loss is finite, the loss does not rise and the head's
largest per-step relative change is below 5 %. ``FGSSL``'s ``barlow_twins`` rate is the
stable rate of the grid with the lowest loss after the last batch (on the recorded run
also the largest stable rate halved, rounded down to the grid); the ``authors`` rate is
the authors' own, checked here to be stable.

    OMP_NUM_THREADS=1 python benchmarks/fgssl_learning_rates.py \\
        --output benchmarks/results/fgssl_learning_rates_cpu.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from PIL import Image

ISIC = Path("/work/shared/data/isic2017-seg-subset")


class StepRecorder(pl.Callback):
    """Losses per batch and the relative weight change of each group per optimizer step."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.changes: dict[str, list[float]] = {"head": [], "backbone": []}
        self._before: list[list[torch.Tensor]] = []

    def on_train_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        optimizer = trainer.optimizers[0]

        def pre(opt: torch.optim.Optimizer, *_: object) -> None:
            self._before = [
                [p.detach().clone() for p in g["params"]] for g in opt.param_groups
            ]

        def post(opt: torch.optim.Optimizer, *_: object) -> None:
            for group, before in zip(opt.param_groups, self._before, strict=True):
                delta = sum(
                    float((p.detach() - q).pow(2).sum())
                    for p, q in zip(group["params"], before, strict=True)
                )
                norm = sum(float(q.pow(2).sum()) for q in before)
                self.changes[group["name"]].append(math.sqrt(delta / norm))

        optimizer.register_step_pre_hook(pre)
        optimizer.register_step_post_hook(post)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(trainer.callback_metrics["train_loss"]))


def run(loss: str, lr: float, backbone_lr: float, args: argparse.Namespace) -> dict:
    from lightly_derm.methods import FGSSL

    pl.seed_everything(0, verbose=False)
    paths = sorted((ISIC / "images").glob("ISIC_*.jpg"))[: args.images]
    model = FGSSL(
        backbone="resnet18",
        grids=(16, 8, 4),
        loss=loss,
        lr=lr,
        backbone_lr=backbone_lr,
    )
    transform = model.default_transform(input_size=args.size)
    samples: list[Any] = []  # a list is a map-style dataset
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            image.draft("RGB", (2 * args.size, 2 * args.size))
            samples.append((transform(image.convert("RGB")), 0, f"{i}.jpg"))
    loader: torch.utils.data.DataLoader[Any] = torch.utils.data.DataLoader(
        samples,  # type: ignore[arg-type]
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=model.default_collate(),
    )
    recorder = StepRecorder()
    trainer = pl.Trainer(
        max_epochs=-1,
        max_steps=4 * args.batches,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    start = time.perf_counter()
    trainer.fit(model, loader)
    losses = recorder.losses
    finite = all(math.isfinite(x) for x in losses)
    rose = finite and sum(losses[-3:]) / 3 > sum(losses[:3]) / 3
    head, backbone = max(recorder.changes["head"]), max(recorder.changes["backbone"])
    return {
        "loss": loss,
        "lr": lr,
        "backbone_lr": backbone_lr,
        "losses": losses,
        "first": losses[0],
        "last": losses[-1],
        "rose": rose,
        "finite": finite,
        "max_head_change": head,
        "max_backbone_change": backbone,
        "stable": finite and not rose and head < 0.05,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument(
        "--bt-lrs", type=float, nargs="+", default=[2e-3, 5e-4, 1e-4, 2e-5, 5e-6]
    )
    parser.add_argument("--authors-lrs", type=float, nargs="+", default=[2e-3, 2e-2])
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = []
    for loss, lrs in (("barlow_twins", args.bt_lrs), ("authors", args.authors_lrs)):
        for lr in lrs:
            # from scratch: one rate for the whole network (the FGSSL default then)
            rows.append(run(loss, lr, lr, args))
            row = rows[-1]
            print(
                f"{loss:12s} lr {lr:8.1e}: loss {row['first']:.4g} -> {row['last']:.4g}"
                f" rose={row['rose']} head {row['max_head_change']:.2e} backbone "
                f"{row['max_backbone_change']:.2e} ({row['seconds']:.0f} s)",
                flush=True,
            )
    command = "OMP_NUM_THREADS=1 python " + " ".join(shlex.quote(a) for a in sys.argv)
    lines = [
        "# FG-SSL learning rates per loss (the measurement behind FGSSL's defaults)",
        "",
        f"Command: `{command}`",
        "",
        f"Device: cpu ({platform.machine()}, {torch.get_num_threads()} thread); torch "
        f"{torch.__version__}; ResNet-18 from scratch, embedding 512, block width 256, "
        f"grids (16, 8, 4), {args.size} px, batch {args.batch_size}, {args.batches} "
        f"batches × 4 progressive steps, constant rate, {args.images} shared ISIC 2017 "
        "images. Change: largest per-step ‖ΔW‖/‖W‖ of the group. Stable: finite, mean "
        "of the last 3 batch losses not above the first 3, head change < 5 %.",
        "",
        "| loss | lr (head = backbone) | first loss | last loss | rose | max head change "
        "| max backbone change | stable |",
        "|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['loss']} | {row['lr']:.0e} | {row['first']:.4g} | {row['last']:.4g} "
            f"| {row['rose']} | {row['max_head_change']:.2e} | "
            f"{row['max_backbone_change']:.2e} | {row['stable']} |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    args.output.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
