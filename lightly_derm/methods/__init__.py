"""Lightning modules: the pretraining and fine-tuning methods."""

from lightly_derm.methods.base import SSLMethod

__all__ = ["SSLMethod"]
