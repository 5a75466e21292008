"""BYOL's cross-view loss towards chosen samples: the additional-positive loss of AP-BYOL.

Builds on lightly's BYOL loss, :class:`lightly.loss.NegativeCosineSimilarity` applied
across views as in lightly's BYOL example, ``0.5 * (ncs(p0, z1) + ncs(p1, z0))``. What
it adds: per-sample values (which the TracIn miner differentiates) and targets taken
from other samples of the (global) batch (the mined positives).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _stack_views(name: str, views: Sequence[Tensor] | Tensor) -> Tensor:
    if isinstance(views, Tensor):
        if views.ndim != 3:
            raise ValueError(
                f"{name} must be a list of V (B, D) tensors or one (V, B, D) tensor, got "
                f"shape {tuple(views.shape)}"
            )
        stacked = views
    else:
        if not isinstance(views, Sequence) or not all(
            isinstance(v, Tensor) for v in views
        ):
            raise TypeError(f"{name} must be a list of (B, D) tensors")
        shapes = {tuple(v.shape) for v in views}
        if len(shapes) != 1 or views[0].ndim != 2:
            raise ValueError(
                f"{name} must be V tensors (B, D) of one shape, got {sorted(shapes)}"
            )
        stacked = torch.stack(list(views))
    if not stacked.is_floating_point():
        raise TypeError(f"{name} must be floating-point, got dtype {stacked.dtype}")
    if stacked.shape[1] == 0 or stacked.shape[2] == 0:
        raise ValueError(
            f"{name} must hold B > 0 samples of D > 0 features, got (V, B, D) = "
            f"{tuple(stacked.shape)}"
        )
    return stacked


class AdditionalPositiveLoss(nn.Module):
    """Negative cosine similarity of each prediction to another view's target of chosen samples.

    AP-BYOL (Zeng et al., "Additional Positive Enables Better Representation Learning for
    Medical Images", MICCAI 2023, arXiv:2306.00112) adds to BYOL the BYOL loss between
    sample i and a mined positive j*(i):

        ℓ_i = −1/(V(V−1)) Σ_{s≠t} 1/k Σ_{j ∈ J(i)} cos(p_i^s, sg(z_j^t))

    with V views, predictions p, target projections z and J(i) the k chosen samples
    (``indices[i]``); ``indices=None`` chooses the sample itself, which is BYOL's loss
    exactly as lightly computes it with :class:`~lightly.loss.NegativeCosineSimilarity`
    (for V = 2: ``0.5 * (ncs(p0, z1) + ncs(p1, z0))``). The squared form
    ‖p̄ − z̄‖² = 2 − 2 cos is 4 ℓ_i + 4 for two views: same minimiser, gradients 4× —
    so λ weights L_add against L_BYOL identically in both forms.

    Cosines are computed in float32 (float64 stays float64) even under autocast. Targets
    are detached (stop-gradient).

    Args:
        eps: Lower bound on the norms, as in :func:`torch.nn.functional.cosine_similarity`
            and lightly's ``NegativeCosineSimilarity``.

    Example:
        >>> import torch
        >>> from lightly_derm.loss import AdditionalPositiveLoss
        >>> loss_fn = AdditionalPositiveLoss()
        >>> p = [torch.randn(8, 16, requires_grad=True) for _ in range(2)]
        >>> z = [torch.randn(8, 16) for _ in range(2)]
        >>> byol = loss_fn(p, z)                          # BYOL, lightly's value
        >>> extra = loss_fn(p, z, torch.randint(0, 8, (8, 1)))  # towards mined samples
        >>> per_sample = loss_fn(p, z, reduction="none")  # (8,), for the miner
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(
        self,
        predictions: Sequence[Tensor] | Tensor,
        targets: Sequence[Tensor] | Tensor,
        indices: Tensor | None = None,
        reduction: Literal["mean", "none"] = "mean",
    ) -> Tensor:
        """Computes the loss.

        Args:
            predictions: V (B, D) online predictions, or one (V, B, D) tensor.
            targets: V (N, D) target projections, or (V, N, D); N = B without indices,
                otherwise any N (e.g. the global batch gathered across ranks).
            indices: (B, k) int indices into the N targets, or ``None`` for the sample
                itself.
            reduction: ``"mean"`` (a scalar) or ``"none"`` (per sample, (B,)).

        Raises:
            TypeError: Inputs are not floating-point tensors (lists of tensors).
            ValueError: Shapes disagree, empty inputs, fewer than 2 views, or indices out of range
                of ``targets`` (the range check runs on the CPU only, to avoid a sync).
        """
        p = _stack_views("predictions", predictions)
        z = _stack_views("targets", targets).detach()
        views, batch_size, dim = p.shape
        if views < 2:
            raise ValueError(f"BYOL needs at least 2 views, got {views}")
        if z.shape[0] != views or z.shape[2] != dim:
            raise ValueError(
                f"predictions are (V, B, D) = {tuple(p.shape)} but targets are "
                f"{tuple(z.shape)}; V and D must match"
            )
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        dtype = torch.float64 if torch.float64 in (p.dtype, z.dtype) else torch.float32
        with torch.autocast(p.device.type, enabled=False):
            p_hat = F.normalize(p.to(dtype), dim=-1, eps=self.eps)
            z_hat = F.normalize(z.to(dtype), dim=-1, eps=self.eps)
            if indices is None:
                if z.shape[1] != batch_size:
                    raise ValueError(
                        f"without indices, targets need B = {batch_size} samples, got "
                        f"{z.shape[1]}"
                    )
                cos = torch.einsum("sbd,tbd->stb", p_hat, z_hat).unsqueeze(-1)
            else:
                if (
                    not isinstance(indices, Tensor)
                    or indices.ndim != 2
                    or indices.shape[0] != batch_size
                    or indices.is_floating_point()
                ):
                    raise ValueError(
                        f"indices must be an int tensor ({batch_size}, k), got "
                        + (
                            f"{indices.dtype} {tuple(indices.shape)}"
                            if isinstance(indices, Tensor)
                            else type(indices).__name__
                        )
                    )
                if (
                    indices.device.type == "cpu"
                    and indices.numel()
                    and (int(indices.min()) < 0 or int(indices.max()) >= z.shape[1])
                ):
                    raise ValueError(
                        f"indices must lie in [0, {z.shape[1]}) (the targets' samples)"
                    )
                chosen = z_hat[:, indices.to(z.device)]  # (V, B, k, D)
                cos = torch.einsum("sbd,tbkd->stbk", p_hat, chosen)
            # Mean over the V(V-1) ordered pairs s != t and the k targets, as one
            # weighted sum: a boolean-mask index (cos[off_diagonal]) would cost two
            # host synchronisations per call on a GPU (nonzero forward and backward).
            weight = (1.0 - torch.eye(views, dtype=cos.dtype, device=cos.device)) / (
                views * (views - 1) * cos.shape[-1]
            )
            per_sample = -torch.einsum("st,stbk->b", weight, cos)  # (B,)
        return per_sample.mean() if reduction == "mean" else per_sample
