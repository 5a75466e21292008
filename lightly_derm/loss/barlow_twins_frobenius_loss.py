"""The FG-SSL authors' Barlow Twins variant, λ²‖C − I‖²_F.

Builds on :class:`lightly.loss.BarlowTwinsLoss` (same cross-correlation, same
distributed reduction of C); only the normalisation and the weighting differ.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed import nn as dist_nn

__all__ = ["BarlowTwinsFrobeniusLoss"]


class BarlowTwinsFrobeniusLoss(nn.Module):
    """λ² ‖C − I‖²_F of the cross-correlation C of batch-standardised embeddings.

    The loss that the FG-SSL code (Park and Ryu, arXiv:2308.05770; github.com/kalelpark/
    FG-SSL, ``barlow_criterion``) computes instead of Barlow Twins' (Zbontar et al.,
    ICML 2021) Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij², which :class:`lightly.loss.BarlowTwinsLoss`
    implements and :class:`~lightly_derm.methods.FGSSL` uses by default. Here the
    diagonal and off-diagonal terms are weighted alike, and the whole loss by λ²::

        ẑ = (z − mean(z)) / sqrt(var(z) + eps)      per dimension, unbiased variance
        C = ẑ_Aᵀ ẑ_B / N
        L = λ² Σ_ij (C − I)²_ij

    As the authors, the variance is unbiased (``torch.std``); ``eps`` (absent in their
    code) keeps constant dimensions finite. Standardised in float64 (exact at any
    finite scale of float32, bf16 or fp16 embeddings: in float32 the variance
    overflows from about 1e19 and the loss became a wrong finite number), C and the
    loss in float32 (float64 for float64 inputs), with autocast off; a variance that overflows even so (float64
    embeddings beyond about 1e154) makes the loss NaN.

    Args:
        lambda_param: λ (authors: 5e-3).
        eps: Added to the variance.
        gather_distributed: Average C over all processes before the loss, as
            :class:`lightly.loss.BarlowTwinsLoss` does (each process standardises its
            own batch; the gradient is scaled to match one process).

    Example:
        >>> import torch
        >>> from lightly_derm.loss import BarlowTwinsFrobeniusLoss
        >>> loss_fn = BarlowTwinsFrobeniusLoss()
        >>> loss_fn(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        lambda_param: float = 5e-3,
        eps: float = 1e-5,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        if gather_distributed and not dist.is_available():
            raise ValueError(
                "gather_distributed is True but torch.distributed is not available"
            )
        self.lambda_param = lambda_param
        self.eps = eps
        self.gather_distributed = gather_distributed

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """Returns the loss of the embeddings ``z_a`` and ``z_b`` (N, D) of two views.

        Raises:
            TypeError: An input is not a floating-point tensor.
            ValueError: An input is not (N, D) with D > 0, the shapes differ, or N < 2.
        """
        for name, z in (("z_a", z_a), ("z_b", z_b)):
            if not isinstance(z, Tensor) or not z.is_floating_point():
                raise TypeError(
                    f"{name} must be a floating-point tensor (N, D), got "
                    + (
                        f"dtype {z.dtype}"
                        if isinstance(z, Tensor)
                        else type(z).__name__
                    )
                )
            if z.ndim != 2:
                raise ValueError(
                    f"{name} must be a 2-D tensor (N, D), got {tuple(z.shape)}"
                )
            if z.shape[1] == 0:
                raise ValueError(f"{name} has no features: shape {tuple(z.shape)}")
        if z_a.shape != z_b.shape:
            raise ValueError(
                f"z_a and z_b must have the same shape, got {tuple(z_a.shape)} and "
                f"{tuple(z_b.shape)}"
            )
        if z_a.shape[0] < 2:
            raise ValueError(
                f"the batch must hold at least 2 samples to standardise, got {z_a.shape[0]}"
            )
        with torch.autocast(device_type=z_a.device.type, enabled=False):
            (a, a_ok), (b, b_ok) = self._standardise(z_a), self._standardise(z_b)
            c = a.T @ b / a.shape[0]
            if self.gather_distributed and dist.is_initialized():
                world_size = dist.get_world_size()
                if world_size > 1:
                    c = dist_nn.all_reduce(c / world_size)
            identity = torch.eye(c.shape[0], device=c.device, dtype=c.dtype)
            loss = (self.lambda_param**2) * (c - identity).pow(2).sum()
            # A variance that overflowed would standardise to zeros, a finite wrong
            # loss: NaN instead (a device-side select, no host synchronisation).
            return torch.where(a_ok & b_ok, loss, torch.full_like(loss, math.nan))

    def _standardise(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Standardised columns (float32; float64 for float64 inputs), and whether the variances were finite.

        Float32 (and lower) inputs are standardised in float64, whose range holds
        their squares, so the result is exact at any finite scale (float32 variances
        overflow from about 1e19). Float64 inputs beyond about 1e154 (MPS, without
        float64: float32 inputs beyond 1e19) overflow: the loss is then NaN.
        """
        work = torch.float32 if z.device.type == "mps" else torch.float64
        x = z.to(work)
        var = x.var(0, unbiased=True)
        out = (x - x.mean(0)) / torch.sqrt(var + self.eps)
        # float64 inputs stay float64 (C and the loss too); the rest in float32
        out_dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
        return out.to(out_dtype), torch.isfinite(var).all()
