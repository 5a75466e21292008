"""Data: collates for multi-view batches, datasets, synthetic lesions."""

from lightly_derm.data.grouped_view_collate import (
    GroupedBatch,
    GroupedViewCollate,
    to_grouped_batch,
)
from lightly_derm.data.isic_pairs import (
    find_isic_pairs,
    split_pairs,
    subsample_pairs,
)
from lightly_derm.data.isic_segmentation_datamodule import (
    ISICSegmentationDataModule,
    isic_segmentation_dataset,
)
from lightly_derm.data.isic_transforms import (
    BinaryLesionMaskd,
    isic_segmentation_transforms,
)

__all__ = [
    "BinaryLesionMaskd",
    "GroupedBatch",
    "GroupedViewCollate",
    "ISICSegmentationDataModule",
    "find_isic_pairs",
    "isic_segmentation_dataset",
    "isic_segmentation_transforms",
    "split_pairs",
    "subsample_pairs",
    "to_grouped_batch",
]
