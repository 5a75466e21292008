"""The demo's defaults: does ``lightly-derm pretrain`` on synthetic lesions visibly learn?

Runs :func:`lightly_derm.jobs.pretrain` on the built-in synthetic lesions (GraVIS,
ResNet-18) with the demo options under test, then :func:`lightly_derm.jobs.evaluate`
(kNN and linear probe on frozen features, no fine-tuning) on the pretrained backbone and
on a randomly initialised one, and reports per setting: the first and last epoch's
train loss, the pretraining time (wall and process CPU) and the balanced accuracies.

    OMP_NUM_THREADS=2 python benchmarks/demo_defaults.py \\
        --output benchmarks/results/demo_defaults_cpu.md
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

#: (name, pretrain options) of the settings compared; the demo's own defaults (the demo
#: preset of :class:`~lightly_derm.jobs.PretrainConfig` and ``DEMO_METHOD_ARGS``) are
#: the first.
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("demo defaults: batch 16, 8 epochs, lr 0.05", {}),
    ("old schedule: batch 32, 4 epochs, lr 0.05", {"batch_size": 32, "epochs": 4}),
    ("batch 16, 8 epochs, lr 0.1", {"method_args": {"lr": 0.1}}),
    ("batch 16, 16 epochs, lr 0.05", {"epochs": 16}),
]


def epoch_losses(out: Path) -> list[float]:
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    key = "train_loss_epoch" if rows and "train_loss_epoch" in rows[0] else "train_loss"
    return [float(r[key]) for r in rows if r.get(key)]


def scores(result: dict[str, Any]) -> tuple[float, float]:
    return (
        float(result["knn"]["knn_balanced_accuracy"]),
        float(result["linear"]["linear_balanced_accuracy"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--only", type=int, nargs="*", help="indices of SETTINGS")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="data and training seeds"
    )
    args = parser.parse_args()
    from lightly_derm.jobs import evaluate, pretrain
    from lightly_derm.models import resnet

    rows = []
    random_scores: dict[int, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            random_backbone = Path(tmp) / f"random{seed}.pt"
            torch.manual_seed(seed)
            torch.save(resnet("resnet18").state_dict(), random_backbone)
            random_scores[seed] = scores(
                evaluate(
                    checkpoint=str(random_backbone),
                    backbone="resnet18",
                    out=str(Path(tmp) / f"random_eval{seed}"),
                    fractions=[],
                    seed=seed,
                    verbose=False,
                )
            )
            print("random init, seed", seed, random_scores[seed], flush=True)
        chosen = args.only if args.only is not None else range(len(SETTINGS))
        for index in chosen:
            for seed in args.seeds:
                name, options = SETTINGS[index]
                out = Path(tmp) / f"run{index}_{seed}"
                start, cpu = time.perf_counter(), time.process_time()
                pretrain(
                    method="gravis", out=str(out), seed=seed, verbose=False, **options
                )
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                losses = epoch_losses(out)
                knn, linear = scores(
                    evaluate(
                        checkpoint=str(out),
                        out=str(out / "evaluation"),
                        fractions=[],
                        seed=seed,
                        verbose=False,
                    )
                )
                row = {
                    "setting": name,
                    "options": options,
                    "seed": seed,
                    "losses": losses,
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "knn": knn,
                    "linear": linear,
                    "random_knn": random_scores[seed][0],
                    "random_linear": random_scores[seed][1],
                }
                rows.append(row)
                print(row, flush=True)
    command = "OMP_NUM_THREADS=2 python " + " ".join(shlex.quote(a) for a in sys.argv)
    lines = [
        "# Demo defaults: GraVIS on the built-in synthetic lesions",
        "",
        f"Command: `{command}`",
        "",
        f"Device: cpu ({platform.machine()}, {torch.get_num_threads()} threads, shared); "
        f"torch {torch.__version__}. pretrain: 256 synthetic images, 3 classes, 64 px, "
        "ResNet-18 (the demo's defaults unless stated). evaluate: kNN and linear probe "
        "on frozen features of 512 training and 256 test images (balanced accuracy; "
        "chance 0.333), for the pretrained backbone and a random-init ResNet-18; the "
        "seed sets the synthetic images, the training and the random init.",
        "",
        "| setting | seed | epoch train loss | pretrain wall s | CPU s | kNN (random) "
        "| linear (random) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        curve = " → ".join(f"{x:.3f}" for x in row["losses"])
        lines.append(
            f"| {row['setting']} | {row['seed']} | {curve} | {row['wall_s']:.0f} | "
            f"{row['cpu_s']:.0f} | {row['knn']:.3f} ({row['random_knn']:.3f}) | "
            f"{row['linear']:.3f} ({row['random_linear']:.3f}) |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    args.output.with_suffix(".json").write_text(
        json.dumps({"random": random_scores, "rows": rows}, indent=1) + "\n"
    )


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
