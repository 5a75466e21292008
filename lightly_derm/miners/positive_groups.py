"""Turns mined positives into group ids for grouping losses.

Builds on the group-id data contract of :class:`~lightly_derm.data.GroupedViewCollate`
(every view carries the id of its image) and of grouping losses such as
:class:`~lightly_derm.loss.GraVISLoss`, which treat all views with one id as positives.
What it adds: merging the groups that a miner (e.g.
:class:`~lightly_derm.miners.TracInPositiveMiner`) pairs up, so a loss that knows
nothing about mining trains with the additional positives.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_int(name: str, tensor: Tensor, ndim: int) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(tensor).__name__}")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {tensor.dtype}")
    if tensor.ndim != ndim:
        shape = "(N,)" if ndim == 1 else "(M, k)"
        raise ValueError(f"{name} must be {shape}, got shape {tuple(tensor.shape)}")


def merge_positive_groups(group_ids: Tensor, indices: Tensor) -> Tensor:
    """Merges the group of every anchor with the groups mined for it.

    Positive-ness is symmetric and transitive for a grouping loss: all views that share
    a group id are positives of each other. So a mined pair (g, h) merges the two whole
    groups, and chains merge further (g↔h and h↔k put g, h and k in one group). The
    result labels each connected component of the graph "same group or mined pair" by
    its smallest group id, so unmerged groups keep their ids.

    Row g of ``indices`` holds the groups mined for group g: the miner ran on one
    sample per group (e.g. the images of a :class:`~lightly_derm.data.GroupedBatch`,
    whose view group ids are the image indices 0 … B − 1).

    Runs on the tensors' device with label propagation and pointer jumping (one host
    sync per round; rounds grow with the log of the longest mined chain, typically 2-3).

    Args:
        group_ids: (N,) int group id of every view, each in [0, M).
        indices: (M, k) int, the groups mined for each of the M groups, each in [0, M).

    Returns:
        (N,) int64 merged group ids.

    Raises:
        TypeError: A tensor is not an integer tensor.
        ValueError: Shapes are wrong or ids are out of range.

    Example:
        >>> import torch
        >>> from lightly_derm.miners import merge_positive_groups
        >>> group_ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])  # 4 images × 2 views
        >>> mined = torch.tensor([[2], [0], [0], [1]])          # image 3 ↔ image 1 ↔ 0 ↔ 2
        >>> merge_positive_groups(group_ids, mined).tolist()
        [0, 0, 0, 0, 0, 0, 0, 0]
        >>> merge_positive_groups(group_ids, torch.tensor([[1], [0], [3], [2]])).tolist()
        [0, 0, 0, 0, 2, 2, 2, 2]
    """
    _check_int("group_ids", group_ids, 1)
    _check_int("indices", indices, 2)
    num_groups = indices.shape[0]
    if group_ids.device != indices.device:
        raise ValueError(
            f"group_ids is on {group_ids.device} but indices on {indices.device}"
        )
    if num_groups == 0:
        if group_ids.numel():
            raise ValueError("indices has no rows but group_ids is not empty")
        return group_ids.long()
    # One sync to validate ids: out-of-range ids would silently index the wrong group.
    for name, tensor in (("group_ids", group_ids), ("indices", indices)):
        if tensor.numel() == 0:
            continue
        low, high = torch.stack([tensor.min(), tensor.max()]).tolist()
        if low < 0 or high >= num_groups:
            raise ValueError(
                f"{name} must lie in [0, {num_groups}) (one row of indices per group), "
                f"got values in [{low}, {high}]"
            )
    label = torch.arange(num_groups, device=indices.device)
    src = label.repeat_interleave(indices.shape[1])
    dst = indices.reshape(-1).long()
    while True:
        # Hook: each group takes the smallest label among itself and its mined
        # partners, in both directions (mining is not symmetric, positives are).
        new = label.scatter_reduce(0, src, label[dst], "amin")
        new = new.scatter_reduce(0, dst, label[src], "amin")
        # Shortcut: follow labels to their roots (labels only decrease, so label[v] is
        # in v's component and label[label[v]] ≤ label[v]).
        for _ in range(num_groups.bit_length()):
            new = new[new]  # ⌈log2 M⌉ jumps reach the root of every pointer chain
        if torch.equal(new, label):
            return label[group_ids.long()]
        label = new
