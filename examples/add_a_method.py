"""Adding a pretraining method: VICReg from lightly's parts, in one small class.

The whole contract of a lightly-derm method (docs/architecture.rst, "Adding a
method"): subclass ``SSLMethod``, pass the backbone arguments to it, say which views
you want (``cpu_view_transform``), turn a batch into a loss (``training_step``) and
choose the optimiser (``configure_optimizers``). ``augment="gpu"``, the command line,
checkpoints and the segmentation transfer then work without more code.

    python examples/add_a_method.py        # 4 training steps on synthetic lesions
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead
from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform
from torch import Tensor, nn

from lightly_derm.data import SyntheticLesions, to_grouped_batch
from lightly_derm.methods import SSLMethod
from lightly_derm.methods.base import Augment
from lightly_derm.plugins import Component, hookimpl
from lightly_derm.transforms import RGBInput
from lightly_derm.utils.scheduler import cosine_annealing, training_length


class VICReg(SSLMethod):
    """VICReg (Bardes, Ponce & LeCun, ICLR 2022) with lightly's head and loss."""

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        backbone_weights: str | Path | Mapping[str, Tensor] | None = None,
        augment: Augment = "cpu",
        projection_dim: int = 2048,
        lr: float = 0.05,
    ) -> None:
        # 1. the base class builds the backbone and checks the shared arguments
        super().__init__(backbone, backbone_weights, augment)
        self.save_hyperparameters(ignore=["backbone", "backbone_weights"])
        self.projection_head = VICRegProjectionHead(
            self.feature_dim, projection_dim, projection_dim
        )
        self.criterion = VICRegLoss()

    # 2. the views: any lightly multi-view transform (its GPU form is derived from it);
    #    VICReg's are BYOL's
    def cpu_view_transform(self, input_size: int = 224) -> RGBInput:
        """lightly's two-view ``BYOLTransform``, accepting any image mode."""
        return RGBInput(
            BYOLTransform(
                view_1_transform=BYOLView1Transform(input_size=input_size),
                view_2_transform=BYOLView2Transform(input_size=input_size),
            )
        )

    # 3. a batch to a loss: every batch arrives as (or converts to) a GroupedBatch
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """VICReg loss of the two views; logs ``train_loss``."""
        batch = to_grouped_batch(batch)
        z = self.projection_head(self.forward(batch.views))
        z = z.unflatten(0, (batch.batch_size, batch.num_views))
        loss = self.criterion(z[:, 0], z[:, 1])
        self.log("train_loss", loss, batch_size=batch.batch_size)
        return loss

    # 4. the optimiser, with the package's cosine decay over the run
    def configure_optimizers(self) -> Any:
        """SGD with a cosine decay over the run's epochs (or steps)."""
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])
        return cosine_annealing(optimizer, training_length(self.trainer))


# 5. (optional) make it a plugin: `lightly-derm pretrain --method vicreg` finds it once
# this hook's module is named under the entry-point group "lightly_derm" in
# pyproject.toml, or registered at run time with registry.register_plugin(module)
@hookimpl
def lightly_derm_components() -> list[Component]:
    """The method of this example, for the plugin registry."""
    return [Component(kind="method", name="vicreg", target=f"{__name__}:VICReg")]


def main(steps: int = 4, input_size: int = 64) -> float:
    """Trains a few steps on built-in synthetic lesions; returns the last loss."""
    method = VICReg(backbone="resnet18", projection_dim=128)
    data = SyntheticLesions(
        num_images=16,
        image_size=input_size,
        transform=method.default_transform(input_size),
    )
    loader = torch.utils.data.DataLoader(
        data, batch_size=8, shuffle=True, collate_fn=method.default_collate()
    )
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(method, loader)
    return float(trainer.callback_metrics["train_loss"])


if __name__ == "__main__":
    print(f"train_loss after 4 steps: {main():.4f}")
