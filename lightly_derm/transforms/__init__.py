"""View transforms: K-view GraVIS views, Cutout, RGB input conversion."""

from lightly_derm.transforms.cutout import Cutout
from lightly_derm.transforms.gravis_transform import (
    GraVISTransform,
    GraVISViewTransform,
)
from lightly_derm.transforms.rgb import RGBInput, to_rgb

__all__ = ["Cutout", "GraVISTransform", "GraVISViewTransform", "RGBInput", "to_rgb"]
