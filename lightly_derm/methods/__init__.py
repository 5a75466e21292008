"""Lightning modules: the pretraining and fine-tuning methods."""

from lightly_derm.methods.ap_byol import APBYOL
from lightly_derm.methods.base import SSLMethod
from lightly_derm.methods.byol import BYOL

__all__ = ["APBYOL", "BYOL", "SSLMethod"]
