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
APBYOL: tuple[Component, ...] = (
    Component(
        "miner",
        "tracin",
        "lightly_derm.miners.tracin:TracInPositiveMiner",
        metadata={"inputs": "per_sample_loss"},
    ),
    Component(
        "method",
        "byol",
        "lightly_derm.methods.byol:BYOL",
        metadata={"task": "pretrain"},
    ),
    Component(
        "method",
        "ap_byol",
        "lightly_derm.methods.ap_byol:APBYOL",
        metadata={"task": "pretrain"},
    ),
)


# ---------------------------------------------------------------------- segmentation
SEGMENTATION: tuple[Component, ...] = ()


#: All built-in components.
COMPONENTS: tuple[Component, ...] = GRAVIS + FGSSL + APBYOL + SEGMENTATION


@hookimpl
def lightly_derm_components() -> tuple[Component, ...]:
    """Returns lightly-derm's built-in components."""
    return COMPONENTS
