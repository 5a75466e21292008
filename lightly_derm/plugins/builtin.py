"""The built-in plugin: lightly-derm's own components.

Registered through the package's own entry point (group ``lightly_derm``, name
``lightly_derm``), exactly as a third-party plugin is. Targets are import paths, so
listing the components imports nothing heavy.
"""

from __future__ import annotations

from lightly_derm.plugins.component import Component
from lightly_derm.plugins.hookspecs import hookimpl

# ---------------------------------------------------------------------------- GraVIS
GRAVIS: tuple[Component, ...] = ()


# ---------------------------------------------------------------------------- FG-SSL
FGSSL: tuple[Component, ...] = ()


# --------------------------------------------------------------------------- AP-BYOL
APBYOL: tuple[Component, ...] = ()


# ---------------------------------------------------------------------- segmentation
# MONAI FlexibleUNet backbones with torchvision ResNet key names; the name is the
# FlexibleUNet backbone name (lightly_derm.plugins.flexunet registers them with MONAI).
SEGMENTATION: tuple[Component, ...] = tuple(
    Component(
        "encoder",
        f"lightly-derm-resnet{depth}",
        f"lightly_derm.segmentation.encoders:ResNet{depth}Encoder",
        description=f"torchvision ResNet-{depth} as a MONAI FlexibleUNet encoder "
        "(torchvision key names, SSL checkpoints load as they are)",
        metadata={"spatial_dims": 2, "in_channels": 3},
    )
    for depth in (18, 34, 50)
)


#: All built-in components.
COMPONENTS: tuple[Component, ...] = GRAVIS + FGSSL + APBYOL + SEGMENTATION


@hookimpl
def lightly_derm_components() -> tuple[Component, ...]:
    """Returns lightly-derm's built-in components."""
    return COMPONENTS
