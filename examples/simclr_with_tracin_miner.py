# lightly's SimCLR example (examples/pytorch_lightning/simclr.py) with AP-BYOL's TracIn
# miner: every image gets an extra positive, the mined image, and a grouping loss trains
# with the merged groups. Lines that differ from lightly's example end in "# added" or
# "# changed"; the rest is lightly's example. Data come from a local image folder
# (nothing is downloaded):
#
#     python examples/simclr_with_tracin_miner.py --data ../shared/data/isic2017-seg-subset/images
#
# TracIn needs a per-sample loss. NT-Xent couples the samples of a batch, so the miner
# gets the per-sample alignment loss −cos(z0_i, z1_i) (the positive term of NT-Xent).
# Its gradient at the last Linear of lightly's SimCLRProjectionHead is followed by a
# BatchNorm, so the scores are the standard per-example decomposition there, not exact
# inner products (see TracInPositiveMiner).

from __future__ import annotations

import argparse

import pytorch_lightning as pl
import torch
import torch.nn.functional as F  # added
import torchvision
from lightly.data import LightlyDataset
from lightly.data.multi_view_collate import MultiViewCollate
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms.simclr_transform import SimCLRTransform
from torch import nn

from lightly_derm.loss import GraVISLoss  # changed: replaces lightly's NTXentLoss
from lightly_derm.miners import TracInPositiveMiner, merge_positive_groups  # added


class SimCLR(pl.LightningModule):
    def __init__(self):
        super().__init__()
        resnet = torchvision.models.resnet18()
        self.backbone = nn.Sequential(*list(resnet.children())[:-1])
        self.projection_head = SimCLRProjectionHead(512, 2048, 2048)
        self.criterion = GraVISLoss(variant="attention")  # changed
        self.miner = TracInPositiveMiner().attach(self.projection_head)  # added

    def forward(self, x):
        x = self.backbone(x).flatten(start_dim=1)
        z = self.projection_head(x)
        return z

    def training_step(self, batch, batch_index):
        (x0, x1), _, _ = batch
        with self.miner.capture():  # added: record the head's last Linear
            z0 = self.forward(x0)
            z1 = self.forward(x1)
        mined = self.miner(-F.cosine_similarity(z0, z1))  # added: (B, 1) per image
        images = torch.arange(len(x0), device=z0.device).repeat(2)  # added: view ids
        groups = merge_positive_groups(images, mined)  # added: image ∪ mined image
        loss = self.criterion(torch.cat([z0, z1]), groups)  # changed
        return loss

    def configure_optimizers(self):
        optim = torch.optim.SGD(self.parameters(), lr=0.06)
        return optim


def main() -> None:
    parser = argparse.ArgumentParser(description="SimCLR with TracIn-mined positives")
    parser.add_argument("--data", required=True, help="a folder of images")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    model = SimCLR()
    transform = SimCLRTransform(input_size=args.input_size)
    dataset = LightlyDataset(args.data, transform=transform)
    collate_fn = MultiViewCollate()
    dataloader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        collate_fn=collate_fn,
        shuffle=True,
        drop_last=True,
        num_workers=2,
    )
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    trainer = pl.Trainer(max_epochs=args.epochs, devices=1, accelerator=accelerator)
    trainer.fit(model=model, train_dataloaders=dataloader)


if __name__ == "__main__":
    main()
