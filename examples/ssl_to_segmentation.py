"""SSL-pretrain an encoder on ISIC images, fine-tune lesion segmentation from it.

1. Pretrain a backbone with any registered ``method`` plugin (default ``gravis``) on the
   training images, without their masks; save the Lightning checkpoint.
2. Fine-tune a MONAI FlexibleUNet (``LesionSegmentation``) from that checkpoint, and the
   same network from a random encoder, on the same (optionally low-label) training masks.
3. Print validation Dice / Jaccard / ISIC 2017 thresholded Jaccard side by side and write
   them to ``<out>/results.json``.

Tiny, on a laptop CPU (a few minutes)::

    python examples/ssl_to_segmentation.py --limit 24 --image-size 64 \\
        --backbone resnet18 --ssl-epochs 2 --epochs 3

Full size, on one GPU::

    python examples/ssl_to_segmentation.py --device cuda --image-size 256 \\
        --backbone resnet50 --ssl-epochs 200 --epochs 100 --batch-size 16 \\
        --num-workers 8 --cache-rate 1.0

The command line runs the same steps (its pretraining uses the whole folder)::

    lightly-derm pretrain --method gravis --data isic2017-seg-subset --out runs/gravis
    lightly-derm segment --checkpoint runs/gravis --data isic2017-seg-subset --baseline

``--checkpoint PATH`` skips step 1 and fine-tunes from an existing SSL checkpoint (any
format ``lightly_derm.segmentation.load_ssl_encoder`` reads); ``--label-fraction 0.1``
fine-tunes on 10 % of the training masks (SSL still sees all training images).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightly.data import LightlyDataset

from lightly_derm import registry
from lightly_derm.data import ISICSegmentationDataModule
from lightly_derm.jobs import build_trainer
from lightly_derm.jobs.segment import SCORES, finetune_segmentation

#: The shared ISIC subset beside the checkout (or beside its folder of worktrees).
DEFAULT_DATA = next(
    (
        p / "shared/data/isic2017-seg-subset"
        for p in Path(__file__).resolve().parents
        if (p / "shared/data/isic2017-seg-subset").is_dir()
    ),
    Path("isic2017-seg-subset"),
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ISIC folder")
    parser.add_argument("--out", type=Path, default=Path("ssl_to_segmentation_out"))
    parser.add_argument("--method", default="gravis", help="a registered method plugin")
    parser.add_argument(
        "--checkpoint", type=Path, help="fine-tune from this SSL checkpoint"
    )
    parser.add_argument(
        "--backbone", default="resnet50", choices=("resnet18", "resnet34", "resnet50")
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--precision", help="Lightning precision (default: bf16-mixed on cuda, else 32)"
    )
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--ssl-epochs", type=int, default=100)
    parser.add_argument("--ssl-batch-size", type=int, default=16)
    parser.add_argument(
        "--ssl-lr", type=float, help="optimiser lr of the method, if it takes one"
    )
    parser.add_argument("--epochs", type=int, default=50, help="fine-tuning epochs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--freeze-epochs", type=int, default=0)
    parser.add_argument("--label-fraction", type=float, default=1.0)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument(
        "--limit", type=int, help="use only the first N pairs (tiny runs)"
    )
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--cache-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _hardware(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "accelerator": "gpu" if args.device == "cuda" else "cpu",
        "devices": 1,
        "precision": args.precision
        or ("bf16-mixed" if args.device == "cuda" else "32-true"),
    }


def pretrain(args: argparse.Namespace, data: ISICSegmentationDataModule) -> Path:
    """Pretrains ``args.method`` on the training images; returns the checkpoint path.

    The images of the validation pairs are left out, so the SSL encoder never sees them
    (``lightly-derm pretrain --data`` would use the whole folder).
    """
    if ("method", args.method) not in registry:
        raise SystemExit(
            f"no method plugin {args.method!r} is registered (installed: "
            f"{registry.names('method') or 'none'}); pass --checkpoint to fine-tune "
            "from an existing SSL checkpoint"
        )
    kwargs: dict[str, Any] = {"backbone": args.backbone}
    if args.ssl_lr is not None:
        kwargs["lr"] = args.ssl_lr
    method = registry.create("method", args.method, **kwargs)
    images = [Path(p["image"]) for p in data.all_train_pairs]  # no masks needed
    dataset = LightlyDataset(
        input_dir=str(images[0].parent),
        transform=method.default_transform(input_size=args.image_size),
        filenames=[p.name for p in images],
    )
    batch_size = min(args.ssl_batch_size, len(dataset))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.num_workers,
        collate_fn=method.default_collate(),
        persistent_workers=args.num_workers > 0,
    )
    # The command line's Trainer: checkpoints/last.ckpt and best.ckpt, metrics.csv.
    trainer = build_trainer(
        args.out / f"ssl_{args.method}",
        max_epochs=args.ssl_epochs,
        log_every_n_steps=1,
        tensorboard=False,
        progress_bar=False,
        **_hardware(args),
    )
    trainer.fit(method, loader)
    return args.out / f"ssl_{args.method}" / "checkpoints" / "last.ckpt"


def finetune(
    args: argparse.Namespace,
    data: ISICSegmentationDataModule,
    checkpoint: Path | None,
    name: str,
) -> dict[str, float]:
    """Fine-tunes LesionSegmentation from ``checkpoint`` (or a random encoder).

    The same function as ``lightly-derm segment`` runs: same seed, so both encoders
    see the same decoder initialisation and batches.
    """
    return finetune_segmentation(
        data,
        checkpoint,
        backbone=args.backbone,
        out_dir=args.out / name,
        epochs=args.epochs,
        lr=args.lr,
        freeze_encoder_epochs=args.freeze_epochs,
        seed=args.seed,
        tensorboard=False,
        progress_bar=False,
        plots=False,
        name=name,
        **_hardware(args),
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(args.seed)
    data = ISICSegmentationDataModule(
        args.data,
        val_fraction=args.val_fraction,
        label_fraction=args.label_fraction,
        seed=args.seed,
        limit=args.limit,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        cache_rate=args.cache_rate,
    )
    print(
        f"{len(data.all_train_pairs)} training images, {len(data.train_pairs)} with "
        f"masks (label fraction {args.label_fraction}), {len(data.val_pairs)} validation"
    )
    start = time.perf_counter()
    checkpoint = args.checkpoint or pretrain(args, data)
    ssl_seconds = time.perf_counter() - start
    source = "checkpoint" if args.checkpoint else f"ssl-{args.method}"
    results = {
        source: finetune(args, data, checkpoint, f"finetune_{source}"),
        "random-init": finetune(args, data, None, "finetune_random"),
    }
    print(f"\n{'encoder':<16}" + "".join(f"{s[4:]:>22}" for s in SCORES))
    for label, scores in results.items():
        print(f"{label:<16}" + "".join(f"{scores[s]:>22.4f}" for s in SCORES))
    report = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "checkpoint": str(checkpoint),
        "ssl_seconds": ssl_seconds,
        "train_pairs": len(data.train_pairs),
        "val_pairs": len(data.val_pairs),
        "results": results,
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out / 'results.json'}")
    return report


if __name__ == "__main__":
    main()
