"""lightly's SimCLR example model with GraVIS swapped in.

This is lightly's ``examples/pytorch_lightning/simclr.py`` (same model: a ResNet-18
backbone and lightly's ``SimCLRProjectionHead``). The lines marked ``# GraVIS`` are the
only changes: K views per image from ``GraVISTransform``, ``GroupedViewCollate`` instead
of ``MultiViewCollate``, and ``GraVISLoss`` on all B·K embeddings instead of
``NTXentLoss`` on two.

    python examples/gravis_simclr_swap.py --data path/to/images  # a flat image folder
    python examples/gravis_simclr_swap.py                        # random FakeData images
"""

from __future__ import annotations

import argparse

import pytorch_lightning as pl
import torch
import torchvision
from lightly.data import LightlyDataset
from lightly.models.modules import SimCLRProjectionHead
from torch import nn

from lightly_derm.data import GroupedViewCollate  # GraVIS
from lightly_derm.loss import GraVISLoss  # GraVIS
from lightly_derm.transforms import GraVISTransform  # GraVIS


class SimCLR(pl.LightningModule):
    def __init__(self):
        super().__init__()
        resnet = torchvision.models.resnet18()
        self.backbone = nn.Sequential(*list(resnet.children())[:-1])
        self.projection_head = SimCLRProjectionHead(512, 2048, 2048)
        self.criterion = GraVISLoss()  # GraVIS: was NTXentLoss()

    def forward(self, x):
        x = self.backbone(x).flatten(start_dim=1)
        z = self.projection_head(x)
        return z

    def training_step(self, batch, batch_index):
        views, group_ids, _, _ = batch  # GraVIS: was (x0, x1), _, _ = batch
        z = self.forward(views)  # GraVIS: all B·K views in one pass
        loss = self.criterion(z, group_ids)  # GraVIS: was self.criterion(z0, z1)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        optim = torch.optim.SGD(self.parameters(), lr=0.06)
        return optim


def main(argv: list[str] | None = None) -> SimCLR:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="flat image folder; FakeData when omitted")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--num-views", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=-1)
    args = parser.parse_args(argv)

    model = SimCLR()
    transform = GraVISTransform(  # GraVIS: was SimCLRTransform(input_size=32)
        num_views=args.num_views, input_size=args.input_size
    )
    if args.data:
        dataset = LightlyDataset(args.data, transform=transform)
    else:
        dataset = torchvision.datasets.FakeData(
            size=4 * args.batch_size, image_size=(3, 64, 64), transform=transform
        )
    collate_fn = GroupedViewCollate()  # GraVIS: was MultiViewCollate()
    dataloader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        collate_fn=collate_fn,
        shuffle=True,
        drop_last=True,
        num_workers=2,
    )
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    trainer = pl.Trainer(
        max_epochs=args.max_epochs,
        max_steps=args.max_steps,
        devices=1,
        accelerator=accelerator,
    )
    trainer.fit(model=model, train_dataloaders=dataloader)
    return model


if __name__ == "__main__":
    main()
