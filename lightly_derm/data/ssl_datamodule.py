"""The pretraining data of a method: images → the method's views → resumable batches.

Builds on :class:`pytorch_lightning.LightningDataModule` (its ``setup`` /
``train_dataloader`` and ``on_after_batch_transfer`` hooks),
:class:`~lightly_derm.data.ResumableDataLoader` (mid-epoch resume with the same order
and augmentations), :class:`~lightly_derm.data.DecodedImageCache` (decode once) and
the view conventions of :class:`~lightly_derm.methods.SSLMethod`: the method describes
its views (:meth:`~lightly_derm.methods.SSLMethod.default_transform`,
:meth:`~lightly_derm.methods.SSLMethod.default_collate`,
:meth:`~lightly_derm.methods.SSLMethod.make_views`); this DataModule applies them, so
the method stays a model and the data stays the data.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
from torch.utils.data import Dataset, Subset

from lightly_derm.data.canvas_collate import CanvasBatch
from lightly_derm.data.resumable_loader import ResumableDataLoader
from lightly_derm.errors import DataError
from lightly_derm.utils.validation import check_int

if TYPE_CHECKING:
    from lightly_derm.methods.base import SSLMethod

__all__ = ["SSLDataModule", "TransformedDataset", "first_images"]


class TransformedDataset(Dataset[Any]):
    """``dataset`` with ``transform`` applied to the image of every ``(image, target, filename)`` item.

    The wrapped dataset is not changed (no copy with another ``transform`` attribute);
    its attributes (``classes``, ``targets``, ``filenames`` ...) stay reachable.

    Example:
        >>> data = [("a", 0, "a.jpg"), ("bc", 1, "bc.jpg")]
        >>> TransformedDataset(data, len)[1]
        (2, 1, 'bc.jpg')
    """

    def __init__(self, dataset: Any, transform: Callable[[Any], Any]) -> None:
        if not isinstance(dataset, Sized) or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                "dataset must be a map-style dataset (with __len__ and __getitem__), "
                f"got {type(dataset).__name__}"
            )
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        image, *rest = self.dataset[index]
        return (self.transform(image), *rest)

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "transform"):  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def first_images(dataset: Any, limit: int | None) -> Any:
    """The first ``limit`` items of ``dataset`` in its order (all for ``None``).

    The order is the dataset's own: sorted by path for image folders, the array's for
    MedMNIST and IDX files, the generator's for the synthetic lesions; so the same
    ``limit`` always selects the same images.

    Example:
        >>> len(first_images(list(range(10)), 3)), first_images([1, 2], None)
        (3, [1, 2])
    """
    if limit is None:
        return dataset
    check_int("limit", limit, minimum=1)
    if len(dataset) <= limit:
        return dataset
    return Subset(dataset, range(limit))


class SSLDataModule(pl.LightningDataModule):
    """The training data of a pretraining method, made as the method describes.

    ``setup`` asks the method once for its view transform
    (:meth:`~lightly_derm.methods.SSLMethod.default_transform`) and collate function
    (:meth:`~lightly_derm.methods.SSLMethod.default_collate`), applies the transform to
    the images (:class:`TransformedDataset`, or a
    :class:`~lightly_derm.data.DecodedImageCache` with ``cache_images``) and serves
    them from one :class:`~lightly_derm.data.ResumableDataLoader` (shuffled per epoch,
    last incomplete batch dropped, every sample augmented under its own
    ``(seed, epoch, index)`` seed; Lightning saves and restores its position in every
    checkpoint, so a run resumed mid-epoch continues with the next batch).

    With a method of ``augment="gpu"`` the transform only puts each image on a uint8
    canvas and ``on_after_batch_transfer`` makes the views of the whole batch on the
    device (:meth:`~lightly_derm.methods.SSLMethod.make_views`: the method's GPU view
    pipeline and generator, evaluation views outside training), handing
    ``training_step`` the same :class:`~lightly_derm.data.GroupedBatch` as the CPU
    path. (The method still makes the views itself when fed by a plain DataLoader;
    with this DataModule, Lightning calls the DataModule's hook instead and notes
    that both define it.)

    Args:
        data: The images: a map-style dataset of ``(image, target, filename)`` items
            without transform, e.g. :func:`~lightly_derm.data.make_dataset` with
            ``transform=None``.
        method: The method whose views are made.
        input_size: The side of the views in pixels.
        batch_size: Images per batch and device; lowered to the number of images when
            there are fewer (see :attr:`batch_size`).
        seed: Seeds the order of every epoch and every augmentation.
        num_workers: DataLoader worker processes (kept between epochs).
        cache_images: Decode and resize every image once and keep the canvases in
            memory (:class:`~lightly_derm.data.DecodedImageCache`); needs a method
            with ``augment="gpu"``.
        limit: Use only the first ``limit`` images (:func:`first_images`).
        pin_memory: Page-locked batches for faster host-to-GPU copies.

    Raises:
        DataError: Fewer than 2 images (from ``setup``).
        ValueError: ``cache_images`` with a method that makes its views on the CPU, or
            an argument out of range (named).

    Example:
        >>> from lightly_derm.data import SSLDataModule, SyntheticLesions
        >>> from lightly_derm.methods import SimCLR
        >>> method = SimCLR(backbone="resnet18")
        >>> data = SSLDataModule(SyntheticLesions(8, 48), method, input_size=32, batch_size=4)
        >>> data.setup("fit")
        >>> batch = next(iter(data.train_dataloader()))   # 2 views of 4 images
        >>> tuple(batch.views.shape), len(data.train_dataloader())
        ((8, 3, 32, 32), 2)

        Train with ``pl.Trainer(...).fit(method, datamodule=data)``.
    """

    def __init__(
        self,
        data: Any,
        method: SSLMethod,
        input_size: int = 224,
        batch_size: int = 32,
        *,
        seed: int = 0,
        num_workers: int = 0,
        cache_images: bool = False,
        limit: int | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        for name in ("default_transform", "default_collate", "make_views"):
            if not callable(getattr(method, name, None)):
                raise TypeError(
                    "method must be an SSLMethod (with default_transform, "
                    f"default_collate and make_views), got {type(method).__name__}"
                )
        if not isinstance(data, Sized) or not hasattr(data, "__getitem__"):
            raise TypeError(
                "data must be a map-style dataset (with __len__ and __getitem__), got "
                f"{type(data).__name__}"
            )
        if cache_images and getattr(method, "augment", "cpu") != "gpu":
            raise ValueError(
                "cache_images keeps decoded canvases for a method with augment='gpu'; "
                f"{type(method).__name__} makes its views on the CPU, where every epoch "
                "needs new random crops of the full image"
            )
        self.method = method
        self.source: Any = first_images(data, limit)
        self.input_size = check_int("input_size", input_size, minimum=1)
        self.requested_batch_size = check_int("batch_size", batch_size, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.num_workers = check_int("num_workers", num_workers, minimum=0)
        self.cache_images = bool(cache_images)
        self.limit = limit
        self.pin_memory = bool(pin_memory)
        self.transform: Callable[[Any], Any] | None = None
        self.collate_fn: Callable[[list[Any]], Any] | None = None
        self.dataset: Dataset[Any] | None = None
        self._loader: ResumableDataLoader | None = None

    @property
    def batch_size(self) -> int:
        """Images per batch: the requested size, or the number of images if fewer."""
        return min(self.requested_batch_size, len(self.source))

    def setup(self, stage: str | None = None) -> None:
        """Asks the method for its transform and collate and builds the loader (once)."""
        if self._loader is not None:
            return
        size = len(self.source)
        if size < 2:
            raise DataError(f"pretraining needs at least 2 images; the data has {size}")
        transform = self.method.default_transform(input_size=self.input_size)
        collate_fn = self.method.default_collate()
        if self.cache_images:
            from lightly_derm.data.decoded_image_cache import DecodedImageCache

            dataset: Dataset[Any] = DecodedImageCache(self.source, transform)  # type: ignore[arg-type]
        else:
            dataset = TransformedDataset(self.source, transform)
        self.transform, self.collate_fn, self.dataset = transform, collate_fn, dataset
        self._loader = ResumableDataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            seed=self.seed,
            drop_last=True,
            num_workers=self.num_workers,
            collate_fn=collate_fn,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> ResumableDataLoader:
        """The resumable training loader (the same object on every call)."""
        self.setup("fit")
        assert self._loader is not None
        return self._loader

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Makes the views of a :class:`~lightly_derm.data.CanvasBatch` on its device.

        Training views while the trainer trains (or without a trainer), the method's
        evaluation views otherwise; any other batch is returned unchanged.
        """
        if not isinstance(batch, CanvasBatch):
            return batch
        trainer = self.trainer
        training = trainer is None or bool(trainer.training)
        return self.method.make_views(batch, training=training)
