"""The ``lightly-derm`` command line: ``pretrain``, ``evaluate``, ``segment``, ``plugins``.

Builds on jsonargparse (the engine under LightningCLI). The job subcommands are
generated from the configuration dataclasses of :mod:`lightly_derm.jobs`
(:mod:`lightly_derm.cli.options`), so every option is declared once, as a typed field,
and the command line, ``--config`` files, ``--print-config``, the help and the docs'
option tables all follow from it; the work is done by the job functions
(:func:`~lightly_derm.jobs.pretrain`, :func:`~lightly_derm.jobs.evaluate`,
:func:`~lightly_derm.jobs.segment`), so the command line is a thin layer over them.
jsonargparse was chosen over LightningCLI because the jobs are not one
``Trainer.fit`` of one model and data module: they choose defaults from the data (the
presets), run several fits (evaluate, segment) and keep a run folder.

Bad input prints one line (``lightly-derm pretrain: error: ...``) and exits with status
2: a value the parser rejects, and an error of lightly-derm's own checks
(:class:`~lightly_derm.errors.LightlyDermError`, and ``ValueError``/``TypeError``/file
errors raised directly by lightly-derm's code). Anything else — a ``KeyError``, an
error raised inside torch or Lightning — is a bug and keeps its traceback;
``--debug`` (or ``LIGHTLY_DERM_DEBUG=1``) shows the traceback of every error.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser

from lightly_derm._version import __version__
from lightly_derm.cli import plugins
from lightly_derm.cli.options import (
    HelpFormatter,
    add_flags,
    add_options,
    command_line_values,
    normalize_argv,
)
from lightly_derm.errors import LightlyDermError

#: Environment variable that makes errors show their traceback.
ENV_DEBUG = "LIGHTLY_DERM_DEBUG"


class CLIError(LightlyDermError):
    """An error to show the user as one line, without a traceback."""


@dataclasses.dataclass(frozen=True)
class Command:
    """A job subcommand: its job function, configuration class and texts.

    Attributes:
        name: The subcommand.
        summary: One line for ``lightly-derm --help``.
        description: What the job does (its options are generated).
        examples: Example command lines.
        job: ``"module:function"`` of the job function (imported when used).
        config: ``"module:Class"`` of its configuration.
    """

    name: str
    summary: str
    description: str
    examples: str
    job: str
    config: str

    def load(self) -> tuple[Callable[..., Any], Any]:
        """The job function and the configuration class."""
        import importlib

        module, function = self.job.split(":")
        config_module, config_class = self.config.split(":")
        return (
            getattr(importlib.import_module(module), function),
            getattr(importlib.import_module(config_module), config_class),
        )


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command(
            name="pretrain",
            summary="pretrain an encoder with a registered method (synthetic data by "
            "default)",
            description="Pretrain an encoder with any registered method plugin "
            "(lightly-derm plugins --kind method).\n"
            "Without --data: the built-in SYNTHETIC lesions (not patient data) and the "
            "demo preset, a minute or two on a laptop CPU.\nThe run folder (--out) gets "
            "config.yaml, checkpoints/last.ckpt and best.ckpt, metrics.csv, "
            "tensorboard/, backbone.pt and plots/.",
            examples="""\
  lightly-derm pretrain --method gravis --out runs/demo
  lightly-derm pretrain --method fgssl --data ISIC-2017_Training_Data --backbone resnet50 \\
      --epochs 100 --batch-size 64 --accelerator gpu --devices 4 --strategy ddp \\
      --precision bf16-mixed --out runs/fgssl
  lightly-derm pretrain --method ap_byol --data dermamnist.npz --method-args lambda_add=0.5
  lightly-derm pretrain --out runs/demo --resume""",
            job="lightly_derm.jobs.pretrain:pretrain",
            config="lightly_derm.jobs.pretrain:PretrainConfig",
        ),
        Command(
            name="evaluate",
            summary="kNN, linear probe and low-label fine-tuning of a pretrained "
            "backbone",
            description="Evaluate a pretrained backbone on labelled data: a weighted kNN "
            "and a linear probe on frozen features, and fine-tuning on labelled "
            "fractions.\nReports accuracy, balanced accuracy and (two classes) ROC AUC "
            "as results.json and results.md.",
            examples="""\
  lightly-derm evaluate --checkpoint runs/demo
  lightly-derm evaluate --checkpoint runs/gravis --data dermamnist.npz --fractions 0.01 0.1 1
  lightly-derm evaluate --checkpoint runs/gravis/backbone.pt --data ISIC-2017_Training_Data \\
      --labels ISIC-2017_Training_Part3_GroundTruth.csv --task melanoma""",
            job="lightly_derm.jobs.evaluate:evaluate",
            config="lightly_derm.jobs.evaluate:EvaluateConfig",
        ),
        Command(
            name="segment",
            summary="fine-tune lesion segmentation (MONAI FlexibleUNet) from an SSL "
            "checkpoint",
            description="Fine-tune a MONAI FlexibleUNet whose encoder starts from the "
            "backbone of an SSL checkpoint, and report Dice, Jaccard and the ISIC 2017 "
            "thresholded Jaccard (results.json, results.md), with overlays.",
            examples="""\
  lightly-derm segment --checkpoint runs/demo
  lightly-derm segment --checkpoint runs/gravis --data isic2017 --label-fraction 0.1 \\
      --epochs 50 --input-size 256 --baseline --accelerator gpu --precision bf16-mixed
  lightly-derm segment --checkpoint runs/gravis --data isic2017 --folds 5""",
            job="lightly_derm.jobs.segment:segment",
            config="lightly_derm.jobs.segment:SegmentConfig",
        ),
    )
}


def _debug_option(parser: Any) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        default=None,
        help=f"show the full traceback of an error (or set {ENV_DEBUG}=1)",
    )


def command_parser(command: Command) -> ArgumentParser:
    """The parser of one job subcommand, generated from its configuration class."""
    job, config_cls = command.load()
    parser = ArgumentParser(
        description=command.description,
        epilog="examples:\n" + command.examples,
        formatter_class=HelpFormatter,
    )
    group = parser.add_argument_group("configuration")
    group.add_argument(
        "--config",
        metavar="FILE",
        type=str,
        default=None,
        help="a YAML file of options (keys as below, with _); options given on the "
        "command line override it",
    )
    group.add_argument(
        "--print-config",
        dest="print_config",
        action="store_true",
        default=None,
        help="print the effective configuration as YAML (every default filled in) and "
        "exit; save it and pass it back with --config",
    )
    add_flags(group, job)
    _debug_option(group)
    add_options(parser, config_cls)
    return parser


def build_parser(only: str | None = None) -> ArgumentParser:
    """Returns the ``lightly-derm`` argument parser with all subcommands.

    Args:
        only: Build the options of this subcommand only (the others get a stub that
            lists them in ``--help``), so ``lightly-derm --help`` and
            ``lightly-derm plugins`` do not import the jobs (and torch).
    """
    parser = ArgumentParser(
        prog="lightly-derm",
        description="Self-supervised learning for dermatology images: pretrain an "
        "encoder, evaluate it, fine-tune lesion segmentation.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    _debug_option(parser)
    subcommands = parser.add_subcommands(required=True, dest="command")
    for command in COMMANDS.values():
        subparser = (
            command_parser(command)
            if only in (None, command.name)
            else ArgumentParser(description=command.summary)
        )
        subcommands.add_subcommand(command.name, subparser, help=command.summary)
    subcommands.add_subcommand("plugins", plugins.parser(), help=plugins.SUMMARY)
    return parser


def run_command(command: Command, values: dict[str, Any]) -> int:
    """Runs (or, with ``print_config``, prints) a job from the parsed values."""
    from lightly_derm.jobs.config import load_yaml_mapping

    job, config_cls = command.load()
    values = {k: v for k, v in values.items() if v is not None and k != "debug"}
    path = values.pop("config", None)
    print_config = bool(values.pop("print_config", False))
    flags = {
        k: values.pop(k) for k in list(values) if k not in config_cls.field_names()
    }
    given: dict[str, Any] = {}
    if path is not None:
        given = config_cls.normalize(load_yaml_mapping(path), f"config file {path}")
    for name, value in command_line_values(values, config_cls).items():
        if isinstance(value, dict) and isinstance(given.get(name), dict):
            value = {**given[name], **value}  # method arguments of both are merged
        given[name] = value
    if print_config:
        config = config_cls().updated(given)
        if flags.get("resume"):
            from lightly_derm.jobs.pretrain import resume_config

            resolved = resume_config(config, given)
        else:
            resolved = config.resolved()
        print(resolved.to_yaml(), end="")
        return 0
    job(given, **flags)
    return 0


def _raised_by_lightly_derm(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc`` is lightly-derm's code (its own check)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    package = Path(__file__).resolve().parents[1]
    return Path(frames[-1].filename).resolve().is_relative_to(package)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` means bad input (shown as one line) rather than a bug."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from lightly_derm.plugins.errors import UnknownComponentError

    if isinstance(
        exc, (LightlyDermError, UnknownComponentError, MisconfigurationException)
    ):
        return True
    from lightly_derm.data.image_io import UnreadableImageError

    if isinstance(exc, UnreadableImageError):
        return True
    # a check of lightly-derm's own code that raises a plain ValueError/TypeError or a
    # file error; a KeyError (or anything else) is a bug and keeps its traceback
    return isinstance(
        exc, (ValueError, TypeError, OSError)
    ) and _raised_by_lightly_derm(exc)


def error_message(exc: BaseException) -> str:
    """One line for an exception: its message (a DataLoader worker's original error)."""
    from lightly_derm.plugins.errors import UnknownComponentError

    if isinstance(exc, KeyError) and not isinstance(exc, UnknownComponentError):
        text = str(exc.args[0]) if exc.args else type(exc).__name__
    else:
        text = str(exc) or type(exc).__name__
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) > 1 and any("Traceback" in line for line in lines):
        # torch re-raises errors of DataLoader workers with the worker's traceback in
        # the message; its last line is the original error
        return lines[-1]
    return " ".join(lines)


#: Exit statuses of a run stopped by a signal (128 + the signal's number, as a shell).
EXIT_SIGINT = 130
EXIT_SIGPIPE = 141
EXIT_SIGTERM = 143


def _plugin_warnings_once(show: Callable[..., None]) -> Callable[..., None]:
    """``warnings.showwarning`` that prints each plugin warning once, as one line."""
    from lightly_derm.plugins.errors import PluginLoadWarning

    seen: set[str] = set()

    def showwarning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if not issubclass(category, PluginLoadWarning):
            show(message, category, filename, lineno, file, line)
            return
        text = str(message)
        if text not in seen:
            seen.add(text)
            print(f"lightly-derm: warning: {text}", file=sys.stderr)

    return showwarning


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line and returns the exit status.

    Bad input: 2. Ctrl+C (outside training, which exits on its own): 130. A closed
    output pipe (``lightly-derm plugins | head -2``): 141, quietly, as ``ls | head``.
    """
    from lightly_derm.jobs.console import set_command_line

    set_command_line(True)
    original = warnings.showwarning
    warnings.showwarning = _plugin_warnings_once(original)
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # the reader went away: send the rest of the output nowhere
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_SIGPIPE
    except KeyboardInterrupt:
        print("\nlightly-derm: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    finally:
        set_command_line(False)
        warnings.showwarning = original


def _main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get(ENV_DEBUG, "").strip().lower() in (
        "1",
        "true",
        "yes",
    )
    args = [a for a in args if a != "--debug"]
    name = next((a for a in args if not a.startswith("-")), "")
    command = COMMANDS.get(name)
    try:
        if command is not None:
            args = normalize_argv(args, command.load()[1])
        namespace = build_parser(only=name).parse_args(args, defaults=False)
        values = namespace[namespace.command].as_dict()
        if command is None:
            return plugins.run(values)
        return run_command(command, values)
    except BrokenPipeError:
        raise
    except Exception as exc:
        if debug or not is_user_error(exc):
            raise
        print(f"lightly-derm {name}: error: {error_message(exc)}", file=sys.stderr)
        return 2


__all__ = [
    "COMMANDS",
    "CLIError",
    "EXIT_SIGINT",
    "EXIT_SIGPIPE",
    "EXIT_SIGTERM",
    "Command",
    "build_parser",
    "command_parser",
    "error_message",
    "is_user_error",
    "main",
    "run_command",
]
