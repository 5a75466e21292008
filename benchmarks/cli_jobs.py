"""The command-line jobs, timed: the embedded demo (pretrain → evaluate → segment) and
pretraining throughput per method.

The demo as a user runs it (synthetic data, every default), on a CPU::

    python benchmarks/cli_jobs.py --out benchmarks/results/cli_jobs_cpu.md

Pretraining throughput of every method at full size on one GPU (synthetic images, so no
data is needed; bf16-mixed is the default precision on a GPU)::

    python benchmarks/cli_jobs.py --accelerator gpu --methods gravis fgssl ap_byol simclr \\
        byol barlow_twins --backbone resnet50 --input-size 224 --synthetic-images 4096 \\
        --batch-size 64 --epochs 2 --num-workers 8 --skip-evaluate --skip-segment \\
        --out benchmarks/results/cli_jobs_cuda.md

Each job runs in this process through :mod:`lightly_derm.jobs` (what ``lightly-derm
pretrain|evaluate|segment`` run) with its output in a temporary folder. Reported per job:
wall time, process CPU time (all threads; less sensitive to other work on a shared
machine than wall time), and for pretraining the optimizer steps, the seconds inside
``Trainer.fit`` and images per second there. The load average before and after is
recorded: on a shared machine, wall times are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightly_derm.jobs import evaluate, pretrain, segment  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["gravis"])
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision")
    parser.add_argument("--backbone")
    parser.add_argument("--input-size", type=int)
    parser.add_argument("--synthetic-images", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--num-workers", type=int)
    parser.add_argument("--skip-evaluate", action="store_true")
    parser.add_argument("--skip-segment", action="store_true")
    parser.add_argument("--out", type=Path, help="Markdown file (and .json beside it)")
    return parser.parse_args(argv)


def timed(function: Any, **kwargs: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(**kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    hardware = {"accelerator": args.accelerator}
    if args.precision:
        hardware["precision"] = args.precision
    overrides = {
        k: v
        for k, v in {
            "backbone": args.backbone,
            "input_size": args.input_size,
            "synthetic_images": args.synthetic_images,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "num_workers": args.num_workers,
        }.items()
        if v is not None
    }
    report: dict[str, Any] = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0)
            if args.accelerator in ("gpu", "cuda") and torch.cuda.is_available()
            else "cpu",
            "load_average_before": os.getloadavg(),
        },
        "jobs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            run_dir = Path(tmp) / method
            result, wall, cpu = timed(
                pretrain,
                method=method,
                out=str(run_dir),
                progress_bar=False,
                verbose=False,
                **hardware,
                **overrides,
            )
            summary = result.summary
            # drop_last batches: steps_per_epoch full batches per epoch (FG-SSL takes 4
            # optimizer steps per batch, so global_step would overcount)
            batch = min(int(result.config.batch_size or 0), summary["images"])
            images = summary["steps_per_epoch"] * summary["epochs_completed"] * batch
            report["jobs"].append(
                {
                    "job": f"pretrain {method}",
                    "config": {
                        k: result.config.to_dict()[k]
                        for k in (
                            "backbone",
                            "input_size",
                            "epochs",
                            "batch_size",
                            "synthetic_images",
                            "precision",
                        )
                    },
                    "wall_s": round(wall, 1),
                    "cpu_s": round(cpu, 1),
                    "fit_s": summary["seconds"],
                    "steps": summary["global_step"],
                    "images_per_s": round(images / summary["seconds"], 1),
                    "train_loss_epoch": summary["metrics"].get("train_loss_epoch"),
                }
            )
            print(report["jobs"][-1], flush=True)
            if not args.skip_evaluate:
                scores, wall, cpu = timed(
                    evaluate,
                    checkpoint=str(run_dir),
                    progress_bar=False,
                    verbose=False,
                    **hardware,
                )
                report["jobs"].append(
                    {
                        "job": f"evaluate {method}",
                        "wall_s": round(wall, 1),
                        "cpu_s": round(cpu, 1),
                        "knn_balanced_accuracy": scores["knn"]["knn_balanced_accuracy"],
                        "linear_balanced_accuracy": scores["linear"][
                            "linear_balanced_accuracy"
                        ],
                        "finetune_balanced_accuracy": {
                            f: s["finetune_balanced_accuracy"]
                            for f, s in scores["finetune"].items()
                        },
                    }
                )
                print(report["jobs"][-1], flush=True)
            if not args.skip_segment:
                seg, wall, cpu = timed(
                    segment,
                    checkpoint=str(run_dir),
                    baseline=True,
                    progress_bar=False,
                    verbose=False,
                    **hardware,
                )
                report["jobs"].append(
                    {
                        "job": f"segment {method} (+ random-init baseline)",
                        "wall_s": round(wall, 1),
                        "cpu_s": round(cpu, 1),
                        "val_dice": {
                            k: v["val_dice"] for k, v in seg["results"].items()
                        },
                    }
                )
                print(report["jobs"][-1], flush=True)
    report["machine"]["load_average_after"] = os.getloadavg()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        args.out.write_text(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        "# lightly-derm command-line jobs, timed",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {machine['platform']}, {machine['cpus']} CPUs, torch "
        f"{machine['torch']} ({machine['torch_threads']} threads), device "
        f"{machine['device']}; load average (1, 5, 15 min) before "
        f"{tuple(round(x, 2) for x in machine['load_average_before'])}, after "
        f"{tuple(round(x, 2) for x in machine['load_average_after'])}.",
        "",
        "| job | wall s | CPU s | details |",
        "|---|---:|---:|---|",
    ]
    for job in report["jobs"]:
        details = {k: v for k, v in job.items() if k not in ("job", "wall_s", "cpu_s")}
        lines.append(
            f"| {job['job']} | {job['wall_s']} | {job['cpu_s']} | "
            f"{json.dumps(details)} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
