"""Lightning modules: the pretraining and fine-tuning methods."""

from lightly_derm.methods.barlow_twins import BarlowTwins
from lightly_derm.methods.base import SSLMethod
from lightly_derm.methods.fgssl import FGSSL
from lightly_derm.methods.fgssl_classifier import FGSSLClassifier
from lightly_derm.methods.pmg import PMGMethod

__all__ = ["BarlowTwins", "FGSSL", "FGSSLClassifier", "PMGMethod", "SSLMethod"]
