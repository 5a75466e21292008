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

#: (name, pretrain options) of the settings compared.
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("old: cosine τ 0.2, lr 1e-3", {"method_args": {"temperature": 0.2}}),
    ("cosine τ 0.01, lr 1e-3", {"method_args": {"temperature": 0.01}}),
    ("cosine τ 0.01, lr 0.05", {"method_args": {"temperature": 0.01, "lr": 0.05}}),
    (
        "cosine τ 0.01, lr 0.05, batch 16",
        {"method_args": {"temperature": 0.01, "lr": 0.05}, "batch_size": 16},
    ),
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
    args = parser.parse_args()
    from lightly_derm.jobs import evaluate, pretrain
    from lightly_derm.models import resnet

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        random_backbone = Path(tmp) / "random.pt"
        torch.manual_seed(0)
        torch.save(resnet("resnet18").state_dict(), random_backbone)
        random_scores = scores(
            evaluate(
                checkpoint=str(random_backbone),
                backbone="resnet18",
                out=str(Path(tmp) / "random_eval"),
                fractions=[],
                verbose=False,
            )
        )
        print("random init", random_scores, flush=True)
        chosen = args.only if args.only is not None else range(len(SETTINGS))
        for index in chosen:
            name, options = SETTINGS[index]
            out = Path(tmp) / f"run{index}"
            start, cpu = time.perf_counter(), time.process_time()
            pretrain(method="gravis", out=str(out), verbose=False, **options)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            losses = epoch_losses(out)
            knn, linear = scores(
                evaluate(
                    checkpoint=str(out),
                    out=str(out / "evaluation"),
                    fractions=[],
                    verbose=False,
                )
            )
            row = {
                "setting": name,
                "options": options,
                "losses": losses,
                "wall_s": wall,
                "cpu_s": cpu,
                "knn": knn,
                "linear": linear,
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
        "ResNet-18, 4 epochs (batch 32 unless stated). evaluate: kNN and linear probe on "
        "frozen features (balanced accuracy; chance 0.333). Random init: kNN "
        f"{random_scores[0]:.3f}, linear {random_scores[1]:.3f}.",
        "",
        "| setting | epoch train loss | pretrain wall s | CPU s | kNN | linear |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        curve = " → ".join(f"{x:.3f}" for x in row["losses"])
        lines.append(
            f"| {row['setting']} | {curve} | {row['wall_s']:.0f} | {row['cpu_s']:.0f} | "
            f"{row['knn']:.3f} | {row['linear']:.3f} |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    args.output.with_suffix(".json").write_text(
        json.dumps({"random": random_scores, "rows": rows}, indent=1) + "\n"
    )


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
