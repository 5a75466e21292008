from __future__ import annotations

import pytest
import torch
from monai.data import CacheDataset

from lightly_derm.data import (
    ISICSegmentationDataModule,
    find_isic_pairs,
    isic_segmentation_dataset,
)


def test_low_label_subsets_keep_the_validation_set(isic_dir) -> None:
    full = ISICSegmentationDataModule(isic_dir, limit=40, val_fraction=0.25, seed=1)
    tenth = ISICSegmentationDataModule(
        isic_dir, limit=40, val_fraction=0.25, seed=1, label_fraction=0.1
    )
    half = ISICSegmentationDataModule(
        isic_dir, limit=40, val_fraction=0.25, seed=1, label_fraction=0.5
    )
    assert len(full.val_pairs) == 10 and len(full.train_pairs) == 30
    assert tenth.val_pairs == half.val_pairs == full.val_pairs
    assert tenth.all_train_pairs == full.train_pairs
    assert len(tenth.train_pairs) == 3 and len(half.train_pairs) == 15
    ids = lambda pairs: {p["id"] for p in pairs}  # noqa: E731
    assert ids(tenth.train_pairs) <= ids(half.train_pairs) <= ids(full.train_pairs)
    assert ids(full.train_pairs).isdisjoint(ids(full.val_pairs))
    assert tenth.hparams["label_fraction"] == 0.1


def test_batches(isic_dir) -> None:
    pairs = find_isic_pairs(isic_dir)[:6]
    data = ISICSegmentationDataModule(
        pairs=pairs[:4],
        val_pairs=pairs[4:],
        image_size=32,
        batch_size=2,
        cache_rate=1.0,
    )
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["label"].shape == (
        2,
        1,
        32,
        32,
    )
    assert len(batch["id"]) == 2 and all(i.startswith("ISIC_") for i in batch["id"])
    val = [b["id"] for b in data.val_dataloader()]
    assert sum(val, []) == [p["id"] for p in pairs[4:]]
    assert isinstance(data._dataset("train"), CacheDataset)
    with pytest.raises(ValueError, match="no test pairs"):
        data.test_dataloader()


def test_no_training_batch_of_one_image(isic_dir) -> None:
    """A last training batch of one image would break BatchNorm; it is dropped."""
    pairs = find_isic_pairs(isic_dir)[:8]
    data = ISICSegmentationDataModule(
        pairs=pairs[:5], val_pairs=pairs[5:], image_size=32, batch_size=2
    )
    assert data.train_dataloader().drop_last and len(data.train_dataloader()) == 2
    assert not data.val_dataloader().drop_last  # every validation image is scored
    other = ISICSegmentationDataModule(
        pairs=pairs[:5], val_pairs=pairs[5:], batch_size=3
    )
    assert not other.train_dataloader().drop_last  # a last batch of 2 is kept


def test_dataset_factory_and_errors(isic_dir) -> None:
    pairs = find_isic_pairs(isic_dir)[:1]
    item = isic_segmentation_dataset(pairs, image_size=32, train=False)[0]
    assert item["image"].shape == (3, 32, 32) and torch.isfinite(item["image"]).all()
    with pytest.raises(ValueError, match="cache_rate"):
        isic_segmentation_dataset(pairs, cache_rate=2)
    with pytest.raises(ValueError, match="exactly one of root and pairs"):
        ISICSegmentationDataModule()
    with pytest.raises(ValueError, match="label_fraction"):
        ISICSegmentationDataModule(pairs=pairs, label_fraction=0)
    with pytest.raises(TypeError, match="list of"):
        ISICSegmentationDataModule(pairs=["a.jpg"])


@pytest.mark.parametrize("cache_rate", [0.0, 1.0])
def test_bad_pair_errors_reach_the_user_unwrapped(tmp_path, cache_rate) -> None:
    """MONAI wraps transform errors in RuntimeError; the file-naming ValueError wins."""
    import numpy as np
    from PIL import Image

    Image.new("RGB", (40, 24)).save(tmp_path / "ISIC_0000001.jpg")
    mask = np.zeros((24, 40), np.uint8)
    mask[2, 2], mask[3, 3] = 128, 255
    Image.fromarray(mask).save(tmp_path / "ISIC_0000001_segmentation.png")
    pairs = find_isic_pairs(tmp_path)
    with pytest.raises(
        ValueError, match=r"ISIC_0000001_segmentation\.png is not binary"
    ):
        isic_segmentation_dataset(pairs, image_size=16, cache_rate=cache_rate)[0]
