"""An example grouping loss for the plugin template."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GroupCenterLoss(nn.Module):
    """Pulls each L2-normalised embedding towards the mean of its group.

    L = mean_n || z_n - mean_{m in G(n)} z_m ||^2, with G(n) the views sharing n's id.

    Example:
        >>> loss_fn = GroupCenterLoss()
        >>> loss = loss_fn(torch.randn(8, 16), torch.arange(4).repeat_interleave(2))
    """

    def forward(self, embeddings: Tensor, group_ids: Tensor) -> Tensor:
        """Returns the loss of ``embeddings`` (N, D) grouped by ``group_ids`` (N,)."""
        if embeddings.ndim != 2 or group_ids.shape != embeddings.shape[:1]:
            raise ValueError(
                f"expected embeddings (N, D) and group_ids (N,), got {tuple(embeddings.shape)} "
                f"and {tuple(group_ids.shape)}"
            )
        z = nn.functional.normalize(embeddings.float(), dim=1)
        _, inverse = torch.unique(group_ids, return_inverse=True)
        sums = torch.zeros(
            int(inverse.max()) + 1, z.shape[1], device=z.device
        ).index_add(0, inverse, z)
        counts = torch.bincount(inverse).clamp(min=1).unsqueeze(1).to(z.dtype)
        centers = sums / counts
        return (z - centers[inverse]).pow(2).sum(dim=1).mean()
