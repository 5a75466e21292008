"""ISIC lesion segmentation data for Lightning: datasets, loaders, low-label subsets.

Builds on :class:`monai.data.Dataset` / :class:`monai.data.CacheDataset` (the
deterministic part of the pipeline is cached), :class:`monai.data.DataLoader` (which
seeds MONAI's random transforms per worker, so augmentations neither repeat across
workers nor change between runs with the same seed) and
:class:`pytorch_lightning.LightningDataModule`. The pairs come from
:func:`~lightly_derm.data.find_isic_pairs`, the transforms from
:func:`~lightly_derm.transforms.isic_segmentation_transforms`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE
from monai.data import CacheDataset, DataLoader, Dataset

from lightly_derm.data.isic_pairs import (
    IsicPair,
    _check_pairs,
    find_isic_pairs,
    split_pairs,
    subsample_pairs,
)
from lightly_derm.transforms.isic import isic_segmentation_transforms


def isic_segmentation_dataset(
    pairs: Sequence[IsicPair],
    transform: Callable[[Any], Any] | None = None,
    image_size: int | Sequence[int] = 256,
    train: bool = True,
    cache_rate: float = 0.0,
    cache_workers: int | None = 1,
) -> Dataset:
    """A MONAI dataset of ISIC pairs.

    Args:
        pairs: ``{"image": path, "label": path, ...}`` dictionaries.
        transform: The pipeline; by default
            ``isic_segmentation_transforms(image_size, train)``.
        image_size: Output size of the default pipeline.
        train: Whether the default pipeline augments.
        cache_rate: Share of the pairs whose loaded, checked and resized tensors are
            kept in memory (``CacheDataset``); 0 caches nothing. Caching saves decoding
            the large ISIC JPEGs every epoch.
        cache_workers: Threads that fill the cache.

    Example:
        >>> from lightly_derm.data import find_isic_pairs, isic_segmentation_dataset
        >>> # dataset = isic_segmentation_dataset(find_isic_pairs(root), image_size=128)
        >>> # dataset[0]["image"].shape -> torch.Size([3, 128, 128])
    """
    _check_pairs(pairs, "pairs")
    if not 0 <= cache_rate <= 1:
        raise ValueError(f"cache_rate must be in [0, 1], got {cache_rate!r}")
    if transform is None:
        transform = isic_segmentation_transforms(image_size, train=train)
    data = [dict(p) for p in pairs]
    if cache_rate > 0:
        return CacheDataset(
            data,
            transform,
            cache_rate=cache_rate,
            num_workers=cache_workers,
            progress=False,
        )
    return Dataset(data, transform)


class ISICSegmentationDataModule(pl.LightningDataModule):
    """ISIC image + mask pairs for :class:`~lightly_derm.segmentation.LesionSegmentation`.

    Pairs come from ``root`` (any layout :func:`~lightly_derm.data.find_isic_pairs`
    understands) or are given. Without ``val_pairs``, a seeded ``val_fraction`` of them
    is held out for validation. The low-label regimes keep a seeded ``label_fraction`` of
    the *training* pairs (:func:`~lightly_derm.data.subsample_pairs`: nested subsets);
    the validation set stays the same for every fraction, so scores compare.

    Batches are dictionaries: ``image`` (B, 3, H, W), ``label`` (B, 1, H, W) in {0, 1},
    ``id`` (list of ISIC ids).

    Args:
        root: An ISIC folder.
        pairs: Pairs instead of ``root``.
        val_pairs: Validation pairs (no split of ``root``/``pairs`` then).
        test_pairs: Pairs for ``Trainer.test``.
        val_fraction: Share held out for validation when ``val_pairs`` is not given.
        label_fraction: Share of the training pairs whose masks are used, in (0, 1].
        seed: Seed of the split and of the low-label choice.
        limit: Use only the first ``limit`` pairs (by id) before splitting: tiny runs.
        image_size: Size of the images and masks.
        batch_size: Batch size of all loaders.
        num_workers: DataLoader workers.
        cache_rate: Share of each dataset to cache (see
            :func:`isic_segmentation_dataset`).
        augment: Augment the training pairs.
        normalize: Image normalisation (ImageNet, as the SSL methods).
        mask_threshold: ``None`` for strictly binary masks, or a binarisation threshold.

    Example:
        >>> import pytorch_lightning as pl
        >>> from lightly_derm.data import ISICSegmentationDataModule
        >>> data = ISICSegmentationDataModule("isic2017-seg-subset", label_fraction=0.1,
        ...                                   image_size=256, batch_size=16)  # doctest: +SKIP
        >>> # pl.Trainer(max_epochs=50).fit(LesionSegmentation(...), datamodule=data)
    """

    def __init__(
        self,
        root: str | Path | None = None,
        pairs: Sequence[IsicPair] | None = None,
        val_pairs: Sequence[IsicPair] | None = None,
        test_pairs: Sequence[IsicPair] | None = None,
        val_fraction: float = 0.2,
        label_fraction: float = 1.0,
        seed: int = 0,
        limit: int | None = None,
        image_size: int | Sequence[int] = 256,
        batch_size: int = 16,
        num_workers: int = 0,
        cache_rate: float = 0.0,
        augment: bool = True,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
        mask_threshold: float | None = None,
    ) -> None:
        super().__init__()
        if (root is None) == (pairs is None):
            raise ValueError("give exactly one of root and pairs")
        if not 0 < label_fraction <= 1:
            raise ValueError(
                f"label_fraction must be in (0, 1], got {label_fraction!r}"
            )
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive int or None, got {limit!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.save_hyperparameters(ignore=["pairs", "val_pairs", "test_pairs"])
        all_pairs = list(find_isic_pairs(root) if root is not None else pairs or [])
        _check_pairs(all_pairs, "pairs")
        if limit is not None:
            all_pairs = sorted(all_pairs, key=lambda p: p.get("id", p["image"]))[:limit]
        if val_pairs is None:
            train, val = split_pairs(all_pairs, val_fraction, seed)
        else:
            _check_pairs(val_pairs, "val_pairs")
            train, val = all_pairs, list(val_pairs)
        if test_pairs is not None:
            _check_pairs(test_pairs, "test_pairs")
        #: All training pairs before the low-label choice.
        self.all_train_pairs: list[IsicPair] = train
        #: The training pairs used (``label_fraction`` of ``all_train_pairs``).
        self.train_pairs: list[IsicPair] = subsample_pairs(train, label_fraction, seed)
        #: The validation pairs.
        self.val_pairs: list[IsicPair] = val
        #: The test pairs, if any.
        self.test_pairs: list[IsicPair] | None = (
            list(test_pairs) if test_pairs is not None else None
        )
        self._datasets: dict[str, Dataset] = {}

    def _dataset(self, stage: str) -> Dataset:
        if stage not in self._datasets:
            pairs = {
                "train": self.train_pairs,
                "val": self.val_pairs,
                "test": self.test_pairs,
            }[stage]
            if not pairs:
                raise ValueError(f"ISICSegmentationDataModule has no {stage} pairs")
            hp = self.hparams
            transform = isic_segmentation_transforms(
                hp["image_size"],
                train=stage == "train" and hp["augment"],
                normalize=hp["normalize"],
                mask_threshold=hp["mask_threshold"],
            )
            self._datasets[stage] = isic_segmentation_dataset(
                pairs, transform, cache_rate=hp["cache_rate"]
            )
        return self._datasets[stage]

    def _loader(self, stage: str) -> DataLoader:
        workers = self.hparams["num_workers"]
        dataset = self._dataset(stage)
        size, batch_size = len(dataset), self.hparams["batch_size"]
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=stage == "train",
            # A last training batch of one image breaks BatchNorm on small images.
            drop_last=stage == "train" and size > batch_size and size % batch_size == 1,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training pairs (the ``label_fraction`` subset)."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """Validation pairs, not augmented."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test pairs, not augmented (needs ``test_pairs``)."""
        return self._loader("test")
