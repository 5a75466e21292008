"""Fills MONAI's FlexibleUNet backbone registry from the registered ``encoder`` plugins.

Builds on MONAI's :data:`monai.networks.nets.flexible_unet.FLEXUNET_BACKBONE`
(``FlexUNetEncoderRegister``): every ``encoder`` component of the lightly-derm registry
(:data:`lightly_derm.registry`) becomes a backbone name that
``FlexibleUNet(backbone=...)`` accepts. The registration happens where the encoders are
used, as timm registers its models: on importing :mod:`lightly_derm.segmentation`
(which imports MONAI), in any order with MONAI's own import, and in spawned DataLoader
workers (which import the package again when they unpickle its objects):

.. code-block:: python

    import lightly_derm.segmentation
    from monai.networks.nets import FlexibleUNet

    net = FlexibleUNet(in_channels=3, out_channels=1, backbone="lightly-derm-resnet50")

``import lightly_derm`` alone imports neither torch nor MONAI and changes nothing in
MONAI (no import hooks). :func:`register_flexunet_backbones` is idempotent; call it again after
``registry.reload()`` or ``registry.register_plugin(...)`` to pick up new encoders. An
encoder plugin that cannot be imported, that is no MONAI ``BaseEncoder``, or whose name
clashes with a MONAI backbone is skipped with a
:class:`~lightly_derm.plugins.PluginLoadWarning`; the others are registered.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lightly_derm.plugins.errors import PluginLoadWarning

if TYPE_CHECKING:
    from lightly_derm.plugins.component import ComponentInfo
    from lightly_derm.plugins.registry import Registry

#: Methods of MONAI's ``BaseEncoder`` interface that ``register_class`` calls.
_ENCODER_INTERFACE = (
    "get_encoder_names",
    "num_outputs",
    "num_channels_per_output",
    "get_encoder_parameters",
)

_lock = threading.RLock()
#: The FLEXUNET_BACKBONE names this module added, and the component each came from.
_added: dict[str, str] = {}


def _canonical(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _warn(info: ComponentInfo, problem: str) -> None:
    warnings.warn(
        f"encoder {info.name!r} of plugin {info.plugin!r} ({info.source}) is not "
        f"registered as a MONAI FlexibleUNet backbone: {problem}",
        PluginLoadWarning,
        stacklevel=3,
    )


def _entry(info: ComponentInfo) -> tuple[str, dict[str, Any]] | None:
    """The ``FLEXUNET_BACKBONE`` name and entry of one encoder component, or ``None``."""
    from monai.networks.blocks import BaseEncoder

    try:
        cls = info.load()
    except Exception as exc:  # a broken plugin must not take the others down
        _warn(info, f"{type(exc).__name__}: {exc}")
        return None
    missing = [m for m in _ENCODER_INTERFACE if not callable(getattr(cls, m, None))]
    if not isinstance(cls, type) or missing:
        _warn(
            info,
            f"{getattr(cls, '__name__', cls)!r} must be a class implementing "
            f"monai.networks.blocks.BaseEncoder (missing: {', '.join(missing) or 'a class'})",
        )
        return None
    if not issubclass(cls, BaseEncoder):
        warnings.warn(
            f"encoder {info.name!r} ({info.source}): {cls.__name__} does not derive from "
            "monai.networks.blocks.BaseEncoder",
            PluginLoadWarning,
            stacklevel=3,
        )
    encoder: Any = cls  # has the BaseEncoder class methods (checked above)
    try:
        names: Sequence[str] = list(encoder.get_encoder_names())
        numbers = list(encoder.num_outputs())
        channels = list(encoder.num_channels_per_output())
        parameters = list(encoder.get_encoder_parameters())
    except Exception as exc:
        _warn(
            info, f"its BaseEncoder class methods failed: {type(exc).__name__}: {exc}"
        )
        return None
    if not len(names) == len(numbers) == len(channels) == len(parameters):
        _warn(
            info,
            f"{cls.__name__}'s get_encoder_names, num_outputs, num_channels_per_output "
            "and get_encoder_parameters return lists of different lengths",
        )
        return None
    matches = [i for i, n in enumerate(names) if _canonical(n) == _canonical(info.name)]
    if not matches:
        _warn(
            info,
            f"{cls.__name__}.get_encoder_names() returns {names}, which does not "
            f"contain the component name {info.name!r}",
        )
        return None
    i = matches[0]
    return names[i], {
        "type": cls,
        "feature_number": numbers[i],
        "feature_channel": channels[i],
        "parameter": dict(parameters[i]),
    }


def register_flexunet_backbones(registry: Registry | None = None) -> list[str]:
    """Registers every ``encoder`` component as a MONAI FlexibleUNet backbone.

    Idempotent: names this function registered before and whose component is gone
    (after ``registry.reload()`` with a plugin blocked, for example) are removed; MONAI's
    own backbones are never replaced.

    Args:
        registry: The registry to read; :data:`lightly_derm.registry` by default.

    Returns:
        The backbone names now registered from ``encoder`` components, sorted.

    Example:
        >>> import lightly_derm
        >>> from lightly_derm.plugins.flexunet import register_flexunet_backbones
        >>> "lightly-derm-resnet50" in register_flexunet_backbones()
        True
    """
    from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

    if registry is None:
        from lightly_derm import registry as default_registry

        registry = default_registry
    table = FLEXUNET_BACKBONE.register_dict
    with _lock:
        current: dict[str, str] = {}
        for info in registry.list("encoder"):
            entry = _entry(info)
            if entry is None:
                continue
            name, value = entry
            if name in table and name not in _added:
                _warn(
                    info,
                    f"MONAI already has a backbone named {name!r}; rename the component",
                )
                continue
            table[name] = value
            current[name] = f"{info.plugin}:{info.name}"
        for name in set(_added) - set(current):
            table.pop(name, None)
        _added.clear()
        _added.update(current)
        return sorted(current)
