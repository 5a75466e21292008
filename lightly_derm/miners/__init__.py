"""Miners: choose extra positives inside a batch (called under ``no_grad``, return indices)."""

from lightly_derm.miners.positive_groups import merge_positive_groups
from lightly_derm.miners.tracin import TracInPositiveMiner, pairwise_tracin

__all__ = ["TracInPositiveMiner", "merge_positive_groups", "pairwise_tracin"]
