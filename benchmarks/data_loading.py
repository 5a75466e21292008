"""Data-layer benchmark: file checks, decoding, DataLoader throughput against lightly's
LightlyDataset, synthetic-lesion generation, and the evaluation utilities.

    python benchmarks/data_loading.py --out benchmarks/results/data_loading_cpu.md
    python benchmarks/data_loading.py --device cuda --workers 16 \
        --out benchmarks/results/data_loading_cuda.md

Sections whose data is absent (the shared ISIC subset, the DermaMNIST export) are
skipped. Throughputs are medians of ``--repeats`` runs; single-core numbers are measured
in this process, DataLoader numbers with ``--workers`` worker processes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightly_derm.data import (  # noqa: E402
    DermaMNISTJPEGDataset,
    ImageFolderDataset,
    SyntheticLesions,
    check_image,
    load_image,
)
from lightly_derm.evaluation import (  # noqa: E402
    Features,
    LinearProbe,
    knn_evaluate,
    knn_scores,
    linear_probe_evaluate,
)


def _shared_data() -> Path:
    override = os.environ.get("LIGHTLY_DERM_SHARED_DATA")
    if override:
        return Path(override)
    for candidate in (
        REPO.parent / "shared" / "data",
        REPO.parents[1] / "shared" / "data",
    ):
        if candidate.is_dir():
            return candidate
    return REPO.parent / "shared" / "data"


def _median_time(fn, repeats: int) -> float:
    return _median_times(fn, repeats)[0]


def _median_times(fn, repeats: int) -> tuple[float, float]:
    """Median wall time and median CPU time of this process (robust to other load)."""
    walls, cpus = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return statistics.median(walls), statistics.median(cpus)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _ssl_transform(size: int) -> v2.Compose:
    # A typical SSL view: what the views/s of a pretraining run pay per image.
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


def _loader_rate(dataset, workers: int, batch_size: int, batches: int) -> float:
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),
        drop_last=True,
    )
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    count = 0
    start = time.perf_counter()
    for _ in range(batches):
        try:
            images = next(iterator)[0]
        except StopIteration:
            iterator = iter(loader)
            images = next(iterator)[0]
        count += images.shape[0]
    return count / (time.perf_counter() - start)


def bench_checks(
    rows: list, isic: Path | None, derma: Path | None, repeats: int
) -> None:
    sets = []
    if isic is not None:
        sets.append(
            ("ISIC 2017 subset, 290 JPEGs", sorted((isic / "images").glob("*.jpg")))
        )
    tmp = None
    if derma is not None:
        tmp = tempfile.TemporaryDirectory()
        with zipfile.ZipFile(derma / "dermamnist_jpg.zip") as archive:
            archive.extractall(tmp.name)
        sets.append(
            (
                "DermaMNIST, 10,015 JPEGs (28 px)",
                sorted(Path(tmp.name, "images").glob("*.jpg")),
            )
        )
    for name, files in sets:
        for label, fn in (
            ("check_image (header + end marker)", lambda f: check_image(f)),
            (
                "PIL open + verify()",
                lambda f: __import__("PIL.Image").Image.open(f).verify(),
            ),
            ("full decode", lambda f: load_image(f)),
        ):
            seconds, cpu = _median_times(
                lambda fn=fn, files=files: [fn(f) for f in files], repeats
            )
            rows.append(
                {
                    "section": "construction check",
                    "data": name,
                    "what": label,
                    "seconds": round(seconds, 3),
                    "us_per_file": round(seconds / len(files) * 1e6, 1),
                    "cpu_us_per_file": round(cpu / len(files) * 1e6, 1),
                }
            )
    if tmp is not None:
        tmp.cleanup()


def bench_decode(
    rows: list, isic: Path | None, derma: Path | None, repeats: int
) -> None:
    if isic is not None:
        files = sorted((isic / "images").glob("*.jpg"))[:100]
        for decode_size in (None, 448, 224, 64):
            seconds, cpu = _median_times(
                lambda ds=decode_size: [load_image(f, decode_size=ds) for f in files],
                repeats,
            )
            rows.append(
                {
                    "section": "decode, one core",
                    "data": "ISIC JPEG (576×768 to 1504×1129)",
                    "what": f"load_image(decode_size={decode_size})",
                    "images_per_s": round(len(files) / seconds, 1),
                    "images_per_cpu_s": round(len(files) / cpu, 1),
                }
            )
    if derma is not None:
        dataset = DermaMNISTJPEGDataset(derma, split="val")
        seconds, cpu = _median_times(
            lambda: [dataset[i] for i in range(len(dataset))], repeats
        )
        rows.append(
            {
                "section": "decode, one core",
                "data": "DermaMNIST zip (28 px)",
                "what": "DermaMNISTJPEGDataset[i]",
                "images_per_s": round(len(dataset) / seconds, 1),
                "images_per_cpu_s": round(len(dataset) / cpu, 1),
            }
        )
    for size in (64, 128, 224):
        synthetic = SyntheticLesions(num_images=100_000, image_size=size)
        count = 400 if size == 64 else 120
        seconds, cpu = _median_times(
            lambda d=synthetic, c=count: [d.sample(i) for i in range(c)], repeats
        )
        rows.append(
            {
                "section": "decode, one core",
                "data": f"SyntheticLesions {size} px",
                "what": "generate image + mask",
                "images_per_s": round(count / seconds, 1),
                "images_per_cpu_s": round(count / cpu, 1),
            }
        )


def bench_loader(
    rows: list, isic: Path | None, workers: int, batches: int, rounds: int
) -> None:
    from lightly.data import LightlyDataset

    size = 224
    configs = []
    if isic is not None:
        configs += [
            (
                "lightly LightlyDataset (baseline)",
                lambda t: LightlyDataset(str(isic / "images"), transform=t),
            ),
            (
                "ImageFolderDataset",
                lambda t: ImageFolderDataset(isic / "images", transform=t),
            ),
            (
                f"ImageFolderDataset(decode_size={size})",
                lambda t: ImageFolderDataset(
                    isic / "images", transform=t, decode_size=size
                ),
            ),
        ]
    configs.append(
        (
            "SyntheticLesions 224 px",
            lambda t: SyntheticLesions(num_images=10_000, image_size=224, transform=t),
        )
    )
    # Rounds interleave the configurations, so drifting load on a shared machine hits
    # them alike; each reports its median over the rounds.
    rates: dict[str, list[float]] = {name: [] for name, _ in configs}
    for _ in range(rounds):
        for name, make in configs:
            rates[name].append(
                _loader_rate(make(_ssl_transform(size)), workers, 32, batches)
            )
    baseline = statistics.median(rates[configs[0][0]]) if isic is not None else None
    for name, _ in configs:
        rate = statistics.median(rates[name])
        rows.append(
            {
                "section": f"DataLoader, {workers} workers, RandomResizedCrop {size} + flip, "
                f"median of {rounds} interleaved rounds of {batches} batches of 32",
                "data": "ISIC 2017 subset" if "Synthetic" not in name else "synthetic",
                "what": name,
                "images_per_s": round(rate, 1),
                "ratio_to_lightly": round(rate / baseline, 2) if baseline else None,
            }
        )


def bench_evaluation(rows: list, device: torch.device, repeats: int) -> None:
    gen = torch.Generator().manual_seed(0)
    sizes = (
        [(5000, 512, 7)] if device.type == "cpu" else [(5000, 512, 7), (25000, 2048, 9)]
    )
    for n, d, c in sizes:
        centres = torch.randn(c, d, generator=gen)
        y = torch.arange(n) % c
        x = (centres[y] + 2 * torch.randn(n, d, generator=gen)).to(device)
        y = y.to(device)

        def probe(x=x, y=y, c=c):
            LinearProbe(max_iter=200).fit(x, y, c)
            _sync(device)

        rows.append(
            {
                "section": f"evaluation on {device.type}",
                "data": f"N={n}, D={d}, C={c}",
                "what": "LinearProbe.fit (L-BFGS, 200 iterations max)",
                "seconds": round(_median_time(probe, repeats), 3),
            }
        )

        def knn(x=x, y=y, c=c):
            knn_scores(x, x, y, c, k=20)
            _sync(device)

        rows.append(
            {
                "section": f"evaluation on {device.type}",
                "data": f"N={n}, D={d}, C={c}",
                "what": "knn_scores (N queries against N, k=20)",
                "seconds": round(_median_time(knn, repeats), 3),
            }
        )


def bench_synthetic_difficulty(rows: list) -> None:
    """How learnable the synthetic classes are from raw pixels (8×8 thumbnails)."""
    for num_classes in (2, 3, 5):
        feats = {}
        for split, n in (("train", 1500), ("val", 600)):
            data = SyntheticLesions(n, 64, num_classes=num_classes, split=split)
            x = torch.tensor(
                np.stack(
                    [
                        np.asarray(data[i][0].resize((8, 8))).ravel() / 255.0
                        for i in range(n)
                    ]
                ),
                dtype=torch.float32,
            )
            feats[split] = Features(x, torch.as_tensor(data.targets), [None] * n)
        linear = linear_probe_evaluate(feats["train"], feats["val"])
        knn = knn_evaluate(feats["train"], feats["val"], k=20)
        rows.append(
            {
                "section": "synthetic lesions: raw-pixel baselines (8×8 thumbnails, 1500 train / 600 val)",
                "data": f"{num_classes} classes (chance {1 / num_classes:.2f})",
                "what": "linear probe / kNN balanced accuracy",
                "linear": round(linear["linear_balanced_accuracy"], 3),
                "knn": round(knn["knn_balanced_accuracy"], 3),
            }
        )


def _markdown(rows: list, header: str) -> str:
    lines = [header, ""]
    section = None
    for row in rows:
        if row["section"] != section:
            section = row["section"]
            keys = [k for k in row if k != "section"]
            lines += [
                "",
                f"### {section}",
                "",
                "| " + " | ".join(keys) + " |",
                "|" + "---|" * len(keys),
            ]
        lines.append("| " + " | ".join(str(row.get(k)) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=None, help=".md (a .json is written beside it)"
    )
    parser.add_argument("--skip", nargs="*", default=[], help="sections to skip")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1) if args.device == "cpu" else None
    data = _shared_data()
    isic = (
        data / "isic2017-seg-subset"
        if (data / "isic2017-seg-subset" / "images").is_dir()
        else None
    )
    derma = (
        data / "dermamnist-jpg"
        if (data / "dermamnist-jpg" / "dermamnist_jpg.zip").is_file()
        else None
    )
    device = torch.device(args.device)
    rows: list = []
    steps = [
        ("checks", lambda: bench_checks(rows, isic, derma, args.repeats)),
        ("decode", lambda: bench_decode(rows, isic, derma, args.repeats)),
        (
            "loader",
            lambda: bench_loader(rows, isic, args.workers, args.batches, args.repeats),
        ),
        ("evaluation", lambda: bench_evaluation(rows, device, args.repeats)),
        ("difficulty", lambda: bench_synthetic_difficulty(rows)),
    ]
    for name, step in steps:
        if name not in args.skip:
            print(f"running {name} ...", file=sys.stderr)
            step()
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    header = (
        f"# Data-layer benchmark ({device.type})\n\n"
        f"Command: `{command}`\n\n"
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
        f"(shared with other jobs when this ran), torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
        + f". ISIC data: {'yes' if isic else 'absent'}; DermaMNIST: {'yes' if derma else 'absent'}."
    )
    text = _markdown(rows, header)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(
            json.dumps({"command": command, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
