"""``lightly-derm segment``: fine-tune lesion segmentation from an SSL checkpoint (see :func:`lightly_derm.jobs.segment`)."""

from __future__ import annotations

import argparse
from typing import Any

from lightly_derm.cli import _options

DESCRIPTION = """\
Fine-tune a MONAI FlexibleUNet whose encoder starts from the backbone of an SSL
checkpoint (a pretrain run folder, a Lightning checkpoint or a backbone state dict), and
report Dice, Jaccard and the ISIC 2017 thresholded Jaccard of the validation images
(results.json, results.md), with overlays of predictions and ground truth.

--data is an ISIC folder: images/ + masks/, the official ISIC 2016-2018 Task 1 folders,
or one folder holding both (masks <id>_segmentation.png). With no --data: the built-in
SYNTHETIC lesions with masks (not patient data).
"""

EPILOG = """\
examples:
  lightly-derm segment --checkpoint runs/demo
  lightly-derm segment --checkpoint runs/gravis --data isic2017 --label-fraction 0.1 \\
      --epochs 50 --image-size 256 --baseline --accelerator gpu --precision bf16-mixed
  lightly-derm segment --checkpoint runs/gravis --data isic2017 --folds 5
"""


def add_parser(subparsers: Any) -> None:
    """Adds the ``segment`` subcommand."""
    parser = subparsers.add_parser(
        "segment",
        help="fine-tune lesion segmentation (MONAI FlexibleUNet) from an SSL checkpoint",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("model")
    group.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="SSL run folder or checkpoint (default: a random encoder)",
    )
    group.add_argument(
        "--backbone",
        metavar="NAME",
        help="resnet18, resnet34 or resnet50 (default: the checkpoint's)",
    )
    group.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        help="also fine-tune from a random encoder, same data and seed",
    )
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data", metavar="DIR", help="an ISIC folder (default: synthetic lesions)"
    )
    group.add_argument(
        "--test-data", metavar="DIR", help="an ISIC folder scored once at the end"
    )
    group.add_argument(
        "--image-size", type=int, metavar="N", help="default 256 (64 synthetic)"
    )
    group.add_argument(
        "--label-fraction",
        type=float,
        metavar="F",
        help="share of the training masks used (default 1)",
    )
    group.add_argument(
        "--val-fraction", type=float, metavar="F", help="validation share (0.2)"
    )
    group.add_argument(
        "--folds", type=int, metavar="K", help="k-fold cross-validation instead"
    )
    group.add_argument("--limit", type=int, metavar="N", help="use the first N pairs")
    group.add_argument(
        "--cache-rate", type=float, metavar="F", help="share of pairs cached (0)"
    )
    group.add_argument(
        "--synthetic-images",
        type=int,
        metavar="N",
        help="synthetic training images (128)",
    )
    group.add_argument(
        "--synthetic-val-images",
        type=int,
        metavar="N",
        help="synthetic validation images (48)",
    )
    group.add_argument(
        "--num-workers", type=int, metavar="N", help="DataLoader workers"
    )
    group = parser.add_argument_group("training")
    group.add_argument(
        "--epochs", type=int, metavar="N", help="default 20 (3 synthetic)"
    )
    group.add_argument("--batch-size", type=int, metavar="N", help="default 16")
    group.add_argument("--lr", type=float, metavar="LR", help="decoder lr (1e-3)")
    group.add_argument(
        "--encoder-lr", type=float, metavar="LR", help="encoder lr (default --lr)"
    )
    group.add_argument(
        "--freeze-encoder-epochs",
        type=int,
        metavar="N",
        help="train only the decoder for N epochs first (0)",
    )
    group.add_argument("--seed", type=int, metavar="N", help="default 0")
    _options.add_hardware_options(parser)
    group = parser.add_argument_group("output")
    group.add_argument(
        "--out", metavar="DIR", help="default: <run folder>/segmentation"
    )
    group.add_argument(
        "--overwrite", action="store_true", help="replace earlier results in --out"
    )
    group.add_argument(
        "--checkpoint-every-n-steps",
        type=int,
        metavar="N",
        help="also write last.ckpt every N steps (200)",
    )
    _options.bool_option(group, "--plots", "loss curves and overlays (default on)")
    _options.bool_option(group, "--progress-bar", "Lightning's progress bar (on)")
    _options.bool_option(group, "--tensorboard", "TensorBoard logs (default on)")
    _options.add_config_options(parser)
    _options.add_debug_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Runs (or, with ``--print_config``, prints) the segmentation job."""
    from lightly_derm.jobs.segment import SegmentConfig, resolve_segment_config, segment

    config = _options.job_config(SegmentConfig, args, _options.read_config_file(args))
    if args.print_config:
        print(resolve_segment_config(config).to_yaml(), end="")
        return 0
    segment(config, overwrite=args.overwrite)
    return 0
