from __future__ import annotations

import pytest
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform

from lightly_derm.data import GroupedViewCollate
from lightly_derm.methods import SimCLR
from lightly_derm.transforms import RGBInput

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are trying to `self.log\\(\\)`:UserWarning"
)


def _batch(batch_size: int, num_views: int):
    gen = torch.Generator().manual_seed(1)
    samples = [
        ([torch.randn(3, 32, 32, generator=gen) for _ in range(num_views)], b)
        for b in range(batch_size)
    ]
    return samples, GroupedViewCollate()(samples)


def test_lightly_parts_and_loss_on_the_two_views() -> None:
    model = SimCLR(backbone="resnet18", hidden_dim=64, output_dim=16, temperature=0.3)
    assert isinstance(model.projection_head, SimCLRProjectionHead)
    assert isinstance(model.criterion, NTXentLoss)
    transform = model.default_transform(input_size=32)
    assert isinstance(transform, RGBInput)
    assert isinstance(transform.transform, SimCLRTransform)
    samples, batch = _batch(4, 2)
    with torch.no_grad():
        z = model.projection_head(model.backbone(batch.views))
        # Image-major rows: view 0 of every image at even rows, view 1 at odd rows.
        expected = NTXentLoss(temperature=0.3)(z[0::2], z[1::2])
        got = model.training_step(batch, 0)
    torch.testing.assert_close(got, expected)
    assert model.hparams["lr"] == 1e-3


def test_needs_two_views() -> None:
    model = SimCLR(backbone="resnet18", hidden_dim=16, output_dim=8)
    _, batch = _batch(2, 3)
    with pytest.raises(ValueError, match="SimCLR needs 2 views per image, got 3"):
        model.training_step(batch, 0)
