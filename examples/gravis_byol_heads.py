"""GraVISLoss on lightly's BYOL heads: K views, online predictions ranked against targets.

A BYOL model built from lightly's parts (``BYOLProjectionHead``, ``BYOLPredictionHead``,
momentum copies updated by ``update_momentum`` on a ``cosine_schedule``), trained with
``GraVISLoss`` instead of ``NegativeCosineSimilarity``: the online predictions p of all
B·K views and the momentum projections z' of the same views (no gradient) form one set of
2·B·K embeddings with the image as group id. Every online prediction must rank all
predictions and targets of its image above those of the other images; gradients reach
the online network only.

    python examples/gravis_byol_heads.py --data path/to/images
    python examples/gravis_byol_heads.py            # random FakeData images
"""

from __future__ import annotations

import argparse
import copy

import pytorch_lightning as pl
import torch
import torchvision
from lightly.data import LightlyDataset
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from lightly_derm.data import GroupedViewCollate, to_grouped_batch
from lightly_derm.loss import GraVISLoss
from lightly_derm.models import resnet
from lightly_derm.transforms import GraVISTransform


class BYOLGraVIS(pl.LightningModule):
    def __init__(self, backbone: str = "resnet18", max_epochs: int = 10):
        super().__init__()
        self.max_epochs = max_epochs
        self.backbone = resnet(backbone)
        width = self.backbone.feature_dim
        self.projection_head = BYOLProjectionHead(width, 4096, 256)
        self.prediction_head = BYOLPredictionHead(256, 4096, 256)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = GraVISLoss()

    def forward(self, x):
        y = self.backbone(x).flatten(start_dim=1)
        return self.prediction_head(self.projection_head(y))

    @torch.no_grad()
    def forward_momentum(self, x):
        y = self.backbone_momentum(x).flatten(start_dim=1)
        return self.projection_head_momentum(y)

    def training_step(self, batch, batch_idx):
        momentum = cosine_schedule(self.current_epoch, self.max_epochs, 0.996, 1)
        update_momentum(self.backbone, self.backbone_momentum, m=momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, m=momentum)
        batch = to_grouped_batch(batch)
        p = self.forward(batch.views)  # (B·K, 256), online
        z = self.forward_momentum(batch.views)  # (B·K, 256), target, no gradient
        embeddings = torch.cat([p, z])
        group_ids = torch.cat([batch.group_ids, batch.group_ids])
        loss = self.criterion(embeddings, group_ids)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(
            list(self.backbone.parameters())
            + list(self.projection_head.parameters())
            + list(self.prediction_head.parameters()),
            lr=0.06,
        )


def main(argv: list[str] | None = None) -> nn.Module:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="flat image folder; FakeData when omitted")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--num-views", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=-1)
    args = parser.parse_args(argv)

    model = BYOLGraVIS(args.backbone, args.max_epochs)
    transform = GraVISTransform(num_views=args.num_views, input_size=args.input_size)
    if args.data:
        dataset = LightlyDataset(args.data, transform=transform)
    else:
        dataset = torchvision.datasets.FakeData(
            size=4 * args.batch_size, image_size=(3, 96, 96), transform=transform
        )
    dataloader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        collate_fn=GroupedViewCollate(),
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
