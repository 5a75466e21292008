"""Segmentation benchmark: lightly-derm's FlexibleUNet encoders, metric and ISIC pipeline.

Each part is measured against a baseline in the same run and reported as a ratio:

1. train step (forward, DiceCELoss, backward, AdamW) of ``FlexibleUNet`` with a
   ``lightly-derm-resnetNN`` backbone vs MONAI's own 2-D ``resnetNN`` backbone (same
   decoder); images/s and peak GPU memory;
2. ``LesionSegmentationMetric`` vs MONAI ``DiceMetric`` + ``MeanIoU`` on one batch of
   logits (ms per batch; MONAI loops over the images with a host sync each);
3. the ISIC pair pipeline (``isic_segmentation_transforms``, train and val) vs a plain
   PIL + torchvision pipeline doing the same load / resize / to-tensor (pairs/s,
   single process).

CPU (small)::

    python benchmarks/segmentation.py --device cpu --image-size 128 --batch-size 4 \\
        --steps 5 --backbones resnet18 resnet50 --output benchmarks/results/segmentation_cpu.md

GPU::

    python benchmarks/segmentation.py --device cuda --image-size 256 --batch-size 32 \\
        --steps 50 --precision bf16 --channels-last --backbones resnet18 resnet34 resnet50 \\
        --output benchmarks/results/segmentation_gpu.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric, MeanIoU
from monai.networks.nets import FlexibleUNet

import lightly_derm  # noqa: F401  (registers the backbones)
from lightly_derm.data import find_isic_pairs
from lightly_derm.segmentation import LesionSegmentationMetric
from lightly_derm.transforms import isic_segmentation_transforms

#: The shared ISIC subset beside the checkout (or beside its folder of worktrees).
DEFAULT_DATA = next(
    (
        p / "shared/data/isic2017-seg-subset"
        for p in Path(__file__).resolve().parents
        if (p / "shared/data/isic2017-seg-subset").is_dir()
    ),
    Path("isic2017-seg-subset"),
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(
    fn: Callable[[], object], device: torch.device, steps: int, warmup: int
) -> float:
    """Median seconds per call (CUDA-synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _train_step(
    backbone: str, args: argparse.Namespace, device: torch.device
) -> Callable[[], None]:
    torch.manual_seed(0)
    size, batch = args.image_size, args.batch_size
    memory_format = (
        torch.channels_last if args.channels_last else torch.contiguous_format
    )
    net = FlexibleUNet(3, 1, backbone=backbone, spatial_dims=2).to(device)
    net = net.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss_fn = DiceCELoss(sigmoid=True)
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=memory_format)
    y = (torch.rand(batch, 1, size, size, device=device) > 0.5).float()
    bf16 = args.precision == "bf16"

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        optimizer.step()

    return step


def bench_train_step(args: argparse.Namespace, device: torch.device) -> list[str]:
    """Both networks are built first and timed alternately, so load changes hit both."""
    rows = []
    for name in args.backbones:
        backbones = (f"lightly-derm-{name}", name)
        steps = {b: _train_step(b, args, device) for b in backbones}
        memory = {}
        for backbone, step in steps.items():
            step()  # creates gradients and optimizer state
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                before = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                step()
                torch.cuda.synchronize(device)
                memory[backbone] = (
                    torch.cuda.max_memory_allocated(device) - before
                ) / 2**20
            else:
                memory[backbone] = float("nan")
        times: dict[str, list[float]] = {b: [] for b in backbones}
        for _ in range(args.warmup):
            for step in steps.values():
                step()
        for _ in range(args.steps):
            for backbone, step in steps.items():
                _sync(device)
                start = time.perf_counter()
                step()
                _sync(device)
                times[backbone].append(time.perf_counter() - start)
        rate = {b: args.batch_size / sorted(t)[len(t) // 2] for b, t in times.items()}
        ours, theirs = backbones
        rows.append(
            f"| {name} | {rate[ours]:.1f} | {rate[theirs]:.1f} | {rate[ours] / rate[theirs]:.2f} | "
            f"{memory[ours]:.0f} | {memory[theirs]:.0f} |"
        )
        del steps
    return [
        f"### 1. Train step, FlexibleUNet, {args.image_size} px, batch {args.batch_size}, "
        f"{args.precision}{', channels_last' if args.channels_last else ''}",
        "",
        "Same architecture and FLOPs (torchvision vs MONAI module layout); peak MiB = "
        "memory one step adds on top of weights, gradients and optimizer state.",
        "",
        "| backbone | lightly-derm img/s | MONAI img/s | ratio (ours/MONAI) | lightly-derm step MiB | MONAI step MiB |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def _metric_calls(
    batch: int, size: int, device: torch.device
) -> tuple[Callable[[], None], Callable[[], None]]:
    g = torch.Generator(device="cpu").manual_seed(0)
    logits = torch.randn(batch, 1, size, size, generator=g).to(device)
    target = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float().to(device)
    ours = LesionSegmentationMetric()
    dice = DiceMetric(include_background=True, ignore_empty=False)
    iou = MeanIoU(include_background=True, ignore_empty=False)

    def run_ours() -> None:
        ours(logits, target)

    def run_monai() -> None:
        pred = (logits > 0).float()
        dice(pred, target)
        iou(pred, target)

    return run_ours, run_monai


def bench_metric(args: argparse.Namespace, device: torch.device) -> list[str]:
    rows = []
    size = args.image_size
    for batch in (args.batch_size, 4 * args.batch_size):
        run_ours, run_monai = _metric_calls(batch, size, device)
        t_ours = _time(run_ours, device, 4 * args.steps, args.warmup)
        t_monai = _time(run_monai, device, 4 * args.steps, args.warmup)
        rows.append(
            f"| {batch} x {size}² | {1e3 * t_ours:.2f} | {1e3 * t_monai:.2f} | "
            f"{t_monai / t_ours:.1f} |"
        )
    return [
        "### 2. Metric per batch of logits (Dice + Jaccard + thresholded Jaccard)",
        "",
        "| batch | LesionSegmentationMetric ms | MONAI DiceMetric+MeanIoU ms | speed-up |",
        "|---|---|---|---|",
        *rows,
    ]


def bench_pipeline(args: argparse.Namespace) -> list[str]:
    import torchvision.transforms.functional as TF
    from PIL import Image

    pairs = find_isic_pairs(args.data)[: args.data_pairs]
    size = args.image_size

    def plain(pair: dict) -> None:
        with Image.open(pair["image"]) as image, Image.open(pair["label"]) as mask:
            x = TF.to_tensor(
                image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            )
            y = TF.to_tensor(
                mask.convert("L").resize((size, size), Image.Resampling.NEAREST)
            )
            (
                TF.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
                (y > 0.5).float(),
            )

    pipelines: dict[str, Callable[[dict], object]] = {
        "lightly-derm val": isic_segmentation_transforms(size, train=False),
        "lightly-derm train": isic_segmentation_transforms(size, train=True),
        "lightly-derm val, fast_jpeg=False": isic_segmentation_transforms(
            size, train=False, fast_jpeg=False
        ),
        "PIL + torchvision": plain,
    }
    seconds = dict.fromkeys(pipelines, 0.0)
    for fn in pipelines.values():
        fn(pairs[0])
    for pair in pairs:  # alternate, so load changes hit every pipeline alike
        for label, fn in pipelines.items():
            start = time.perf_counter()
            fn(pair)
            seconds[label] += time.perf_counter() - start
    rows = [(label, len(pairs) / t) for label, t in seconds.items()]
    base = rows[-1][1]
    return [
        f"### 3. ISIC pair pipeline, {len(pairs)} shared pairs (up to 1504×1129) → {size} px, one process, "
        f"{torch.get_num_threads()} torch threads",
        "",
        "| pipeline | pairs/s | ratio to PIL + torchvision |",
        "|---|---|---|",
        *[f"| {label} | {rate:.1f} | {rate / base:.2f} |" for label, rate in rows],
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--data-pairs", type=int, default=16)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine()
    )
    lines = [
        "# Segmentation benchmark",
        "",
        f"Command: `python {' '.join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])}`",
        "",
        f"Device: {device.type} ({device_name}); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; median of {args.steps} timed runs after {args.warmup} warm-up runs; "
        f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.",
        "",
    ]
    for part in (
        bench_train_step(args, device),
        bench_metric(args, device),
        bench_pipeline(args),
    ):
        lines += [*part, ""]
        print("\n".join(part) + "\n", flush=True)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(lines))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
