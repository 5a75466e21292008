"""Synthetic lesions with masks as a segmentation DataModule (the ``segment`` demo's data).

Builds on :class:`pytorch_lightning.LightningDataModule`,
:class:`~lightly_derm.data.SyntheticLesions` (``return_mask=True``) and torchvision
transforms v2 (image and mask moved together as ``tv_tensors``). Batches are the
dictionaries ``image``, ``label``, ``id`` of
:class:`~lightly_derm.data.ISICSegmentationDataModule`, so
:class:`~lightly_derm.segmentation.LesionSegmentation` trains on either. Synthetic data,
not patient data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import tv_tensors
from torchvision.transforms import v2

from lightly_derm.data.synthetic_lesions import SyntheticLesions

__all__ = ["SyntheticSegmentationData", "SyntheticSegmentationTransform"]


def _normalize(normalize: Mapping[str, Sequence[float]] | None = None) -> v2.Normalize:
    normalize = normalize or IMAGENET_NORMALIZE
    return v2.Normalize(list(normalize["mean"]), list(normalize["std"]))


class SyntheticSegmentationTransform:
    """Maps a :class:`~lightly_derm.data.SyntheticLesions` mask item to a segmentation sample.

    ``{"image": tv_tensors.Image uint8, "mask": tv_tensors.Mask, "filename", ...}`` →
    ``{"image": (3, H, W) float32 normalised, "label": (1, H, W) float32 in {0, 1},
    "id": filename}``, the format of
    :func:`~lightly_derm.transforms.isic_segmentation_transforms` that
    :class:`~lightly_derm.segmentation.LesionSegmentation` trains on. With ``train``,
    image and mask are flipped and rotated by multiples of 90° together (torchvision v2
    moves tv_tensors jointly).

    Args:
        train: Augment.
        normalize: ``{"mean", "std"}`` of the images in [0, 1] (default: ImageNet's).
    """

    def __init__(
        self,
        train: bool = True,
        normalize: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        self.train = train
        steps: list[Any] = []
        if train:
            steps += [
                v2.RandomHorizontalFlip(),
                v2.RandomVerticalFlip(),
                v2.RandomApply([v2.RandomRotation((90, 90))], p=0.5),
            ]
        steps.append(
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)
        )
        self.transform = v2.Compose(steps)
        self.normalize = _normalize(normalize)

    def __call__(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """Transforms one item."""
        out = self.transform({"image": item["image"], "mask": item["mask"]})
        image = self.normalize(out["image"]).as_subclass(torch.Tensor)
        label = out["mask"].as_subclass(torch.Tensor).to(torch.float32)
        return {"image": image, "label": label, "id": item.get("filename", "")}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(train={self.train})"


class SyntheticSegmentationData(pl.LightningDataModule):
    """Synthetic lesions with masks for :class:`~lightly_derm.segmentation.LesionSegmentation`.

    Training items from the ``train`` stream of
    :class:`~lightly_derm.data.SyntheticLesions` (``return_mask=True``, augmented),
    validation items from its ``val`` stream; batches are dictionaries ``image``,
    ``label``, ``id`` as :class:`~lightly_derm.data.ISICSegmentationDataModule` gives.
    Synthetic data, not patient data.

    Args:
        train_images: Training images before ``label_fraction``.
        val_images: Validation images.
        image_size: Image side.
        label_fraction: Share of the training images used (a seeded subset).
        batch_size: Batch size.
        num_workers: DataLoader workers.
        seed: Seeds the images and the subset.
        normalize: ``{"mean", "std"}`` of the images in [0, 1] (default: ImageNet's).

    Example:
        >>> from lightly_derm.data import SyntheticSegmentationData
        >>> data = SyntheticSegmentationData(8, 4, image_size=32, batch_size=4)
        >>> batch = next(iter(data.train_dataloader()))
        >>> tuple(batch["image"].shape), tuple(batch["label"].shape)
        ((4, 3, 32, 32), (4, 1, 32, 32))
    """

    def __init__(
        self,
        train_images: int = 128,
        val_images: int = 48,
        image_size: int = 64,
        label_fraction: float = 1.0,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        normalize: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        common: dict[str, Any] = {
            "image_size": image_size,
            "seed": seed,
            "return_mask": True,
        }
        train = SyntheticLesions(
            train_images,
            transform=SyntheticSegmentationTransform(train=True, normalize=normalize),
            split="train",
            **common,
        )
        keep = max(1, round(label_fraction * train_images))
        order = np.random.default_rng(seed).permutation(train_images)
        self.train_dataset: Dataset[Any] = Subset(train, sorted(order[:keep].tolist()))
        self.val_dataset: Dataset[Any] = SyntheticLesions(
            val_images,
            transform=SyntheticSegmentationTransform(train=False, normalize=normalize),
            split="val",
            **common,
        )
        self.batch_size = batch_size
        self.num_workers = num_workers

    def _loader(self, dataset: Dataset[Any], train: bool) -> DataLoader[Any]:
        size = len(dataset)  # type: ignore[arg-type]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            # a last batch of one image breaks BatchNorm in training mode
            drop_last=train and size > self.batch_size and size % self.batch_size == 1,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled, augmented training items."""
        return self._loader(self.train_dataset, True)

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation items, not augmented."""
        return self._loader(self.val_dataset, False)
