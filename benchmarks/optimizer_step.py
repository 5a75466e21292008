"""Optimiser steps: PyTorch's default against its fused kernels, and a whole training step.

The package builds its AdamW with :func:`lightly_derm.utils.fused.fused_optimizer`
(``fused=True`` where PyTorch has the kernel; SGD stays PyTorch's default, whose fused
kernel fails when parameters join at different steps). PyTorch's default is a Python loop over
the parameters on the CPU and ``foreach`` on a GPU. This script times, on one device:

- the optimiser step alone, for the fine-tune's AdamW over a ResNet-18 FlexibleUNet
  (:class:`~lightly_derm.segmentation.LesionSegmentation`, two parameter groups) and the
  pretraining's SGD with momentum and weight decay over a ResNet-18 backbone, with
  PyTorch's default, ``foreach`` and ``fused``;
- a whole fine-tune training step (forward, Dice-CE loss, backward, AdamW step) of the
  same FlexibleUNet on a batch of 16 images at 64 px (the ``cpu`` scale of the study),
  with PyTorch's default and with the package's optimiser.

Median of ``--repeats`` timed calls after warm-up steps; the variants alternate so that
a busy machine slows all of them alike::

    python benchmarks/optimizer_step.py --output benchmarks/results/optimizer_step_cpu.md
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script
from lightly_derm.models import resnet  # noqa: E402
from lightly_derm.segmentation import LesionSegmentation  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(
    calls: dict[str, Callable[[], None]],
    device: torch.device,
    warmup: int,
    repeats: int,
) -> dict[str, float]:
    """Median wall time of each call in ms, the calls interleaved."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def _segmentation_groups(model: LesionSegmentation) -> list[dict[str, Any]]:
    """The parameter groups of the package's own fine-tune optimiser."""
    optimizer = model.configure_optimizers()  # scheduler="none": the optimiser
    return [{"params": group["params"]} for group in optimizer.param_groups]


def _step_calls(
    params: list[nn.Parameter],
    groups: Any,
    optimizer_class: Callable[..., torch.optim.Optimizer],
    **kwargs: Any,
) -> dict[str, Callable[[], None]]:
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    calls: dict[str, Callable[[], None]] = {}
    for name, option in VARIANTS.items():
        optimizer = optimizer_class(groups, **option, **kwargs)
        calls[name] = optimizer.step
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    rows: list[dict[str, Any]] = []

    segmentation = LesionSegmentation(
        "lightly-derm-resnet18", num_overlays=0, scheduler="none"
    )
    segmentation.to(device)
    seg_params = list(segmentation.parameters())
    calls = _step_calls(
        seg_params,
        _segmentation_groups(segmentation),
        torch.optim.AdamW,
        lr=1e-3,
        weight_decay=1e-4,
    )
    times = _median_ms(calls, device, args.warmup, args.repeats)
    rows.append({"what": "AdamW step, ResNet-18 FlexibleUNet", **times})

    backbone = resnet("resnet18").to(device)
    sgd_params = list(backbone.parameters())
    calls = _step_calls(
        sgd_params,
        sgd_params,
        torch.optim.SGD,
        lr=0.01,
        momentum=0.9,
        weight_decay=5e-4,
    )
    times = _median_ms(calls, device, args.warmup, args.repeats)
    rows.append({"what": "SGD step, ResNet-18 backbone", **times})

    images = torch.randn(
        args.batch_size, 3, args.input_size, args.input_size, device=device
    )
    masks = (torch.rand_like(images[:, :1]) > 0.5).float()
    optimizers = {
        "default": torch.optim.AdamW(
            _segmentation_groups(segmentation), lr=1e-3, weight_decay=1e-4
        ),
        "fused": segmentation.configure_optimizers(),  # the package's
    }

    def training_step(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
        def call() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss = segmentation.loss_fn(segmentation(images), masks)
            loss.backward()
            optimizer.step()

        return call

    segmentation.train()
    times = _median_ms(
        {name: training_step(opt) for name, opt in optimizers.items()},
        device,
        args.warmup,
        args.repeats,
    )
    rows.append(
        {
            "what": (
                f"whole fine-tune step, batch {args.batch_size} at {args.input_size} px"
            ),
            "default": times["default"],
            "fused": times["fused"],
        }
    )

    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    threads = torch.get_num_threads()
    hardware = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.machine()}, {threads} threads)"
    )
    lines = [
        f"Optimiser steps on {hardware}; torch {torch.__version__}; median of "
        f"{args.repeats} timed calls, ms (lower is better).",
        f"Command: {command}",
        "",
        "| what | PyTorch default | foreach | fused | default / fused |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        foreach = f"{row['foreach']:.1f}" if "foreach" in row else "–"
        lines.append(
            f"| {row['what']} | {row['default']:.1f} | {foreach} | {row['fused']:.1f} "
            f"| {row['default'] / row['fused']:.1f}× |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    args.output.with_suffix(".json").write_text(
        json.dumps({"device": hardware, "command": command, "rows": rows}, indent=1)
        + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
