from __future__ import annotations

import pytest
import torch

from lightly_derm.miners import merge_positive_groups


def _union_find_reference(group_ids: torch.Tensor, indices: torch.Tensor) -> list[int]:
    parent = list(range(indices.shape[0]))

    def find(v: int) -> int:
        while parent[v] != v:
            v = parent[v]
        return v

    for g, row in enumerate(indices.tolist()):
        for h in row:
            a, b = find(g), find(h)
            parent[max(a, b)] = min(a, b)
    return [find(int(g)) for g in group_ids]


@pytest.mark.parametrize(
    ("groups", "views", "k", "seed"),
    [(1, 2, 1, 0), (5, 2, 1, 1), (16, 4, 1, 2), (33, 2, 2, 3), (64, 1, 3, 4)],
)
def test_merge_matches_union_find(groups: int, views: int, k: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randint(0, groups, (groups, k), generator=generator)
    group_ids = torch.arange(groups).repeat_interleave(views)
    group_ids = group_ids[torch.randperm(group_ids.numel(), generator=generator)]
    merged = merge_positive_groups(group_ids, indices)
    assert merged.dtype == torch.int64 and merged.shape == group_ids.shape
    assert merged.tolist() == _union_find_reference(group_ids, indices)


def test_merge_long_chain_and_unmerged_groups_keep_ids() -> None:
    # A chain 9 → 8 → … → 1 (mined in one direction only) merges into group 1;
    # group 0 mines itself and stays alone.
    indices = torch.tensor([[0]] + [[max(1, g - 1)] for g in range(1, 10)])
    indices[1, 0] = 1
    group_ids = torch.arange(10).repeat(2)
    merged = merge_positive_groups(group_ids, indices)
    assert merged.tolist() == ([0] + [1] * 9) * 2
    # Groups not touched by any mined pair keep their ids.
    pairs = torch.tensor([[1], [0], [2], [3]])
    assert merge_positive_groups(torch.arange(4), pairs).tolist() == [0, 0, 2, 3]


def test_merge_bad_input() -> None:
    with pytest.raises(TypeError, match="group_ids must be an integer tensor"):
        merge_positive_groups(torch.zeros(4), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"indices must be \(M, k\)"):
        merge_positive_groups(
            torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)
        )
    with pytest.raises(ValueError, match=r"group_ids must lie in \[0, 2\)"):
        merge_positive_groups(torch.tensor([0, 2]), torch.tensor([[1], [0]]))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 2\)"):
        merge_positive_groups(torch.tensor([0, 1]), torch.tensor([[1], [-1]]))
    with pytest.raises(TypeError, match="indices must be a tensor"):
        merge_positive_groups(torch.tensor([0, 1]), [[1], [0]])  # type: ignore[arg-type]
