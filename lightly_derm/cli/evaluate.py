"""``lightly-derm evaluate``: kNN, linear probe and low-label fine-tuning (see :func:`lightly_derm.jobs.evaluate`)."""

from __future__ import annotations

import argparse
from typing import Any

from lightly_derm.cli import _options

DESCRIPTION = """\
Evaluate a pretrained backbone on labelled data: a weighted kNN and a linear probe on
frozen features, and fine-tuning on labelled fractions (1 %, 10 %, 100 % by default).
Reports accuracy, balanced accuracy and (two classes) ROC AUC as results.json and a
Markdown table (results.md).

--checkpoint takes a pretrain run folder, a Lightning checkpoint of any method, or a
backbone state dict. The data are split as the source defines (MedMNIST/DermaMNIST,
train/ + test/ folders: fit on train, score on test), else by a seeded stratified split
(--test-fraction). With no --data: the built-in SYNTHETIC lesions (not patient data).
"""

EPILOG = """\
examples:
  lightly-derm evaluate --checkpoint runs/demo
  lightly-derm evaluate --checkpoint runs/gravis --data dermamnist.npz --fractions 0.01 0.1 1
  lightly-derm evaluate --checkpoint runs/gravis/backbone.pt --data ISIC-2017_Training_Data \\
      --labels ISIC-2017_Training_Part3_GroundTruth.csv --task melanoma
"""


def add_parser(subparsers: Any) -> None:
    """Adds the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="kNN, linear probe and low-label fine-tuning of a pretrained backbone",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("model")
    group.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="a run folder or checkpoint file (required)",
    )
    group.add_argument(
        "--backbone", metavar="NAME", help="the ResNet (default: from the checkpoint)"
    )
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data", metavar="PATH", help="labelled images (default: synthetic lesions)"
    )
    group.add_argument("--labels", metavar="CSV", help="a labels CSV for --data")
    group.add_argument(
        "--task",
        metavar="CLASS",
        help="one class of the CSV as a binary one-vs-rest task (e.g. melanoma)",
    )
    group.add_argument(
        "--input-size",
        type=int,
        metavar="N",
        help="image side (default: the pretraining run's, else 224)",
    )
    group.add_argument(
        "--test-fraction",
        type=float,
        metavar="F",
        help="held-out share for data without splits (default 0.2)",
    )
    _options.bool_option(group, "--strict", "unreadable images are an error")
    group.add_argument("--decode-size", type=int, metavar="N", help="JPEG decode size")
    group.add_argument(
        "--synthetic-images",
        type=int,
        metavar="N",
        help="synthetic training images (512)",
    )
    group.add_argument(
        "--synthetic-test-images",
        type=int,
        metavar="N",
        help="synthetic test images (256)",
    )
    group.add_argument(
        "--synthetic-classes",
        type=int,
        metavar="N",
        help="synthetic classes (run's, 3)",
    )
    group.add_argument(
        "--num-workers", type=int, metavar="N", help="DataLoader workers"
    )
    group = parser.add_argument_group("protocols")
    group.add_argument(
        "--fractions",
        type=float,
        nargs="*",
        metavar="F",
        help="labelled fractions to fine-tune on (default 0.01 0.1 1; none: skip)",
    )
    group.add_argument("--knn-k", type=int, metavar="K", help="kNN neighbours (20)")
    group.add_argument(
        "--knn-temperature", type=float, metavar="T", help="kNN temperature (0.1)"
    )
    group.add_argument(
        "--linear-weight-decay", type=float, metavar="L", help="linear probe L2 (1e-3)"
    )
    group.add_argument(
        "--finetune-epochs", type=int, metavar="N", help="default 20 (3 synthetic)"
    )
    group.add_argument(
        "--finetune-batch-size", type=int, metavar="N", help="default 64"
    )
    group.add_argument(
        "--finetune-lr", type=float, metavar="LR", help="base learning rate (0.05)"
    )
    group.add_argument(
        "--batch-size", type=int, metavar="N", help="feature-pass batch size (256)"
    )
    group.add_argument("--seed", type=int, metavar="N", help="default 0")
    _options.add_hardware_options(parser)
    group = parser.add_argument_group("output")
    group.add_argument(
        "--out", metavar="DIR", help="default: <run folder>/evaluation, else evaluation"
    )
    _options.bool_option(group, "--plots", "draw plots/embedding.png (default on)")
    _options.bool_option(group, "--progress-bar", "progress bars (default on)")
    _options.add_config_options(parser)
    _options.add_debug_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Runs (or, with ``--print_config``, prints) the evaluation job."""
    from lightly_derm.jobs.evaluate import (
        EvaluateConfig,
        evaluate,
        resolve_evaluate_config,
    )

    config = _options.job_config(EvaluateConfig, args, _options.read_config_file(args))
    if args.print_config:
        print(resolve_evaluate_config(config).to_yaml(), end="")
        return 0
    evaluate(config)
    return 0
