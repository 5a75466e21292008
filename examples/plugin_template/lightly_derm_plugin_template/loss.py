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
        """Returns the loss of ``embeddings`` (N, D) grouped by ``group_ids`` (N,).

        Raises:
            TypeError: ``embeddings`` is not a float tensor or ``group_ids`` not an
                integer tensor.
            ValueError: Wrong shapes, or a group with a single view.
        """
        # Validate as lightly-derm's contract tests expect (tests/plugins/
        # test_input_contracts.py): a clear error instead of a wrong number.
        if not isinstance(embeddings, Tensor) or not embeddings.is_floating_point():
            raise TypeError("embeddings must be a floating-point tensor (N, D)")
        if not isinstance(group_ids, Tensor) or group_ids.is_floating_point():
            raise TypeError("group_ids must be an integer tensor (N,)")
        if (
            embeddings.ndim != 2
            or 0 in embeddings.shape
            or group_ids.shape != embeddings.shape[:1]
        ):
            raise ValueError(
                f"expected embeddings (N, D) and group_ids (N,), got {tuple(embeddings.shape)} "
                f"and {tuple(group_ids.shape)}"
            )
        z = nn.functional.normalize(embeddings.float(), dim=1)
        ids, inverse, counts = torch.unique(
            group_ids, return_inverse=True, return_counts=True
        )
        if bool((counts < 2).any()):
            raise ValueError(
                f"group id {int(ids[counts < 2][0])} has a single view; every group "
                "needs two views or more"
            )
        sums = torch.zeros(
            int(inverse.max()) + 1, z.shape[1], device=z.device
        ).index_add(0, inverse, z)
        counts = torch.bincount(inverse).clamp(min=1).unsqueeze(1).to(z.dtype)
        centers = sums / counts
        return (z - centers[inverse]).pow(2).sum(dim=1).mean()
