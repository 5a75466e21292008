"""Job configurations: typed dataclasses, the single source of every job option.

Builds on :mod:`dataclasses`, PyYAML (``yaml.safe_load``/``safe_dump``, which
Lightning depends on too) and ``docstring_parser`` (jsonargparse's docstring reader). A
job configuration is a flat dataclass whose fields are the job's options, each
declared once: its type, its default (or the presets that give it), its rule and its
description. The command line (:mod:`lightly_derm.cli`, generated with jsonargparse),
the YAML files, the help and the docs' option tables all read them from there. What
this module adds to plain dataclasses: presets, checks of every option with one-line
errors, unknown keys that name the close matches, ``-`` and ``_`` read alike in keys
(as on the command line), old option names read with a warning, and ``key=value``
strings parsed as YAML scalars (``0.1`` → float, ``true`` → bool, ``[16, 8, 4]`` → list).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import docstring_parser
import yaml

from lightly_derm.errors import ConfigError
from lightly_derm.utils.validation import Range, check_choice

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


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_docs(cls: type) -> dict[str, str]:
    """The ``Attributes:`` section of a dataclass docstring, by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        parsed = docstring_parser.parse(inspect.getdoc(klass) or "")
        for param in parsed.params:
            if param.description:
                docs[param.arg_name] = " ".join(param.description.split())
    return docs


def option(
    default: Any = None,
    rule: Range | None = None,
    *,
    factory: Callable[[], Any] | None = None,
    only: str | None = None,
    needs: str | None = None,
    item: str | None = None,
) -> Any:
    """A job option: a dataclass field with its default and its checks.

    Args:
        default: The default (``None``: not set, filled by a preset or derived).
        rule: The numeric rule of the value (or of each item of a list).
        factory: Makes the default (lists, mappings).
        only: The preset the option belongs to (giving it under another is an error).
        needs: The option this one needs to be set.
        item: Names one item of a list option in messages.

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass
        ... class Options(JobConfig):
        ...     epochs: int = option(10, Range.int(1))
        >>> Options(epochs=0).check()
        Traceback (most recent call last):
        ...
        lightly_derm.errors.ConfigError: epochs must be an integer >= 1, got 0
    """
    metadata = {
        key: value
        for key, value in (
            ("range", rule),
            ("only", only),
            ("needs", needs),
            ("item", item),
        )
        if value is not None
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class JobConfig:
    """Base class of the job configurations (one flat dataclass per job).

    A subclass declares each option once, as a typed field with its default and an
    ``Attributes:`` entry in its docstring; the command line, its help, the YAML
    configuration and the docs' option tables are generated from these (see
    :mod:`lightly_derm.cli`). A field made with :func:`option` may carry a numeric
    rule (:class:`~lightly_derm.utils.validation.Range`), checked by :meth:`check`.

    A default that depends on the kind of run is ``None`` in the field and comes from
    a preset (:attr:`PRESETS`): a mapping of option values chosen by
    :meth:`preset_name` (for the jobs: ``"demo"`` without data, the built-in synthetic
    lesions, and ``"data"`` with data). :meth:`with_preset` fills the options that are
    ``None`` from it, so a field that is ``None`` means "not set".
    """

    #: Option values by preset name; see :meth:`preset_name`.
    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: Old option names that are still read (with a ``FutureWarning``): old → new.
    RENAMED: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def field_names(cls) -> list[str]:
        """The option names: the class's own first, then those of its bases."""
        fields = {f.name for f in dataclasses.fields(cls)}
        names: list[str] = []
        for klass in cls.__mro__:
            for name in vars(klass).get("__annotations__", {}):
                if name in fields and name not in names:
                    names.append(name)
        return names

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """The type of each option (``None`` removed from unions)."""
        hints = _type_hints(cls)
        return {name: _without_none(hints[name]) for name in cls.field_names()}

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        """The docstring text of each option."""
        return _field_docs(cls)

    @classmethod
    def option_key(cls, name: str, source: str = "options") -> str:
        """The option name of a key (``-`` read as ``_``; an old name warns).

        Raises:
            ConfigError: Not an option (the message names the close matches).
        """
        key = _key(name)
        if key in cls.RENAMED:
            new = cls.RENAMED[key]
            warnings.warn(
                f"{key!r} is deprecated; it is now called {new!r} (the old name is "
                "read for one release)",
                FutureWarning,
                stacklevel=3,
            )
            key = new
        names = cls.field_names()
        if key not in names:
            raise ConfigError(
                f"unknown option {name!r} in {source}; "
                + close_matches_hint(key, names)
            )
        return key

    @classmethod
    def normalize(cls, mapping: Mapping[str, Any], source: str) -> dict[str, Any]:
        """Checks the keys of ``mapping`` and returns it with option names as keys.

        Subclasses may accept more forms (e.g. a nested mapping) by overriding this.

        Raises:
            ConfigError: ``mapping`` is not a mapping or has a key that is no option.
        """
        if not isinstance(mapping, Mapping):
            raise ConfigError(
                f"{source} must be a mapping of option names to values, got "
                f"{type(mapping).__name__}"
            )
        return {cls.option_key(k, source): v for k, v in mapping.items()}

    @classmethod
    def create(
        cls: type[C],
        config: C | Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        job: str = "job",
    ) -> C:
        """The configuration a job function was called with: ``config`` updated by ``options``.

        Args:
            config: A configuration or a mapping of options (keys are checked).
            options: Keyword options; they override ``config``.
            job: Names the job in messages.
        """
        if isinstance(config, JobConfig):
            return config.updated(options or {}, f"{job} options")
        return (
            cls()
            .updated(config or {}, f"the {job} configuration")
            .updated(options or {}, f"{job} options")
        )

    @classmethod
    def from_mapping(
        cls: type[C], mapping: Mapping[str, Any], source: str = "the configuration"
    ) -> C:
        """Creates a configuration from a mapping, checking every key.

        Raises:
            ConfigError: A key is not an option of this job (the message names the
                close matches and lists the valid keys).
        """
        return cls().updated(mapping, source)

    def updated(self: C, mapping: Mapping[str, Any], source: str = "options") -> C:
        """A copy with the non-``None`` values of ``mapping`` set (keys are checked)."""
        values = {
            k: v for k, v in self.normalize(mapping, source).items() if v is not None
        }
        return dataclasses.replace(self, **values)

    def given(self) -> dict[str, Any]:
        """The options that differ from the field defaults (the ones someone set)."""
        defaults = {f.name: field_default(f) for f in dataclasses.fields(self)}
        return {k: v for k, v in self.to_dict().items() if v != _plain(defaults[k])}

    def preset_name(self) -> str | None:
        """The preset in :attr:`PRESETS` that fills the unset options.

        ``"demo"`` when the job has a ``data`` option and it is not set (the built-in
        synthetic lesions, sized for a laptop CPU), ``"data"`` when it is set.
        """
        if "data" not in self.field_names():
            return None
        return "demo" if getattr(self, "data", None) is None else "data"

    def with_preset(self: C) -> C:
        """A copy whose ``None`` options are taken from the preset of :meth:`preset_name`."""
        preset = self.PRESETS.get(self.preset_name() or "", {})
        values = {k: v for k, v in preset.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **values)

    def check(self: C) -> C:
        """Checks every set option against its type and rule; returns ``self``.

        Raises:
            ConfigError: An option has the wrong type, is out of range, or belongs to
                another preset (the message names it).
        """
        preset = self.preset_name()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            only = f.metadata.get("only")
            if only is not None and preset != only:
                raise ConfigError(
                    f"{f.name}: the options of the {only!r} preset apply to "
                    f"{self.preset_help().get(only, only)} only; leave it out"
                )
            needs = f.metadata.get("needs")
            if needs is not None and getattr(self, needs) is None:
                raise ConfigError(f"{cli_name(f.name)} needs {cli_name(needs)}")
            _check_type(f.name, value, self.field_types()[f.name])
            rule = f.metadata.get("range")
            if rule is not None:
                for item in value if isinstance(value, (list, tuple)) else [value]:
                    rule.check(f.metadata.get("item", f.name), item)
        return self

    def resolved(self: C) -> C:
        """Every default filled in and every option checked (what the job runs with).

        Jobs override this to derive the options that depend on others.
        """
        return self.with_preset().check()

    @classmethod
    def preset_help(cls) -> dict[str, str]:
        """One phrase per preset that says when it applies (for messages and help)."""
        return {"demo": "the built-in synthetic data", "data": "--data"}

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dictionary (paths as strings, tuples as lists)."""
        return {name: _plain(getattr(self, name)) for name in self.field_names()}

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


@dataclasses.dataclass
class RunConfig(JobConfig):
    """The options every job has: hardware, workers, seed, output.

    Attributes:
        accelerator: Lightning's accelerator (``auto``: a GPU if there is one).
        devices: Lightning's devices: how many, or which (``"0,1"``).
        strategy: Lightning's strategy (``ddp``, ...).
        precision: Lightning's precision (``32-true``, ``16-mixed``, ``bf16-mixed``,
            ...); not set: ``bf16-mixed`` on a CUDA GPU that has it, else ``32-true``.
        num_workers: DataLoader workers; not set: ``min(8, CPUs - 1)``.
        seed: Seeds everything (splits, subsets, data order, augmentations,
            initialisation).
        plots: Draw the plots.
        progress_bar: Show progress bars.
        out: The output folder.
    """

    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    precision: str | None = None
    num_workers: int | None = option(rule=Range.int(0))
    seed: int = option(0, Range.int(0))
    plots: bool = True
    progress_bar: bool = True
    out: str | None = None

    def resolved_run_options(self) -> dict[str, Any]:
        """The derived values of the options above that are not set."""
        from lightly_derm.jobs.trainer import resolve_precision

        devices = self.devices
        if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
            devices = int(devices)
        return {
            "num_workers": self.num_workers
            if self.num_workers is not None
            else min(8, max(0, (os.cpu_count() or 1) - 1)),
            "devices": devices,
            "precision": resolve_precision(self.precision, self.accelerator),
        }


@dataclasses.dataclass
class TrainConfig(RunConfig):
    """The options of the jobs that train with a run folder (pretrain, segment).

    Attributes:
        checkpoint_every_n_steps: Also write ``checkpoints/last.ckpt`` every this many
            optimizer steps (0: at epoch ends only).
        checkpoint_interval_s: Write ``checkpoints/last.ckpt`` at an epoch end only
            when the last write is at least this many seconds old (0: at every epoch
            end); the last epoch is always written. Short epochs (a fine-tune on a
            few masks) would otherwise spend their time writing the full state.
        tensorboard: Write TensorBoard logs.
    """

    checkpoint_every_n_steps: int = option(200, Range.int(0))
    checkpoint_interval_s: float = option(60.0, Range(low=0.0))
    tensorboard: bool = True


def field_default(field: dataclasses.Field[Any]) -> Any:
    """The default value of a dataclass field (made by its factory if it has one)."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def cli_name(name: str) -> str:
    """The command-line spelling of an option: ``input_size`` → ``--input-size``."""
    return "--" + name.replace("_", "-")


def _without_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
    return hint


def _check_type(name: str, value: Any, hint: Any) -> None:
    """A shallow check of ``value`` against a field type (what YAML can give)."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        check_choice(name, value, typing.get_args(hint))
        return
    if origin in (typing.Union, types.UnionType):
        allowed = tuple(typing.get_origin(a) or a for a in typing.get_args(hint))
    else:
        allowed = (origin or hint,)
    if hint is Any or any(a is Any for a in allowed):
        return
    if float in allowed:
        allowed = (*allowed, int)
    if (isinstance(value, bool) and bool not in allowed) or not isinstance(
        value, allowed
    ):
        names = " or ".join(getattr(a, "__name__", str(a)) for a in allowed)
        raise ConfigError(f"{name} must be a {names}, got {value!r}")


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
        ConfigError: The file is not valid YAML or does not hold a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        content = yaml_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {path} is not valid YAML: {first}") from exc
    if content is None:
        return {}
    if not isinstance(content, Mapping):
        raise ConfigError(
            f"config file {path} must hold a mapping of option names to values, got "
            f"a {type(content).__name__}"
        )
    return dict(content)


def parse_key_values(
    items: Sequence[str] | None, what: str = "--method-args"
) -> dict[str, Any]:
    """Parses ``["lr=0.01", "grids=[8, 4, 2]"]`` into a dictionary of YAML values.

    Raises:
        ConfigError: An item has no ``=`` or an empty key.

    Example:
        >>> parse_key_values(["lr=0.01", "normalize=false", "grids=[8, 4, 2]"])
        {'lr': 0.01, 'normalize': False, 'grids': [8, 4, 2]}
    """
    result: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = str(item).partition("=")
        key = _key(key)
        if not sep or not key:
            raise ConfigError(f"{what} takes key=value pairs, got {item!r}")
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
        ConfigError: An argument is reserved or not accepted (the message names it, the
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
            raise ConfigError(f"{key!r} of {what} is set by {reserved[key]}, not here")
        if key not in valid:
            raise ConfigError(
                f"unknown argument {key!r} for {what}; "
                + close_matches_hint(key, valid)
            )
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: the names are checked, not the types
        hints = {}
    for key, value in kwargs.items():
        hint = hints.get(key)
        if hint is not None and value is not None and _is_scalar_hint(hint):
            _check_type(f"argument {key!r} of {what}", value, _without_none(hint))


def _is_scalar_hint(hint: Any) -> bool:
    """Whether ``hint`` is made of ``bool``/``int``/``float``/``str``/``None`` and literals only."""
    if typing.get_origin(hint) is typing.Literal:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return all(_is_scalar_hint(a) for a in typing.get_args(hint))
    return hint in (bool, int, float, str, type(None))
