"""View transforms: K-view GraVIS views, Cutout."""

from lightly_derm.transforms.cutout import Cutout
from lightly_derm.transforms.gravis_transform import (
    GraVISTransform,
    GraVISViewTransform,
    to_rgb,
)

__all__ = ["Cutout", "GraVISTransform", "GraVISViewTransform", "to_rgb"]
