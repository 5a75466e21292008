"""lightly-derm's GPU view pipeline against kornia's ``AugmentationSequential``.

Both make the same views of the same uint8 batch, with the same operations and
parameter ranges: GraVIS's view (K = 4 views per image; :class:`~lightly_derm.transforms.GraVISViewTransform`)
and BYOL's two views (lightly's ``BYOLView1Transform`` / ``BYOLView2Transform``).
lightly-derm's pipeline is derived from the CPU transforms
(``GPUMultiViewTransform.from_view_transform``); kornia's is written by hand with
``kornia.augmentation`` (RandomResizedCrop, RandomRotation, ColorJitter,
RandomGrayscale, RandomGaussianBlur, RandomSolarize, flips, Normalize and, for
Cutout, which kornia lacks, three ``RandomErasing`` of the same square). Reported:

- **throughput**: views per second (median of ``--repeats`` timed batches after a
  warm-up; on CUDA with ``torch.cuda.synchronize`` around each batch);
- **peak memory**: ``torch.cuda.max_memory_allocated`` over one batch (CUDA only);
- **host syncs per batch**: :func:`~lightly_derm.utils.host_sync.record_host_syncs`
  (``factories=True``) over one warm batch — the operations that would synchronise
  the host with a GPU, recognised on any device;
- **parameter distributions against the CPU transforms** (4096 images): crop area and
  aspect ratio against torchvision's ``RandomResizedCrop.get_params`` (two-sample
  Kolmogorov–Smirnov distance), the rotation angle, the jitter factors and the blur σ
  against their uniform ranges (KS distance), the application rates of flip,
  grayscale, blur and solarisation, whether the colour-jitter order is drawn per image
  (torchvision draws one per call, i.e. per image), the solarisation threshold, and how
  often a Cutout square is clipped by the border (Cutout's centres are uniform over
  the image; ``RandomErasing`` keeps its rectangle inside).

CPU (this repository's result file)::

    OMP_NUM_THREADS=1 python benchmarks/gpu_views_kornia.py --device cpu --threads 1 \\
        --batch 64 --size 64 --output benchmarks/results/gpu_views_kornia_cpu.md

CUDA (the command for a GPU machine)::

    python benchmarks/gpu_views_kornia.py --device cuda --batch 256 --size 224 \\
        --repeats 50 --output benchmarks/results/gpu_views_kornia_cuda.md
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import kornia
import kornia.augmentation as KA
import torch
from lightly.transforms import BYOLView1Transform, BYOLView2Transform
from lightly.transforms.byol_transform import BYOLTransform
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torchvision.transforms import RandomResizedCrop as TorchvisionCrop

from lightly_derm.transforms import GraVISTransform
from lightly_derm.transforms.gpu import (
    GPUMultiViewTransform,
    sample_color_jitter,
    sample_cutout,
    sample_resized_crop,
)
from lightly_derm.utils.host_sync import record_host_syncs

MEAN = torch.tensor(IMAGENET_NORMALIZE["mean"])
STD = torch.tensor(IMAGENET_NORMALIZE["std"])


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov–Smirnov distance sup |F_a − F_b|."""
    a, b = a.double().flatten().sort().values, b.double().flatten().sort().values
    grid = torch.cat([a, b])
    fa = torch.searchsorted(a, grid, right=True).double() / a.numel()
    fb = torch.searchsorted(b, grid, right=True).double() / b.numel()
    return float((fa - fb).abs().max())


def ks_uniform(a: torch.Tensor, low: float, high: float) -> float:
    """KS distance of samples to U(low, high)."""
    a = a.double().flatten().sort().values
    n = a.numel()
    cdf = ((a - low) / (high - low)).clamp(0, 1)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())


# ------------------------------------------------------------------ kornia pipelines
def kornia_gravis(size: int) -> KA.AugmentationSequential:
    """GraVISViewTransform's defaults in kornia (Cutout: 3 RandomErasing squares)."""
    area = (round(32 * size / 224) / size) ** 2
    return KA.AugmentationSequential(
        KA.RandomResizedCrop((size, size), scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)),
        KA.RandomRotation(10.0, p=1.0),
        KA.ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0),
        KA.RandomGrayscale(p=0.2),
        KA.RandomGaussianBlur((13, 13), (0.1, 2.0), p=0.5),
        KA.RandomHorizontalFlip(p=0.5),
        KA.Normalize(mean=MEAN, std=STD),
        *[
            KA.RandomErasing(scale=(area, area), ratio=(1.0, 1.0), value=0.0, p=1.0)
            for _ in range(3)
        ],
    )


def kornia_byol(size: int, view: int) -> KA.AugmentationSequential:
    """lightly's BYOLView1Transform (view 1) / BYOLView2Transform (view 2) in kornia."""
    blur, solarize = (1.0, 0.0) if view == 1 else (0.1, 0.2)
    ops: list[Any] = [
        KA.RandomResizedCrop((size, size), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
        KA.RandomHorizontalFlip(p=0.5),
        KA.ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8),
        KA.RandomGrayscale(p=0.2),
        KA.RandomGaussianBlur((13, 13), (0.1, 2.0), p=blur),
    ]
    if solarize:
        ops.append(KA.RandomSolarize(0.0, 0.0, p=solarize))
    ops.append(KA.Normalize(mean=MEAN, std=STD))
    return KA.AugmentationSequential(*ops)


class KorniaViews:
    """K views per image with kornia: one pass per distinct view, image-major output."""

    def __init__(self, name: str, size: int) -> None:
        if name == "gravis":
            self.passes = [(kornia_gravis(size), 4)]
        else:
            self.passes = [(kornia_byol(size, 1), 1), (kornia_byol(size, 2), 1)]
        self.num_views = sum(k for _, k in self.passes)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255)
        n = x.shape[0]
        out = []
        for seq, k in self.passes:
            views = seq(x.repeat_interleave(k, dim=0, output_size=n * k))
            out.append(views.unflatten(0, (n, k)))
        return torch.cat(out, dim=1).flatten(0, 1)


def ours(name: str, size: int) -> GPUMultiViewTransform:
    cpu = (
        GraVISTransform(num_views=4, input_size=size)
        if name == "gravis"
        else BYOLTransform(
            view_1_transform=BYOLView1Transform(input_size=size),
            view_2_transform=BYOLView2Transform(input_size=size),
        )
    )
    return GPUMultiViewTransform.from_view_transform(cpu)


# ------------------------------------------------------------------ measurements
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def speed(run: Any, images: torch.Tensor, views: int, repeats: int) -> dict[str, Any]:
    device = images.device
    for _ in range(3):
        run(images)
    sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        run(images)
        sync(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run(images)
        sync(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    with record_host_syncs(factories=True) as syncs:
        run(images)
    ops = sorted({s.op for s in syncs})
    return {
        "ms_per_batch": 1000 * median,
        "views_per_s": images.shape[0] * views / median,
        "peak_mib": peak,
        "host_syncs": len(syncs),
        "sync_ops": ops,
    }


def distributions(name: str, size: int, n: int = 4096) -> dict[str, Any]:
    """kornia's sampled parameters (and lightly-derm's samplers) against the CPU's."""
    torch.manual_seed(0)
    canvas = size + size // 4
    gen = torch.Generator().manual_seed(0)
    scale = (0.2, 1.0) if name == "gravis" else (0.08, 1.0)
    ratio = (3 / 4, 4 / 3)
    image = torch.zeros(1, canvas, canvas)
    ref = torch.tensor(
        [TorchvisionCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)],
        dtype=torch.float64,
    )  # top, left, height, width
    heights = torch.full((n,), canvas)
    boxes = sample_resized_crop(heights, heights, scale, ratio, 1, gen)[:, 0].double()
    x = torch.rand(n, 3, canvas, canvas)
    seq = kornia_gravis(size) if name == "gravis" else kornia_byol(size, 2)
    with torch.no_grad():
        seq(x)
    # the parameters kornia drew in that call (set by every forward, so not None)
    params: dict[str, Any] = {
        p.name.rsplit("_", 1)[0] + "_" + p.name.rsplit("_", 1)[1]: p.data
        for p in seq._params or []
    }
    by_type: dict[str, dict[str, Any]] = {}
    for key, data in params.items():
        by_type.setdefault(key.rsplit("_", 1)[0], data)
    src = by_type["RandomResizedCrop"]["src"].double()  # (n, 4, 2) corners (x, y)
    k_w = src[:, 1, 0] - src[:, 0, 0] + 1
    k_h = src[:, 2, 1] - src[:, 1, 1] + 1
    area = lambda h, w: h * w / canvas**2  # noqa: E731
    result: dict[str, Any] = {
        "crop area KS (ours, kornia) vs torchvision": (
            ks_distance(area(boxes[:, 2], boxes[:, 3]), area(ref[:, 2], ref[:, 3])),
            ks_distance(area(k_h, k_w), area(ref[:, 2], ref[:, 3])),
        ),
        "crop ratio KS (ours, kornia) vs torchvision": (
            ks_distance(boxes[:, 3] / boxes[:, 2], ref[:, 3] / ref[:, 2]),
            ks_distance(k_w / k_h, ref[:, 3] / ref[:, 2]),
        ),
    }
    strengths = (0.4, 0.4, 0.4, 0.1) if name == "gravis" else (0.4, 0.4, 0.2, 0.1)
    p_jitter = 1.0 if name == "gravis" else 0.8
    jitter = by_type["ColorJitter"]
    applied = jitter["batch_prob"] > 0.5
    ks = []
    for i, key in enumerate(("brightness", "contrast", "saturation", "hue")):
        s = strengths[i]
        low, high = (-s, s) if i == 3 else (1 - s, 1 + s)
        ks.append(round(ks_uniform(jitter[f"{key}_factor"][applied], low, high), 4))
    _, our_order = sample_color_jitter(n, *strengths, p=p_jitter, generator=gen)
    result["jitter factors KS vs uniform (kornia: b, c, s, h)"] = ks
    result["jitter rate (CPU p, kornia)"] = (p_jitter, float(applied.double().mean()))
    result["distinct jitter orders in a batch (CPU: per image, ours, kornia)"] = (
        "per image",
        len({tuple(o.tolist()) for o in our_order}),
        1
        if jitter["order"].ndim == 1
        else len({tuple(o.tolist()) for o in jitter["order"]}),
    )
    result["grayscale rate (CPU p, kornia)"] = (
        0.2,
        float(by_type["RandomGrayscale"]["batch_prob"].double().mean()),
    )
    blur = by_type["RandomGaussianBlur"]
    blur_p = 0.5 if name == "gravis" else 0.1
    result["blur rate (CPU p, kornia)"] = (
        blur_p,
        float(blur["batch_prob"].double().mean()),
    )
    result["blur sigma KS vs U(0.1, 2)"] = ks_uniform(blur["sigma"], 0.1, 2.0)
    result["hflip rate (CPU p, kornia)"] = (
        0.5,
        float(by_type["RandomHorizontalFlip"]["batch_prob"].double().mean()),
    )
    if name == "gravis":
        result["rotation KS vs U(-10, 10) (kornia)"] = ks_uniform(
            by_type["RandomRotation"]["degrees"], -10, 10
        )
        length = round(32 * size / 224)
        centres = sample_cutout(n, size, size, 3, "cpu", gen).double()
        half = length // 2
        clipped_ours = ((centres - half < 0) | (centres + (length - half) > size)).any(
            -1
        )
        erasing = by_type["RandomErasing"]
        xs, ys = erasing["xs"].double(), erasing["ys"].double()
        w, h = erasing["widths"].double(), erasing["heights"].double()
        clipped_kornia = (xs < 0) | (ys < 0) | (xs + w > size) | (ys + h > size)
        expected = 1 - ((size - length + 1) / size) ** 2
        result["Cutout squares clipped by the border (Cutout, ours, kornia)"] = (
            round(expected, 4),
            float(clipped_ours.double().mean()),
            float(clipped_kornia.double().mean()),
        )
    else:
        solar = by_type["RandomSolarize"]
        result["solarisation rate (CPU p, kornia)"] = (
            0.2,
            float(solar["batch_prob"].double().mean()),
        )
        result["solarisation threshold (CPU, kornia)"] = (
            128 / 255,
            float(solar["thresholds"].double().mean()),
        )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64, help="view side")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    canvas = args.size + args.size // 4
    images = torch.randint(
        0,
        256,
        (args.batch, 3, canvas, canvas),
        dtype=torch.uint8,
        generator=torch.Generator().manual_seed(0),
    ).to(device)
    rows = []
    for name in ("gravis", "byol"):
        pipeline = ours(name, args.size)
        generator = torch.Generator(device=device).manual_seed(0)
        ours_run = lambda x, p=pipeline, g=generator: p(x, generator=g)  # noqa: E731
        theirs = KorniaViews(name, args.size)
        for library, run, views in (
            ("lightly-derm", ours_run, pipeline.num_views),
            ("kornia", theirs, theirs.num_views),
        ):
            with torch.no_grad():
                rows.append(
                    {
                        "views": name,
                        "library": library,
                        **speed(run, images, views, args.repeats),
                    }
                )
    dists = {name: distributions(name, args.size) for name in ("gravis", "byol")}
    meta = {
        "command": "OMP_NUM_THREADS=1 python "
        + shlex.join(
            [
                "benchmarks/gpu_views_kornia.py",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),
        "device": str(device)
        if device.type == "cpu"
        else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "kornia": kornia.__version__,
        "python": platform.python_version(),
        "batch": args.batch,
        "view_size": args.size,
        "canvas": canvas,
    }
    lines = [
        "# GPU views: lightly-derm against kornia",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['device']}, {meta['threads']} thread(s), torch {meta['torch']}, kornia "
        f"{meta['kornia']}; batch {args.batch} uint8 canvases {canvas}², views {args.size}²;"
        f" median of {args.repeats} batches.",
        "",
        "| views | library | ms / batch | views / s | peak MiB | host syncs / batch | sync ops |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peak = "n/a (CPU)" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"
        lines.append(
            f"| {r['views']} | {r['library']} | {r['ms_per_batch']:.1f} | {r['views_per_s']:.0f} | "
            f"{peak} | {r['host_syncs']} | {', '.join(r['sync_ops']) or '-'} |"
        )
    for name, d in dists.items():
        lines += [
            "",
            f"## Parameter distributions, {name} (4096 images)",
            "",
            "KS distances at the 5 % level: one-sample 1.36/√n ≈ 0.021 (n = 4096; "
            "0.024 for the 80 % jittered), two-sample 1.36·√(2/n) ≈ 0.030.",
            "",
            "| parameter | values |",
            "|---|---|",
        ]
        for key, value in d.items():
            lines.append(f"| {key} | {value} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)
        args.output.with_suffix(".json").write_text(
            json.dumps(
                {"meta": meta, "speed": rows, "distributions": dists},
                indent=1,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
