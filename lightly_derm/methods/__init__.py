"""Lightning modules: the pretraining and fine-tuning methods."""

from lightly_derm.methods.ap_byol import APBYOL
from lightly_derm.methods.barlow_twins import BarlowTwins
from lightly_derm.methods.base import SSLMethod
from lightly_derm.methods.byol import BYOL
from lightly_derm.methods.fgssl import FGSSL
from lightly_derm.methods.fgssl_classifier import FGSSLClassifier
from lightly_derm.methods.gravis import GraVIS, GraVISProjectionHead
from lightly_derm.methods.pmg import PMGMethod
from lightly_derm.methods.simclr import SimCLR

__all__ = [
    "APBYOL",
    "BYOL",
    "FGSSL",
    "BarlowTwins",
    "FGSSLClassifier",
    "GraVIS",
    "GraVISProjectionHead",
    "PMGMethod",
    "SSLMethod",
    "SimCLR",
]
