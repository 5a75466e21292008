"""Lightning modules: the pretraining and fine-tuning methods."""

from lightly_derm.methods.base import SSLMethod
from lightly_derm.methods.gravis import GraVIS, GraVISProjectionHead
from lightly_derm.methods.simclr import SimCLR

__all__ = ["GraVIS", "GraVISProjectionHead", "SSLMethod", "SimCLR"]
