"""Job configurations: dataclasses that read and write YAML and check their keys.

Builds on :mod:`dataclasses` and PyYAML (``yaml.safe_load``/``safe_dump``, which
Lightning depends on too). A job configuration is a flat dataclass whose fields are the
job's options; ``None`` means "the default", which the job resolves (and prints) before
it runs. What this module adds to plain dataclasses: unknown keys are errors that name
the close matches, ``-`` and ``_`` are the same in keys (as on the command line), and
``key=value`` strings are parsed as YAML scalars (``0.1`` → float, ``true`` → bool,
``[16, 8, 4]`` → list).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C", bound="JobConfig")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads ``1e-3`` as a float (YAML 1.2, as JSON).

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-3``); learning rates are
    written ``1e-3``.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``1e-3`` as a float.

    Example:
        >>> yaml_load("lr: 1e-3")
        {'lr': 0.001}
    """
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def close_matches_hint(name: str, choices: Iterable[str]) -> str:
    """``"did you mean 'x'? Valid: a, b, c."``, the tail of an unknown-name message."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    hint = "did you mean " + " or ".join(repr(c) for c in close) + "? " if close else ""
    return f"{hint}Valid: {', '.join(choices) or 'none'}."


def _key(name: str) -> str:
    return str(name).strip().replace("-", "_")


@dataclasses.dataclass
class JobConfig:
    """Base class of the job configurations (one flat dataclass per job).

    Subclasses declare their options as fields. Every field defaults to ``None``
    ("the job's default"), so that the fields someone set are the ones that are not
    ``None`` (this is what ``--resume`` compares).
    """

    @classmethod
    def field_names(cls) -> list[str]:
        """The option names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(
        cls: type[C], mapping: Mapping[str, Any], source: str = "the configuration"
    ) -> C:
        """Creates a configuration from a mapping, checking every key.

        Raises:
            ValueError: A key is not an option of this job (the message names the close
                matches and lists the valid keys).
        """
        return cls().updated(mapping, source)

    def updated(self: C, mapping: Mapping[str, Any], source: str = "options") -> C:
        """A copy with the non-``None`` values of ``mapping`` set (keys are checked)."""
        if not isinstance(mapping, Mapping):
            raise ValueError(
                f"{source} must be a mapping of option names to values, got "
                f"{type(mapping).__name__}"
            )
        names = self.field_names()
        values: dict[str, Any] = {}
        for raw_key, value in mapping.items():
            key = _key(raw_key)
            if key not in names:
                raise ValueError(
                    f"unknown option {raw_key!r} in {source}; "
                    + close_matches_hint(key, names)
                )
            if value is not None:
                values[key] = value
        return dataclasses.replace(self, **values)

    def given(self) -> dict[str, Any]:
        """The options that are set (not ``None``)."""
        return {k: v for k, v in self.to_dict().items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dictionary (paths as strings, tuples as lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_yaml(self) -> str:
        """The options as YAML, in declaration order."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def load(cls: type[C], path: str | os.PathLike[str]) -> C:
        """Reads a configuration from a YAML file (see :func:`load_yaml_mapping`)."""
        return cls.from_mapping(load_yaml_mapping(path), source=str(path))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Writes the configuration as YAML; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())
        return path


def _plain(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def load_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads a YAML file that holds a mapping (an empty file is an empty mapping).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not valid YAML or does not hold a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        content = yaml_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"config file {path} is not valid YAML: {first}") from exc
    if content is None:
        return {}
    if not isinstance(content, Mapping):
        raise ValueError(
            f"config file {path} must hold a mapping of option names to values, got "
            f"a {type(content).__name__}"
        )
    return dict(content)


def parse_key_values(
    items: Sequence[str] | None, what: str = "--method-args"
) -> dict[str, Any]:
    """Parses ``["lr=0.01", "grids=[8, 4, 2]"]`` into a dictionary of YAML values.

    Raises:
        ValueError: An item has no ``=`` or an empty key.

    Example:
        >>> parse_key_values(["lr=0.01", "normalize=false", "grids=[8, 4, 2]"])
        {'lr': 0.01, 'normalize': False, 'grids': [8, 4, 2]}
    """
    result: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = str(item).partition("=")
        key = _key(key)
        if not sep or not key:
            raise ValueError(f"{what} takes key=value pairs, got {item!r}")
        try:
            result[key] = yaml_load(text) if text.strip() else None
        except yaml.YAMLError:
            result[key] = text
    return result


def check_kwargs(
    factory: Callable[..., Any],
    kwargs: Mapping[str, Any],
    what: str,
    reserved: Mapping[str, str] | None = None,
) -> None:
    """Checks keyword arguments against a constructor's signature.

    Args:
        factory: The class or function the arguments are for.
        kwargs: The arguments.
        what: Names the target in messages (``"method 'gravis'"``).
        reserved: Argument names set elsewhere, with the option that sets them.

    Raises:
        ValueError: An argument is reserved or not accepted (the message names it, the
            close matches, and lists the valid ones).
    """
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):  # builtins without a signature: cannot check
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    reserved = dict(reserved or {})
    valid = [
        name
        for name, p in parameters.items()
        if name != "self"
        and p.kind
        in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and name not in reserved
    ]
    for key in kwargs:
        if key in reserved:
            raise ValueError(f"{key!r} of {what} is set by {reserved[key]}, not here")
        if key not in valid:
            raise ValueError(
                f"unknown argument {key!r} for {what}; "
                + close_matches_hint(key, valid)
            )
