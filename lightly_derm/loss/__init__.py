"""Losses: grouping and pairwise losses of the dermatology SSL methods."""

from lightly_derm.loss.gravis_loss import GraVISLoss

__all__ = ["GraVISLoss"]
