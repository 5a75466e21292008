"""Pretrain an encoder with GraVIS on a folder of skin images (CPU, one or many GPUs).

Uses the ready method :class:`lightly_derm.methods.GraVIS` with its default transform
(K views) and collate. The backbone weights are saved in torchvision key names, ready for
MONAI or torchvision.

    # laptop CPU, tiny run
    python examples/gravis_pretrain.py --data ../shared/data/isic2017-seg-subset/images \\
        --backbone resnet18 --input-size 64 --batch-size 8 --max-epochs 1
    # 4 GPUs, DDP, bf16 mixed precision, the authors' recipe but K = 4
    python examples/gravis_pretrain.py --data /data/isic2017/train --accelerator gpu \\
        --devices 4 --strategy ddp --precision bf16-mixed --batch-size 16 --max-epochs 240
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytorch_lightning as pl
import torch
import torchvision
from lightly.data import LightlyDataset

from lightly_derm.methods import GraVIS


def main(argv: list[str] | None = None) -> GraVIS:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="flat image folder; FakeData when omitted")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--num-views", type=int, default=4)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16, help="images per device")
    parser.add_argument("--variant", default="smooth_ap")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-epochs", type=int, default=240)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--devices", default="auto")
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("runs/gravis"))
    args = parser.parse_args(argv)

    model = GraVIS(
        backbone=args.backbone,
        num_views=args.num_views,
        variant=args.variant,
        lr=args.lr,
    )
    transform = model.default_transform(input_size=args.input_size)
    if args.data:
        dataset = LightlyDataset(args.data, transform=transform)
    else:
        dataset = torchvision.datasets.FakeData(
            size=4 * args.batch_size, image_size=(3, 256, 256), transform=transform
        )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,  # equal view counts on every DDP rank
        num_workers=args.num_workers,
        collate_fn=model.default_collate(),
        persistent_workers=args.num_workers > 0,
    )
    devices = int(args.devices) if args.devices.isdigit() else args.devices
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=devices,
        strategy=args.strategy,
        precision=args.precision,
        max_epochs=args.max_epochs,
        max_steps=args.max_steps,
        default_root_dir=args.out,
        log_every_n_steps=1,
    )
    trainer.fit(model, loader)
    if trainer.is_global_zero:
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save(model.backbone.state_dict(), args.out / "backbone.pt")
        print(f"train_loss {float(trainer.callback_metrics['train_loss']):.4f}")
        print(f"backbone weights (torchvision keys): {args.out / 'backbone.pt'}")
    return model


if __name__ == "__main__":
    main()
