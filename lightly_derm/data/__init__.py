"""Data: collates for multi-view batches, datasets, synthetic lesions."""

from lightly_derm.data.array_image_dataset import ArrayImageDataset
from lightly_derm.data.canvas_collate import CanvasBatch, CanvasCollate
from lightly_derm.data.decoded_image_cache import DecodedImageCache
from lightly_derm.data.dermamnist_jpeg import DermaMNISTJPEGDataset
from lightly_derm.data.grouped_view_collate import (
    GroupedBatch,
    GroupedViewCollate,
    to_grouped_batch,
)
from lightly_derm.data.image_file_dataset import ImageFileDataset
from lightly_derm.data.image_folder import (
    EXCLUDE_PATTERNS,
    ImageFileScan,
    ImageFolderDataset,
    find_image_files,
    scan_image_files,
)
from lightly_derm.data.image_io import (
    IMAGE_EXTENSIONS,
    UnreadableImageError,
    check_image,
    load_image,
)
from lightly_derm.data.isic_classification import ISICClassificationDataset
from lightly_derm.data.isic_pairs import (
    find_isic_pairs,
    split_pairs,
    subsample_pairs,
)
from lightly_derm.data.isic_segmentation_datamodule import (
    ISICSegmentationDataModule,
    isic_segmentation_dataset,
)
from lightly_derm.data.label_csv import LabelTable, read_labels_csv
from lightly_derm.data.make_dataset import DATA_SOURCES, dataset_splits, make_dataset
from lightly_derm.data.medmnist import DERMAMNIST_CLASSES, MedMNISTDataset
from lightly_derm.data.resumable_loader import (
    ResumableDataLoader,
    ResumableSampler,
    SeededDataset,
)
from lightly_derm.data.ssl_datamodule import SSLDataModule
from lightly_derm.data.synthetic_lesions import (
    SYNTHETIC_CLASSES,
    LesionSample,
    SyntheticLesions,
)
from lightly_derm.data.synthetic_segmentation_datamodule import (
    SyntheticSegmentationData,
    SyntheticSegmentationTransform,
)
from lightly_derm.transforms.isic import (  # re-exported: their home is transforms
    BinaryLesionMaskd,
    isic_segmentation_transforms,
)

__all__ = [
    "ArrayImageDataset",
    "DATA_SOURCES",
    "DERMAMNIST_CLASSES",
    "EXCLUDE_PATTERNS",
    "IMAGE_EXTENSIONS",
    "SYNTHETIC_CLASSES",
    "CanvasBatch",
    "CanvasCollate",
    "DecodedImageCache",
    "DermaMNISTJPEGDataset",
    "GroupedBatch",
    "GroupedViewCollate",
    "ISICClassificationDataset",
    "ImageFileDataset",
    "ImageFolderDataset",
    "LabelTable",
    "LesionSample",
    "MedMNISTDataset",
    "ResumableDataLoader",
    "ResumableSampler",
    "SeededDataset",
    "SSLDataModule",
    "SyntheticLesions",
    "SyntheticSegmentationData",
    "SyntheticSegmentationTransform",
    "UnreadableImageError",
    "check_image",
    "dataset_splits",
    "find_image_files",
    "scan_image_files",
    "ImageFileScan",
    "load_image",
    "make_dataset",
    "read_labels_csv",
    "to_grouped_batch",
    "BinaryLesionMaskd",
    "ISICSegmentationDataModule",
    "find_isic_pairs",
    "isic_segmentation_dataset",
    "isic_segmentation_transforms",
    "split_pairs",
    "subsample_pairs",
]
