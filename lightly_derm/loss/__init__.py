"""Losses, one per file, each an ``nn.Module`` returning a scalar."""

from lightly_derm.loss.additional_positive_loss import AdditionalPositiveLoss
from lightly_derm.loss.barlow_twins_frobenius_loss import BarlowTwinsFrobeniusLoss
from lightly_derm.loss.gravis_loss import GraVISLoss

__all__ = ["AdditionalPositiveLoss", "BarlowTwinsFrobeniusLoss", "GraVISLoss"]
