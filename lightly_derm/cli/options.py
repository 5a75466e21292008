"""The command-line options of a job, generated from its configuration dataclass.

Builds on jsonargparse (the engine under LightningCLI): each field of a
:class:`~lightly_derm.jobs.config.JobConfig` becomes one option of a
:class:`jsonargparse.ArgumentParser`, typed by the field's annotation (jsonargparse
checks the value: ``--epochs many`` is an error that names the option), with the help
text of the field's docstring entry, its rule and its default or preset values. The
same rows make the option tables of the docs (:func:`option_rows`, rendered by the
``lightly-derm-options`` Sphinx directive), so the help, the docs and the behaviour
cannot disagree.

Spellings: options are written with dashes (``--input-size``) as YAML keys are written
with underscores (``input_size``); either is read on the command line. Booleans are
``--plots``/``--no-plots``, lists take several values (``--fractions 0.1 1``), and
mappings take ``key=value`` pairs with YAML values (``--method-args lr=0.01``).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import yaml
from jsonargparse import ActionYesNo, ArgumentParser, DefaultHelpFormatter

if typing.TYPE_CHECKING:  # the jobs import torch; ``lightly-derm --help`` need not
    from lightly_derm.jobs.config import JobConfig


class HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help formatter, with descriptions kept as written.

    The help texts of :func:`option_help` are used as they are (they already say the
    rule and the default).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help or ""


def _type_text(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return f"{_type_text(item)} ..."
    if origin is dict:
        return "key=value ..."
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint))


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, dict)):
        text: str = yaml.safe_dump(value, default_flow_style=True).strip()
        return text
    return str(value)


def option_rows(config_cls: type[JobConfig]) -> list[dict[str, str]]:
    """One row per option: ``option``, ``type``, ``default``, ``demo`` and ``help``.

    ``default`` is the field's default (or the ``data`` preset's value), ``demo`` the
    value of the ``demo`` preset where it differs; the help is the field's docstring
    entry with its rule.

    Example:
        >>> from lightly_derm.jobs.pretrain import PretrainConfig
        >>> row = next(r for r in option_rows(PretrainConfig) if r["option"] == "--epochs")
        >>> row["default"], row["demo"]
        ('100', '8')
    """
    from lightly_derm.jobs.config import cli_name, field_default

    docs = config_cls.field_docs()
    types = config_cls.field_types()
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    presets = config_cls.PRESETS
    rows = []
    for name in config_cls.field_names():
        f = fields[name]
        default = field_default(f)
        if default is None:
            default = presets.get("data", {}).get(name)
        demo = presets.get("demo", {}).get(name, default)
        help_text = docs.get(name, "")
        if "range" in f.metadata:
            help_text += f" [{f.metadata['range']}]"
        if "only" in f.metadata:
            help_text += f" [only with {config_cls.preset_help()[f.metadata['only']]}]"
        if "needs" in f.metadata:
            help_text += f" [needs {cli_name(f.metadata['needs'])}]"
        rows.append(
            {
                "name": name,
                "option": cli_name(name),
                "type": _type_text(types[name]),
                "default": "" if default is None else _value_text(default),
                "demo": "" if demo == default or demo is None else _value_text(demo),
                "help": help_text,
            }
        )
    return rows


def plain_text(text: str) -> str:
    """ReST markup made plain for a terminal: ``x`` → x, :func:`~a.b` → b.

    Example:
        >>> plain_text("see :func:`~lightly_derm.data.make_dataset`, ``auto``")
        'see make_dataset, auto'
    """
    text = re.sub(r":[a-z]+:`~?([^`]*?)`", lambda m: m.group(1).split(".")[-1], text)
    return text.replace("``", "").replace("%", "%%")


def option_help(row: dict[str, str]) -> str:
    """The ``--help`` text of one row of :func:`option_rows`."""
    default = []
    if row["default"]:
        default.append(f"default: {row['default']}")
    if row["demo"]:
        default.append(f"demo: {row['demo']}")
    suffix = f" ({'; '.join(default)})" if default else ""
    return plain_text(row["help"] + suffix)


def add_options(parser: ArgumentParser, config_cls: type[JobConfig]) -> None:
    """Adds one option per field of ``config_cls`` to ``parser``.

    Every option defaults to ``None``: the values not given stay unset, so the presets
    fill them and ``--resume`` knows what was given.
    """
    types = config_cls.field_types()
    group = parser.add_argument_group("options (also the keys of --config files)")
    for row in option_rows(config_cls):
        name, hint = row["name"], types[row["name"]]
        origin = typing.get_origin(hint)
        kwargs: dict[str, Any] = {
            "dest": name,
            "default": None,
            "help": option_help(row),
        }
        if hint is bool:
            kwargs["action"] = ActionYesNo(no_prefix="no-")
        elif origin is list:
            kwargs.update(type=typing.get_args(hint)[0], nargs="*")
        elif origin is dict:
            kwargs.update(type=str, nargs="+", action="extend", metavar="KEY=VALUE")
        else:
            kwargs["type"] = hint
            kwargs["metavar"] = name.upper() if origin is not typing.Literal else None
            if kwargs["metavar"] is None:
                del kwargs["metavar"]
        group.add_argument(row["option"], **kwargs)


def add_flags(parser: Any, function: Callable[..., Any]) -> list[str]:
    """Adds ``--name`` for each keyword-only ``bool`` parameter of a job function.

    ``resume``, ``overwrite`` (not ``verbose``), helped by the function's docstring.
    Returns their names.
    """
    import inspect

    import docstring_parser

    from lightly_derm.jobs.config import cli_name

    docs = {
        p.arg_name: " ".join((p.description or "").split())
        for p in docstring_parser.parse(inspect.getdoc(function) or "").params
    }
    names = []
    for parameter in inspect.signature(function).parameters.values():
        if (
            parameter.kind is inspect.Parameter.KEYWORD_ONLY
            and parameter.default is False
            and parameter.name != "verbose"
        ):
            parser.add_argument(
                cli_name(parameter.name),
                dest=parameter.name,
                action="store_true",
                default=None,
                help=plain_text(docs.get(parameter.name, "")),
            )
            names.append(parameter.name)
    return names


def normalize_argv(argv: Sequence[str], config_cls: type[JobConfig]) -> list[str]:
    """The command line with the options spelled as the parser has them.

    ``--input_size`` is read as ``--input-size``, ``--print_config`` as
    ``--print-config``; an old option name (``config_cls.RENAMED``) is read as the new
    one with a ``FutureWarning``.
    """
    from lightly_derm.jobs.config import cli_name

    renamed = {cli_name(old): cli_name(new) for old, new in config_cls.RENAMED.items()}
    result = []
    for token in argv:
        if token.startswith("--") and len(token) > 2:
            head, sep, tail = token.partition("=")
            key, dot, rest = head.partition(".")
            key = key.replace("_", "-")
            if key in renamed:
                warnings.warn(
                    f"{key} is deprecated; it is now called {renamed[key]} (the old "
                    "name is read for one release)",
                    FutureWarning,
                    stacklevel=2,
                )
                key = renamed[key]
            token = key + dot + rest + sep + tail
        result.append(token)
    return result


def command_line_values(
    values: dict[str, Any], config_cls: type[JobConfig]
) -> dict[str, Any]:
    """The options given on the command line, as option values.

    The ``key=value`` lists of mapping options become mappings.
    """
    from lightly_derm.jobs.config import cli_name, parse_key_values

    types = config_cls.field_types()
    given = {}
    for name, value in values.items():
        if value is None:
            continue
        if typing.get_origin(types.get(name)) is dict and isinstance(value, list):
            value = parse_key_values(value, cli_name(name))
        given[name] = value
    return given


__all__ = [
    "HelpFormatter",
    "add_flags",
    "add_options",
    "command_line_values",
    "normalize_argv",
    "option_help",
    "option_rows",
]
