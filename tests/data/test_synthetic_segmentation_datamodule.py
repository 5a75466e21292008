from __future__ import annotations

import pytest
import torch

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


def test_the_old_import_paths_still_work() -> None:
    from lightly_derm.jobs.segment import SyntheticSegmentationData as old_data
    from lightly_derm.jobs.transforms import (
        SyntheticSegmentationTransform as old_transform,
    )

    assert old_data is SyntheticSegmentationData
    assert old_transform is SyntheticSegmentationTransform
