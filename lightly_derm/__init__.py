"""lightly-derm: self-supervised learning for dermatology images, as lightly plugins.

Three published methods (GraVIS, FG-SSL, AP-BYOL) as building blocks that mix with
lightly's SSL modules, PyTorch Lightning and MONAI. Components are found through the
plugin registry:

    >>> from lightly_derm import registry
    >>> sorted(registry.kinds())
    ['backbone', 'collate', 'encoder', 'loss', 'method', 'miner', 'transform']
"""

from lightly_derm._version import __version__
from lightly_derm.plugins.registry import Registry

#: The registry of all installed components (see :class:`~lightly_derm.plugins.Registry`).
registry = Registry()

__all__ = ["__version__", "registry"]
