from __future__ import annotations

import itertools
import pickle
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from lightly_derm.data import ResumableDataLoader, ResumableSampler, SeededDataset
from lightly_derm.data.resumable_loader import sample_seed


class RandomAugment(torch.utils.data.Dataset):
    """Each item draws from torch's, NumPy's and Python's global generators."""

    def __len__(self) -> int:
        return 11

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(
            [index, torch.rand(()).item(), np.random.rand(), random.random()],
            dtype=torch.float64,
        )


def batches(loader, count: int | None = None) -> list[torch.Tensor]:
    """The first ``count`` batches (all by default), without fetching one more."""
    return list(itertools.islice(loader, count))


def test_resumes_with_the_next_batch_and_the_same_augmentations() -> None:
    full = ResumableDataLoader(RandomAugment(), batch_size=3, seed=7)
    full.sampler.set_epoch(2)
    expected = batches(full)
    assert len(expected) == 4
    for served in range(5):
        loader = ResumableDataLoader(RandomAugment(), batch_size=3, seed=7)
        loader.sampler.set_epoch(2)
        first = batches(loader, count=served)
        state = loader.state_dict()
        assert (state["epoch"], state["batches"]) == (2, min(served, 4))
        resumed = ResumableDataLoader(RandomAugment(), batch_size=3, seed=7)
        resumed.load_state_dict(state)
        resumed.sampler.set_epoch(
            2
        )  # what Lightning does: the same epoch keeps its place
        rest = batches(resumed)
        for got, want in zip(first + rest, expected, strict=True):
            assert torch.equal(got, want)


def test_augmentations_depend_on_sample_and_epoch_only() -> None:
    """Same values with 0 or 2 workers, whatever the batch size; the main process's
    generators are left untouched; another epoch or seed gives other values."""

    def by_index(loader) -> dict[int, torch.Tensor]:
        return {int(row[0]): row for batch in loader for row in batch}

    torch.manual_seed(123)
    before = torch.get_rng_state()
    reference = by_index(ResumableDataLoader(RandomAugment(), batch_size=4, seed=1))
    assert torch.equal(torch.get_rng_state(), before)
    other = by_index(
        ResumableDataLoader(RandomAugment(), batch_size=5, seed=1, num_workers=2)
    )
    assert all(torch.equal(reference[i], other[i]) for i in range(11))
    loader = ResumableDataLoader(RandomAugment(), batch_size=4, seed=1)
    loader.sampler.set_epoch(1)
    next_epoch = by_index(loader)
    assert not any(torch.equal(reference[i], next_epoch[i]) for i in range(11))
    reseeded = by_index(ResumableDataLoader(RandomAugment(), batch_size=4, seed=2))
    assert not any(torch.equal(reference[i], reseeded[i]) for i in range(11))


def test_order_equals_distributed_sampler() -> None:
    """Shuffling and sharding are DistributedSampler's (same seed + epoch)."""
    data = list(range(11))
    for replicas in (1, 2, 3):
        shards = []
        for rank in range(replicas):
            ours = ResumableSampler(data, seed=5, num_replicas=replicas, rank=rank)
            theirs = DistributedSampler(data, num_replicas=replicas, rank=rank, seed=5)
            for sampler in (ours, theirs):
                sampler.set_epoch(3)
            keys = list(ours)
            assert [k for k, _ in keys] == list(theirs) and len(ours) == len(theirs)
            assert all(s == sample_seed(5, 3, k) for k, s in keys)
            shards += [k for k, _ in keys]
        assert set(shards) == set(data)
    unshuffled = ResumableSampler(data, shuffle=False)
    assert [k for k, _ in unshuffled] == data


def test_a_full_pass_moves_to_the_next_epoch() -> None:
    loader = ResumableDataLoader(list(range(6)), batch_size=2, seed=0)
    first, second = batches(loader), batches(loader)
    assert loader.sampler.epoch == 2 and loader.state_dict()["batches"] == 0
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_another_epoch_drops_the_restored_position() -> None:
    loader = ResumableDataLoader(list(range(6)), batch_size=2, seed=0)
    loader.load_state_dict({**loader.state_dict(), "epoch": 0, "batches": 2})
    loader.sampler.set_epoch(1)  # Lightning starts epoch 1: all of it is served
    assert len(batches(loader)) == 3


def test_settings_that_would_not_continue_the_epoch_are_refused() -> None:
    state = ResumableDataLoader(list(range(6)), batch_size=2, seed=0).state_dict()
    for kwargs, word in (
        ({"batch_size": 3}, "batch_size 2 (now 3)"),
        ({"seed": 1}, "seed 0 (now 1)"),
        ({"shuffle": False}, "shuffle True (now False)"),
    ):
        loader = ResumableDataLoader(list(range(6)), **{"batch_size": 2, **kwargs})
        with pytest.raises(
            ValueError, match=word.replace("(", r"\(").replace(")", r"\)")
        ):
            loader.load_state_dict(state)
    with pytest.raises(ValueError, match=r"dataset_size 6 \(now 7\)"):
        ResumableDataLoader(list(range(7)), batch_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="makes its own sampler"):
        ResumableDataLoader(list(range(6)), sampler=range(6))
    with pytest.raises(TypeError, match="map-style dataset"):
        ResumableDataLoader(iter(range(6)))
    with pytest.raises(TypeError, match="seed must be an int"):
        ResumableDataLoader(list(range(6)), seed=1.5)


class Named(RandomAugment):
    classes = ["nevus", "melanoma"]


def test_wrapped_dataset_keeps_attributes_and_pickles() -> None:
    wrapped = SeededDataset(Named())
    assert wrapped.classes == ["nevus", "melanoma"] and len(wrapped) == 11
    restored = pickle.loads(pickle.dumps(wrapped))
    assert torch.equal(restored[(3, 42)], wrapped[(3, 42)])
    assert restored[3][0] == 3  # plain indices load unseeded
