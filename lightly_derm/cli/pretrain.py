"""``lightly-derm pretrain``: pretrain any registered method (see :func:`lightly_derm.jobs.pretrain`)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from lightly_derm.cli import _options

DESCRIPTION = """\
Pretrain an encoder with any registered method plugin (lightly-derm plugins --kind
method): gravis, fgssl, ap_byol, and the lightly BYOL / SimCLR / Barlow Twins baselines.

With no --data, the data are the built-in SYNTHETIC dermoscopy-like lesions (generated
on the fly, deterministic by seed; not patient data) with small defaults that finish in
a minute or two on a laptop CPU. With --data: an image folder (searched recursively;
class subfolders give labels), an image folder with an ISIC 2016-2019 ground-truth CSV
(--labels), a MedMNIST/DermaMNIST .npz, the DermaMNIST JPEG export, or an ISIC
images/ + masks/ folder.

The run folder (--out) gets config.yaml, checkpoints/last.ckpt and best.ckpt,
metrics.csv, tensorboard/, backbone.pt (torchvision keys) and plots/.
"""

EPILOG = """\
examples:
  lightly-derm pretrain --method gravis --out runs/demo
  lightly-derm pretrain --method fgssl --data ISIC-2017_Training_Data --backbone resnet50 \\
      --epochs 100 --batch-size 64 --accelerator gpu --devices 4 --strategy ddp \\
      --precision bf16-mixed --out runs/fgssl
  lightly-derm pretrain --method ap_byol --data dermamnist.npz --method-args lambda_add=0.5
  lightly-derm pretrain --out runs/demo --resume
"""


def add_parser(subparsers: Any) -> None:
    """Adds the ``pretrain`` subcommand."""
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain an encoder with a registered method (synthetic data by default)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("method")
    group.add_argument(
        "--method", metavar="NAME", help="a registered method plugin (default: gravis)"
    )
    group.add_argument(
        "--method-args",
        dest="method_args_list",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        help="arguments of the method's constructor, values in YAML (lr=0.01 "
        "grids=[8,4,2]); checked against its signature",
    )
    group.add_argument(
        "--backbone",
        metavar="NAME",
        help="a torchvision ResNet: resnet18, resnet34, resnet50, resnet101, ... "
        "(default: resnet18 on synthetic data, else the method's: resnet50)",
    )
    group.add_argument(
        "--backbone-weights",
        metavar="PATH",
        help="start the backbone from a local checkpoint (e.g. ImageNet weights)",
    )
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        metavar="PATH",
        help="the images (default: built-in synthetic lesions)",
    )
    group.add_argument("--labels", metavar="CSV", help="a labels CSV for --data")
    _options.bool_option(
        group,
        "--strict",
        "unreadable images are an error (default: skipped with a warning)",
    )
    group.add_argument(
        "--input-size",
        type=int,
        metavar="N",
        help="view size (default 64 synthetic, 224)",
    )
    group.add_argument(
        "--decode-size",
        type=int,
        metavar="N",
        help="decode JPEGs at reduced size, shorter side >= N (default 2 x input size; "
        "0: full size)",
    )
    group.add_argument(
        "--synthetic-images",
        type=int,
        metavar="N",
        help="synthetic data: images (default 256)",
    )
    group.add_argument(
        "--synthetic-classes",
        type=int,
        metavar="N",
        help="synthetic data: classes, 1-5 (default 3)",
    )
    group.add_argument(
        "--num-workers",
        type=int,
        metavar="N",
        help="DataLoader workers (default: 0 synthetic, else min(8, CPUs - 1))",
    )
    group.add_argument(
        "--augment",
        choices=("cpu", "gpu"),
        help="where the views are made: cpu (DataLoader workers, default) or gpu "
        "(batched on the device after the transfer; the workers only decode and resize)",
    )
    _options.bool_option(
        group,
        "--cache-images",
        "with --augment gpu: decode and resize every image once and keep it in memory "
        "(small datasets; default off)",
    )
    group = parser.add_argument_group("training")
    group.add_argument(
        "--epochs", type=int, metavar="N", help="default 4 synthetic, else 100"
    )
    group.add_argument(
        "--max-steps", type=int, metavar="N", help="stop after N optimizer steps"
    )
    group.add_argument(
        "--batch-size", type=int, metavar="N", help="images per step per device (32)"
    )
    group.add_argument("--seed", type=int, metavar="N", help="default 0")
    _options.add_hardware_options(parser)
    group = parser.add_argument_group("output")
    group.add_argument("--out", metavar="DIR", help="the run folder (runs/<method>)")
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from checkpoints/last.ckpt with its config",
    )
    group.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run in --out"
    )
    group.add_argument(
        "--checkpoint-every-n-steps",
        type=int,
        metavar="N",
        help="also write last.ckpt every N steps (default 200; 0: epoch ends only)",
    )
    group.add_argument(
        "--log-every-n-steps", type=int, metavar="N", help="logging interval"
    )
    _options.bool_option(group, "--plots", "draw plots/*.png (default on)")
    group.add_argument(
        "--embedding-images",
        type=int,
        metavar="N",
        help="images in the embedding plot (default 1000; 0: none)",
    )
    _options.bool_option(group, "--progress-bar", "Lightning's progress bar (on)")
    _options.bool_option(group, "--tensorboard", "TensorBoard logs (default on)")
    _options.add_config_options(parser)
    _options.add_debug_option(parser)
    parser.set_defaults(run=run)


def file_values(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--config`` file's options; ``method: {name: ..., <arg>: ...}`` is accepted."""
    values = _options.read_config_file(args)
    method = values.get("method")
    if isinstance(method, Mapping):
        method = dict(method)
        if "name" not in method:
            raise ValueError(
                f"config file {args.config}: a method mapping needs a 'name' (and the "
                "method's arguments beside it)"
            )
        values["method"] = method.pop("name")
        values["method_args"] = {**method, **dict(values.get("method_args") or {})}
    return values


def build_config(args: argparse.Namespace) -> Any:
    """The :class:`~lightly_derm.jobs.PretrainConfig` of the command line (not resolved)."""
    from lightly_derm.jobs import PretrainConfig
    from lightly_derm.jobs.config import parse_key_values

    config = _options.job_config(PretrainConfig, args, file_values(args))
    if args.method_args_list:
        extra = parse_key_values(args.method_args_list, "--method-args")
        config.method_args = {**(config.method_args or {}), **extra}
    return config


def run(args: argparse.Namespace) -> int:
    """Runs (or, with ``--print_config``, prints) the pretraining job."""
    from lightly_derm.jobs.pretrain import pretrain, resolve_config, resume_config

    config = build_config(args)
    if args.print_config:
        resolved = resume_config(config) if args.resume else resolve_config(config)
        print(resolved.to_yaml(), end="")
        return 0
    pretrain(config, resume=args.resume, overwrite=args.overwrite)
    return 0
