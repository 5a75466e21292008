from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from lightly_derm.data import SyntheticSegmentationData, SyntheticSegmentationTransform


@pytest.mark.parametrize(("size", "fraction", "kept"), [(32, 1.0, 8), (24, 0.5, 4)])
def test_batches_are_segmentation_dictionaries(size, fraction, kept) -> None:
    data = SyntheticSegmentationData(
        8, 4, image_size=size, label_fraction=fraction, batch_size=4, seed=1
    )
    assert len(data.train_dataset) == kept and len(data.val_dataset) == 4
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (4, 3, size, size)
    assert batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4, 1, size, size)
    assert set(batch["label"].unique().tolist()) <= {0.0, 1.0}
    assert len(batch["id"]) == 4
    # validation items are not augmented: the same on every pass
    first, again = (next(iter(data.val_dataloader())) for _ in range(2))
    assert torch.equal(first["image"], again["image"])
    assert torch.equal(first["label"], again["label"])


def test_the_old_import_path_still_works() -> None:
    from lightly_derm.jobs.segment import SyntheticSegmentationData as old_data

    assert old_data is SyntheticSegmentationData
    # lightly_derm.jobs.transforms.SyntheticSegmentationTransform: a shim, tested
    # in tests/transforms/test_eval.py


MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@pytest.mark.parametrize("seed", range(6))
def test_synthetic_segmentation_moves_the_mask_with_the_image(seed) -> None:
    torch.manual_seed(seed)
    mask = torch.zeros(1, 16, 16, dtype=torch.uint8)
    mask[:, 2:7, 3:12] = 1  # asymmetric: flips and rotations change it
    item = {
        "image": tv_tensors.Image((mask * 255).expand(3, -1, -1).clone()),
        "mask": tv_tensors.Mask(mask),
        "filename": "synthetic_000001.png",
    }
    out = SyntheticSegmentationTransform(train=True)(item)
    assert out["id"] == "synthetic_000001.png"
    assert out["image"].dtype == torch.float32 and type(out["image"]) is torch.Tensor
    assert out["label"].shape == (1, 16, 16) and out["label"].dtype == torch.float32
    pixels = out["image"] * STD + MEAN  # back to [0, 1]
    assert torch.equal((pixels[0:1] > 0.5).float(), out["label"])
