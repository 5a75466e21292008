"""lightly-derm: self-supervised learning for dermatology images, as lightly plugins.

Three published methods (GraVIS, FG-SSL, AP-BYOL) as building blocks that mix with
lightly's SSL modules, PyTorch Lightning and MONAI. The package root holds what a user
builds with — the methods, losses, miner, view transforms, backbone blocks,
segmentation encoders and datasets — and the three jobs of the command line
(:func:`pretrain`, :func:`evaluate`, :func:`segment`); the subpackages hold the rest.
The names are imported on first use (as :pep:`562` allows), so ``import lightly_derm``
and the command line's ``--help`` do not import torch.

Components are found through the plugin registry:

    >>> from lightly_derm import registry
    >>> sorted(registry.kinds())
    ['backbone', 'collate', 'encoder', 'loss', 'method', 'miner', 'transform']

Example:
    >>> import torch
    >>> from lightly_derm import GraVISLoss
    >>> loss = GraVISLoss()(torch.randn(8, 16), torch.arange(4).repeat(2))
    >>> loss.ndim
    0
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lightly_derm._version import __version__
from lightly_derm.plugins.registry import Registry

if TYPE_CHECKING:  # the lazy names below, for type checkers and IDEs
    from lightly_derm.data import (
        DermaMNISTJPEGDataset,
        ImageFolderDataset,
        ISICClassificationDataset,
        ISICSegmentationDataModule,
        MedMNISTDataset,
        SyntheticLesions,
    )
    from lightly_derm.data.make_dataset import make_dataset
    from lightly_derm.jobs.evaluate import evaluate
    from lightly_derm.jobs.pretrain import pretrain
    from lightly_derm.jobs.segment import segment
    from lightly_derm.loss import (
        AdditionalPositiveLoss,
        BarlowTwinsFrobeniusLoss,
        GraVISLoss,
    )
    from lightly_derm.methods import (
        APBYOL,
        BYOL,
        FGSSL,
        BarlowTwins,
        GraVIS,
        SimCLR,
        SSLMethod,
    )
    from lightly_derm.miners import TracInPositiveMiner
    from lightly_derm.models import HierarchicalBlocks, build_backbone
    from lightly_derm.segmentation import LesionSegmentation, load_ssl_encoder
    from lightly_derm.transforms import (
        Cutout,
        FGSSLTransform,
        GraVISTransform,
        HierarchicalJigsaw,
    )

#: The registry of all installed components (see :class:`~lightly_derm.plugins.Registry`).
registry = Registry()

#: Where each name of the package root lives (imported on first access).
_LAZY: dict[str, str] = {
    # methods (Lightning modules)
    "SSLMethod": "lightly_derm.methods",
    "GraVIS": "lightly_derm.methods",
    "FGSSL": "lightly_derm.methods",
    "APBYOL": "lightly_derm.methods",
    "BYOL": "lightly_derm.methods",
    "SimCLR": "lightly_derm.methods",
    "BarlowTwins": "lightly_derm.methods",
    # losses and the miner
    "GraVISLoss": "lightly_derm.loss",
    "AdditionalPositiveLoss": "lightly_derm.loss",
    "BarlowTwinsFrobeniusLoss": "lightly_derm.loss",
    "TracInPositiveMiner": "lightly_derm.miners",
    # view transforms
    "GraVISTransform": "lightly_derm.transforms",
    "FGSSLTransform": "lightly_derm.transforms",
    "HierarchicalJigsaw": "lightly_derm.transforms",
    "Cutout": "lightly_derm.transforms",
    # backbones and blocks
    "build_backbone": "lightly_derm.models",
    "HierarchicalBlocks": "lightly_derm.models",
    # segmentation
    "LesionSegmentation": "lightly_derm.segmentation",
    "load_ssl_encoder": "lightly_derm.segmentation",
    # datasets
    "make_dataset": "lightly_derm.data",
    "SyntheticLesions": "lightly_derm.data",
    "ImageFolderDataset": "lightly_derm.data",
    "ISICClassificationDataset": "lightly_derm.data",
    "ISICSegmentationDataModule": "lightly_derm.data",
    "MedMNISTDataset": "lightly_derm.data",
    "DermaMNISTJPEGDataset": "lightly_derm.data",
    # the jobs of the command line
    "pretrain": "lightly_derm.jobs",
    "evaluate": "lightly_derm.jobs",
    "segment": "lightly_derm.jobs",
}

# written out (not derived from _LAZY) so that linters see the lazy names as used
__all__ = [
    "__version__",
    "registry",
    "SSLMethod",
    "GraVIS",
    "FGSSL",
    "APBYOL",
    "BYOL",
    "SimCLR",
    "BarlowTwins",
    "GraVISLoss",
    "AdditionalPositiveLoss",
    "BarlowTwinsFrobeniusLoss",
    "TracInPositiveMiner",
    "GraVISTransform",
    "FGSSLTransform",
    "HierarchicalJigsaw",
    "Cutout",
    "build_backbone",
    "HierarchicalBlocks",
    "LesionSegmentation",
    "load_ssl_encoder",
    "make_dataset",
    "SyntheticLesions",
    "ImageFolderDataset",
    "ISICClassificationDataset",
    "ISICSegmentationDataModule",
    "MedMNISTDataset",
    "DermaMNISTJPEGDataset",
    "pretrain",
    "evaluate",
    "segment",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
