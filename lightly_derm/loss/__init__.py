"""Losses: each an ``nn.Module`` whose ``forward`` takes tensors and returns a scalar."""

from lightly_derm.loss.additional_positive_loss import AdditionalPositiveLoss

__all__ = ["AdditionalPositiveLoss"]
