"""A DataLoader that resumes mid-epoch exactly: same order, same augmentations.

Builds on :class:`torch.utils.data.DataLoader`, :class:`torch.utils.data.DistributedSampler`
(its seed + epoch shuffling, and the class Lightning leaves in place under DDP) and
Lightning's resumable-loader protocol (a train DataLoader with ``state_dict`` /
``load_state_dict`` is saved in every checkpoint and restored before the data is read
again). What it adds:

- **Position.** Lightning 2.6 resumes a mid-epoch checkpoint by restoring its batch
  counters and restarting the DataLoader from the top: with an ordinary loader, the
  rest of the epoch replays the *first* batches of a new shuffle (Lightning warns
  "your dataloader is not resumable"). This loader stores the epoch and the number of
  batches served, and on resume skips them without reading them.
- **Augmentations.** Every sample is loaded under random generators (torch's CPU
  generator, NumPy's and :mod:`random`'s) seeded from ``(seed, epoch, index)`` and
  restored afterwards. So the random augmentation of a sample depends on nothing else:
  not on the batches before it (a resumed run augments exactly as the interrupted one),
  not on ``num_workers``, not on which process loads it, and the main process's
  generators are left untouched (what :class:`~lightly_derm.callbacks.ExactResume`
  needs).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sized
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["ResumableDataLoader", "ResumableSampler", "SeededDataset", "sample_seed"]

_MASK = (1 << 64) - 1


def _mix(value: int) -> int:
    """SplitMix64's finaliser: a well-spread 64-bit hash of a 64-bit integer."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The 63-bit seed of sample ``index`` in ``epoch`` of a run seeded with ``seed``."""
    return _mix(_mix(_mix(seed & _MASK) ^ (epoch & _MASK)) ^ (index & _MASK)) >> 1


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seeds torch's CPU, NumPy's and Python's global generators; restores them after."""
    torch_state = torch.default_generator.get_state()
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    random.seed(seed)
    try:
        yield
    finally:
        torch.default_generator.set_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


class SeededDataset(Dataset):
    """Wraps a map-style dataset: ``dataset[(index, seed)]`` loads ``index`` under ``seed``.

    The keys come from :class:`ResumableSampler`. Integer keys load without seeding.
    """

    def __init__(self, dataset: Dataset) -> None:
        if not isinstance(dataset, Sized) or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                "ResumableDataLoader needs a map-style dataset (with __len__ and "
                f"__getitem__), got {type(dataset).__name__}"
            )
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple):
            index, seed = key
            with _seeded(seed):
                return self.dataset[index]
        return self.dataset[key]

    def __getattr__(self, name: str) -> Any:
        # Attributes of the wrapped dataset (classes, filenames, ...) stay reachable.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class ResumableSampler(DistributedSampler):
    """Seeded per-epoch shuffling that can start an epoch after its first samples.

    A :class:`~torch.utils.data.DistributedSampler` (so that Lightning keeps it under
    DDP instead of replacing it), with the number of processes and the rank read from
    ``torch.distributed`` when the epoch starts, unless given. Yields ``(index, seed)``
    keys for :class:`SeededDataset`; the order of an epoch is
    ``randperm(N, seed + epoch)`` as ``DistributedSampler``'s, and each process takes
    every ``num_replicas``-th index of it (padded to equal lengths).

    Args:
        dataset: The (map-style) dataset.
        shuffle: Shuffle every epoch (a new order per epoch).
        seed: Seeds the order and the per-sample augmentation seeds.
        drop_last: Drop the tail instead of padding when the dataset does not split
            evenly over the processes (as ``DistributedSampler``).
        num_replicas: Number of processes; default: the world size at iteration time.
        rank: This process's rank; default: the rank at iteration time.
    """

    def __init__(
        self,
        dataset: Sized,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        # DistributedSampler.__init__ needs an initialised process group: set the same
        # attributes here and resolve the world at iteration time instead.
        self._sized = dataset
        self.dataset = cast("Dataset[Any]", dataset)  # DistributedSampler's attribute
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self._num_replicas = num_replicas
        self._rank = rank
        self.epoch = 0
        self._skip = 0  # samples of `epoch` already served (restored from a checkpoint)

    @property
    def num_replicas(self) -> int:  # type: ignore[override]
        """Number of processes sharing the data."""
        if self._num_replicas is not None:
            return self._num_replicas
        dist = torch.distributed
        return (
            dist.get_world_size()
            if dist.is_available() and dist.is_initialized()
            else 1
        )

    @num_replicas.setter
    def num_replicas(self, value: int) -> None:
        self._num_replicas = value

    @property
    def rank(self) -> int:  # type: ignore[override]
        """This process's rank."""
        if self._rank is not None:
            return self._rank
        dist = torch.distributed
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    @rank.setter
    def rank(self, value: int) -> None:
        self._rank = value

    @property
    def num_samples(self) -> int:  # type: ignore[override]
        """Samples per process and epoch."""
        size, replicas = len(self._sized), self.num_replicas
        if self.drop_last and size % replicas:
            return size // replicas
        return math.ceil(size / replicas)

    @property
    def total_size(self) -> int:  # type: ignore[override]
        """Samples per epoch over all processes (after padding or dropping)."""
        return self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch; a restored position only applies to the epoch it belongs to."""
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = epoch

    def skip(self, epoch: int, samples: int) -> None:
        """Starts the next iteration at epoch ``epoch`` after ``samples`` samples."""
        self.epoch = epoch
        self._skip = samples

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        skip, self._skip = self._skip, 0
        size = len(self._sized)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(size, generator=generator).tolist()
        else:
            order = list(range(size))
        total = self.total_size
        if total > size:  # pad with the first samples, as DistributedSampler
            order += (order * math.ceil((total - size) / max(size, 1)))[: total - size]
        order = order[:total][self.rank : total : self.num_replicas]
        for index in order[skip:]:
            yield index, sample_seed(self.seed, self.epoch, index)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` whose position and augmentations survive a checkpoint.

    Use it as the training DataLoader of a Lightning run that may be interrupted.
    Lightning saves :meth:`state_dict` (epoch and batches served) in every checkpoint
    and, on ``trainer.fit(ckpt_path=...)``, restores it before reading data, so the
    resumed epoch continues with the next batch of the same order; every sample is
    augmented under a seed of its own (see the module docstring). Together with
    :class:`~lightly_derm.callbacks.ExactResume`, a run resumed from a
    mid-epoch checkpoint ends with the same weights as an uninterrupted one (on the
    CPU, with ``Trainer(deterministic=True)``).

    Random transforms must draw from the global generators (torch, NumPy,
    :mod:`random`), as torchvision's, lightly's and lightly-derm's do; transforms with
    generators of their own (MONAI's ``Randomizable``, a transform given a
    ``torch.Generator``) are not reseeded.

    Args:
        dataset: A map-style dataset (wrapped in :class:`SeededDataset`).
        batch_size: Samples per batch.
        shuffle: Shuffle every epoch.
        seed: Seeds the order of every epoch and every augmentation.
        drop_last: Drop the last incomplete batch.
        **kwargs: Other ``DataLoader`` arguments (``num_workers``, ``collate_fn``,
            ``pin_memory``, ...); not ``sampler`` or ``batch_sampler``.

    Example:
        >>> import torch
        >>> from lightly_derm.data import ResumableDataLoader
        >>> data = [(torch.rand(3, 8, 8), i) for i in range(10)]
        >>> loader = ResumableDataLoader(data, batch_size=4, seed=0)
        >>> it = iter(loader); _ = next(it)
        >>> state = loader.state_dict()          # what a checkpoint holds
        >>> state["epoch"], state["batches"]
        (0, 1)
        >>> resumed = ResumableDataLoader(data, batch_size=4, seed=0)
        >>> resumed.load_state_dict(state)
        >>> len(list(resumed))                   # the two batches that were left
        2
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        **kwargs: Any,
    ) -> None:
        for name in ("sampler", "batch_sampler"):
            if kwargs.get(name) is not None and not isinstance(
                kwargs.get(name), ResumableSampler
            ):
                raise ValueError(
                    f"ResumableDataLoader makes its own sampler; {name} is not supported"
                )
        kwargs.pop("batch_sampler", None)
        sampler = kwargs.pop("sampler", None)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        wrapped = (
            dataset if isinstance(dataset, SeededDataset) else SeededDataset(dataset)
        )
        if sampler is None:
            sampler = ResumableSampler(wrapped, shuffle=shuffle, seed=seed)
        kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
        super().__init__(
            wrapped,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            **kwargs,
        )
        self.seed = seed
        self.shuffle = shuffle
        self._served = 0  # batches of the current epoch handed out (skipped ones too)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        skipped = sampler._skip // self.batch_size if self.batch_size else 0
        iterator = super().__iter__()
        self._served = skipped
        return self._count(iterator)

    def _count(self, iterator: Iterator[Any]) -> Iterator[Any]:
        for batch in iterator:
            self._served += 1
            yield batch
        # A finished pass moves to the next epoch (a new order), also outside
        # Lightning, which calls set_epoch itself before every epoch.
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        sampler.set_epoch(sampler.epoch + 1)
        self._served = 0

    def state_dict(self) -> dict[str, Any]:
        """The position: epoch and batches served in it, plus what must not change."""
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        return {
            "epoch": sampler.epoch,
            "batches": self._served,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "batch_size": self.batch_size,
            "dataset_size": len(self.dataset),  # type: ignore[arg-type]
            "num_replicas": sampler.num_replicas,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continues at the saved position with the next ``iter()``.

        Raises:
            ValueError: The saved loader had another seed, shuffling, batch size,
                dataset size or number of processes (it would not continue the same
                epoch); the message names what differs.
        """
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        mine = self.state_dict()
        different = [
            f"{key} {state_dict.get(key)!r} (now {mine[key]!r})"
            for key in ("seed", "shuffle", "batch_size", "dataset_size", "num_replicas")
            if state_dict.get(key) != mine[key]
        ]
        if different:
            raise ValueError(
                "the checkpoint's data loader cannot be continued by this one: it had "
                + ", ".join(different)
                + ". Resume with the data and settings of the interrupted run."
            )
        batch_size = int(self.batch_size or 1)  # an int: __init__ passes it on
        sampler.skip(int(state_dict["epoch"]), int(state_dict["batches"]) * batch_size)
        self._served = int(state_dict["batches"])
