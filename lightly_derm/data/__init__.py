"""Data: collates for multi-view batches, datasets, synthetic lesions."""

from lightly_derm.data.grouped_view_collate import (
    GroupedBatch,
    GroupedViewCollate,
    to_grouped_batch,
)

__all__ = ["GroupedBatch", "GroupedViewCollate", "to_grouped_batch"]
