"""What a plugin declares (:class:`Component`) and what the registry holds (:class:`ComponentInfo`)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The kinds of component a plugin can provide.
KINDS: tuple[str, ...] = (
    "loss",
    "transform",
    "collate",
    "miner",
    "backbone",
    "encoder",
    "method",
)

#: What each kind is, for documentation and ``lightly-derm plugins``.
KIND_DESCRIPTIONS: dict[str, str] = {
    "loss": "an nn.Module whose forward takes tensors and returns a scalar",
    "transform": "maps one image (PIL or tensor) to a list of views",
    "collate": "turns a list of samples into a batch",
    "miner": "called under no_grad, returns indices into the batch",
    "backbone": "a backbone family: factory(model_name, **kwargs) -> nn.Module that "
    "maps images to features (backbone='family:model_name')",
    "encoder": "a MONAI FlexibleUNet backbone (monai.networks.nets.flexible_unet.BaseEncoder)",
    "method": "a LightningModule that trains or fine-tunes a model",
}


@dataclass(frozen=True)
class Component:
    """A component that a plugin provides, as returned by its ``lightly_derm_components`` hook.

    Args:
        kind: One of :data:`KINDS`.
        name: The name users ask for, unique within the kind (lower case, ``_`` or ``-``).
        target: The class or factory, or an import path ``"package.module:attribute"``
            that is imported only when the component is first used.
        description: A one-line description; by default the first line of the target's
            docstring.
        metadata: Free-form facts about the component that tools and contract tests read
            (for example ``{"inputs": "grouped"}`` for a loss on ``(embeddings, group_ids)``).

    Example:
        >>> from lightly_derm.plugins import Component
        >>> Component("loss", "my_loss", "my_package.loss:MyLoss")
        Component(kind='loss', name='my_loss', target='my_package.loss:MyLoss', description=None, metadata={})
    """

    kind: str
    name: str
    target: Callable[..., Any] | str
    description: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (
            not isinstance(self.kind, str)
            or not isinstance(self.name, str)
            or not self.name
        ):
            raise TypeError(
                f"Component kind and name must be non-empty strings, got kind={self.kind!r}, name={self.name!r}"
            )
        if isinstance(self.target, str):
            if ":" not in self.target:
                raise ValueError(
                    f"Component {self.kind}/{self.name}: target {self.target!r} must look like "
                    "'package.module:attribute'"
                )
        elif not callable(self.target):
            raise TypeError(
                f"Component {self.kind}/{self.name}: target must be callable or an import path, "
                f"got {type(self.target).__name__}"
            )


def _import_target(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class ComponentInfo:
    """A registered component: what it is and where it comes from.

    Attributes:
        kind: The component kind.
        name: The component name.
        plugin: The name of the plugin that provides it (its entry-point name).
        distribution: The installed distribution that provides the plugin, or ``None``
            for a plugin registered at run time.
        version: That distribution's version, or ``None``.
    """

    kind: str
    name: str
    plugin: str
    distribution: str | None
    version: str | None
    component: Component = field(repr=False)
    _loaded: Any = field(default=None, init=False, repr=False)

    @property
    def metadata(self) -> Mapping[str, Any]:
        """Free-form facts about the component (see :class:`Component`)."""
        return self.component.metadata

    def load(self) -> Any:
        """Returns the component's class or factory, importing it on first use.

        Raises:
            ComponentImportError: (an ``ImportError`` and a
                :class:`~lightly_derm.errors.ConfigError`) The target cannot be
                imported; the message names the component, plugin and target.
        """
        if self._loaded is None:
            target = self.component.target
            if isinstance(target, str):
                try:
                    target = _import_target(target)
                except (ImportError, AttributeError) as exc:
                    from lightly_derm.plugins.errors import ComponentImportError

                    raise ComponentImportError(
                        f"{self.kind} {self.name!r} of plugin {self.plugin!r} "
                        f"({self.source}) points to {self.component.target!r}, which cannot "
                        f"be imported: {exc}"
                    ) from exc
            self._loaded = target
        return self._loaded

    @property
    def source(self) -> str:
        """``"distribution version"``, or the plugin name for a run-time plugin."""
        if self.distribution is None:
            return f"plugin {self.plugin!r} registered at run time"
        return (
            f"{self.distribution} {self.version}" if self.version else self.distribution
        )

    @property
    def description(self) -> str:
        """One line that says what the component is."""
        if self.component.description:
            return self.component.description
        doc = inspect.getdoc(self.load()) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def as_dict(self) -> dict[str, str | None]:
        """The fields that ``lightly-derm plugins --json`` prints."""
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "description": self.description,
        }
