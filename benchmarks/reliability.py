"""Reliability benchmark: what the guard, the resumable loader and atomic saves cost.

    python benchmarks/reliability.py --out benchmarks/results/reliability_cpu
    python benchmarks/reliability.py --device cuda --out benchmarks/results/reliability_cuda

Part 1 (non-finite-loss guard): training steps of a ResNet (forward, backward, SGD)
on one fixed batch, with no check, with :class:`NonFiniteLossGuard` checking the loss
only, with the guard checking loss, gradients (before the optimizer step) and
parameters (after it) — all device-side records read back every ``--check-every``
steps — and with the naive per-step check ``math.isfinite(loss.item())``. On CUDA the steps are timed with one synchronisation at
the end (so a per-step ``.item()`` shows as lost CPU/GPU overlap), under bf16 autocast
and channels_last, and the host synchronisations per step are counted with
``torch.cuda.set_sync_debug_mode("warn")``.

Part 2 (ResumableDataLoader): images per second of a plain ``DataLoader(shuffle=True)``
and of ``ResumableDataLoader`` (per-sample seeding of torch's, NumPy's and Python's
generators around every ``__getitem__``) on the same dataset and GraVIS transform
(``num_workers=0``: the seeding cost is not hidden by workers). The ISIC subset when
present (``--isic``), else synthetic 600×450 images.

Part 3 (checkpoint files): a GraVIS ResNet-50 checkpoint (weights, SGD momentum, as
Lightning writes it) saved by Lightning's ``TorchCheckpointIO`` (in memory, then an
fsspec transaction through the system temporary folder) and by ``AtomicCheckpointIO``
(streamed to a temporary file beside the target, fsync, rename): wall time and the peak
resident-memory increase of the save, each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightly_derm.callbacks import AtomicCheckpointIO, NonFiniteLossGuard  # noqa: E402
from lightly_derm.data import ResumableDataLoader  # noqa: E402
from lightly_derm.models import resnet  # noqa: E402
from lightly_derm.transforms import GraVISTransform  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- part 1: guard
def bench_guard(
    args: argparse.Namespace, device: torch.device
) -> tuple[list[dict[str, Any]], float, float]:
    model = resnet(args.backbone).to(device)
    head = torch.nn.Linear(model.feature_dim, 128).to(device)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    images = torch.randn(args.batch, 3, args.input_size, args.input_size, device=device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        images = images.to(memory_format=torch.channels_last)
    # stand-ins for the Trainer and LightningModule the guard's hooks read
    stub: Any = SimpleNamespace(
        global_step=0, current_epoch=0, world_size=1, checkpoint_callbacks=[]
    )

    modules: Any = torch.nn.ModuleList([model, head])
    no_module: Any = None  # the loss-only checks read no module

    def step(guard: NonFiniteLossGuard | None = None) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            z = head(model(images))
            loss = z.float().pow(2).mean()
        loss.backward()
        if guard is not None:
            guard.on_before_optimizer_step(stub, modules, optimizer)
        optimizer.step()
        return loss.detach()

    loss_guard = NonFiniteLossGuard(
        check_every_n_steps=args.check_every,
        check_gradients=False,
        check_parameters=False,
    )
    full_guard = NonFiniteLossGuard(check_every_n_steps=args.check_every)

    def with_loss_guard(i: int) -> None:
        stub.global_step = i + 1
        loss_guard.on_train_batch_end(stub, no_module, {"loss": step()}, None, i)

    def with_full_guard(i: int) -> None:
        stub.global_step = i + 1
        loss = step(full_guard)
        full_guard.on_train_batch_end(stub, modules, {"loss": loss}, None, i)

    def naive(i: int) -> None:
        if not math.isfinite(step().item()):
            raise RuntimeError("non-finite loss")

    variants = {
        "no check": lambda i: step(),
        f"NonFiniteLossGuard, loss only (read back every {args.check_every})": (
            with_loss_guard
        ),
        "NonFiniteLossGuard, loss + gradients + parameters": with_full_guard,
        "naive: math.isfinite(loss.item()) per step": naive,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu_times: dict[str, list[float]] = {name: [] for name in variants}
    syncs: dict[str, float | None] = {}
    for name, run in variants.items():  # warm-up and, on CUDA, sync counting
        for i in range(args.warmup):
            run(i)
        _sync(device)
        if device.type == "cuda":
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    for i in range(args.steps):
                        run(i)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            _sync(device)
            syncs[name] = (
                sum("synchroniz" in str(w.message) for w in caught) / args.steps
            )
        else:
            syncs[name] = None
    for _ in range(args.repeats):  # round-robin: load drifts hit all variants alike
        for name, run in variants.items():
            _sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            for i in range(args.steps):
                run(i)
            _sync(device)
            times[name].append((time.perf_counter() - start) / args.steps * 1000)
            cpu_times[name].append(
                (time.process_time() - cpu_start) / args.steps * 1000
            )
    # The comparable number: synchronised wall time on a GPU, process CPU time on the
    # CPU (with --threads 1; wall time there mostly measures the other jobs).
    compared = times if device.type == "cuda" else cpu_times
    base = statistics.median(compared["no check"])
    rows = [
        {
            "variant": name,
            "ms_per_step": round(statistics.median(times[name]), 2),
            "cpu_ms_per_step": round(statistics.median(cpu_times[name]), 2),
            "overhead_pct": round((statistics.median(t) / base - 1) * 100, 2),
            "host_syncs_per_step": "n/a (CPU)" if syncs[name] is None else syncs[name],
        }
        for name, t in compared.items()
    ]
    # The guard's own cost per call, on a loss tensor already computed.
    losses = torch.rand(1000, device=device)
    calls = NonFiniteLossGuard(check_every_n_steps=10**9)
    _sync(device)
    start = time.perf_counter()
    for i in range(1000):
        calls.on_train_batch_end(stub, no_module, {"loss": losses[i]}, None, i)
    _sync(device)
    call_us = (time.perf_counter() - start) / 1000 * 1e6
    # With the gradient and parameter checks: one max-norm over all gradients and one
    # over all parameters and buffers of the model (gradients from the last step).
    full = NonFiniteLossGuard(check_every_n_steps=10**9)
    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(100):
        full.on_before_optimizer_step(stub, modules, optimizer)
        full.on_train_batch_end(stub, modules, {"loss": losses[i]}, None, i)
    _sync(device)
    # CPU time on the CPU (wall time there mostly measures the other jobs)
    elapsed = (
        time.perf_counter() - start
        if device.type == "cuda"
        else time.process_time() - cpu_start
    )
    full_us = elapsed / 100 * 1e6
    return rows, round(call_us, 1), round(full_us, 1)


# ---------------------------------------------------------------- part 2: data
class _Images(torch.utils.data.Dataset):
    def __init__(self, pictures: list[Image.Image], transform: Any) -> None:
        self.pictures, self.transform = pictures, transform

    def __len__(self) -> int:
        return len(self.pictures)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.transform(self.pictures[index]), 0


def _pictures(args: argparse.Namespace) -> tuple[list[Image.Image], str]:
    isic = Path(args.isic) / "images" if args.isic else None
    if isic is not None and isic.is_dir():
        from lightly_derm.data import load_image

        paths = sorted(isic.glob("ISIC_*.jpg"))[: args.images]
        return [load_image(p, decode_size=args.view_size) for p in paths], str(isic)
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (450, 600, 3), dtype=np.uint8))
        for _ in range(args.images)
    ], "synthetic 600×450"


def bench_data(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    pictures, source = _pictures(args)
    dataset = _Images(pictures, GraVISTransform(num_views=4, input_size=args.view_size))
    loaders = {
        "DataLoader(shuffle=True)": torch.utils.data.DataLoader(
            dataset, batch_size=16, shuffle=True
        ),
        "ResumableDataLoader": ResumableDataLoader(dataset, batch_size=16, seed=0),
    }
    times: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(args.repeats):
        for name, loader in loaders.items():
            start = time.perf_counter()
            for _batch in loader:
                pass
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["DataLoader(shuffle=True)"])
    return [
        {
            "loader": name,
            "images_per_s": round(len(dataset) / statistics.median(t), 1),
            "relative_speed": round(base / statistics.median(t), 3),
        }
        for name, t in times.items()
    ], source


# ---------------------------------------------------------------- part 3: saving
def _save_child(kind: str, folder: str, queue: Any) -> None:
    from lightning_fabric.plugins.io import TorchCheckpointIO

    from lightly_derm.methods import GraVIS

    torch.set_num_threads(1)
    model = GraVIS(backbone="resnet50")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.forward_projection(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    checkpoint = {
        "state_dict": model.state_dict(),
        "optimizer_states": [optimizer.state_dict()],
        "epoch": 0,
        "global_step": 1,
    }
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    io = AtomicCheckpointIO() if kind == "AtomicCheckpointIO" else TorchCheckpointIO()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    io.save_checkpoint(checkpoint, f"{folder}/{kind}.ckpt")
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((seconds, (after - before) / 1024, size / 2**20))


def bench_save(args: argparse.Namespace) -> list[dict[str, Any]]:
    context = mp.get_context("spawn")
    results: dict[str, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(dir=args.checkpoint_dir) as folder:
        for _ in range(args.repeats):
            for kind in ("TorchCheckpointIO (Lightning)", "AtomicCheckpointIO"):
                queue = context.Queue()
                child = context.Process(target=_save_child, args=(kind, folder, queue))
                child.start()
                results.setdefault(kind, []).append(queue.get())
                child.join()
    rows = []
    for kind, runs in results.items():
        rows.append(
            {
                "checkpoint_io": kind,
                "weights_mib": round(runs[0][2], 1),
                "save_s": round(statistics.median(r[0] for r in runs), 3),
                "peak_rss_increase_mib": round(
                    statistics.median(r[1] for r in runs), 1
                ),
            }
        )
    return rows


# ---------------------------------------------------------------- report
def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--check-every", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--view-size", type=int, default=224)
    shared = next(
        (
            p / "shared" / "data"
            for p in REPO.parents
            if (p / "shared" / "data").is_dir()
        ),
        REPO.parent / "shared" / "data",
    )
    parser.add_argument("--isic", default=str(shared / "isic2017-seg-subset"))
    parser.add_argument("--checkpoint-dir", default=None, help="where part 3 writes")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--parts", nargs="+", default=["guard", "data", "save"])
    parser.add_argument("--out", required=True, help="path without suffix (.md, .json)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report: dict[str, Any] = {
        "command": "python benchmarks/reliability.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads, "
        f"torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
    }
    md = [
        f"# Reliability benchmark ({device.type})",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}. The CPU is shared with other jobs: times are noisy.",
    ]
    if "guard" in args.parts:
        report["guard"], report["guard_call_us"], report["guard_full_call_us"] = (
            bench_guard(args, device)
        )
        md += [
            "",
            f"## Non-finite-loss guard: {args.backbone}, batch {args.batch} @ "
            f"{args.input_size}px, {args.steps} steps × {args.repeats} (median)",
            "",
            "overhead_pct from synchronised wall time on a GPU, from process CPU time "
            "on the CPU.",
            "",
            _table(report["guard"]),
            "",
            f"One guard call (device-side record, no read-back): "
            f"{report['guard_call_us']} µs for the loss alone, "
            f"{report['guard_full_call_us']} µs "
            f"({'wall' if device.type == 'cuda' else 'process CPU'} time) with the "
            f"gradient and parameter checks of the {args.backbone}: a fused max-norm "
            "per device and dtype on a GPU, min/max of each tensor on the CPU, over "
            "its gradients and over its parameters and buffers.",
        ]
    if "data" in args.parts:
        report["data"], source = bench_data(args)
        md += [
            "",
            f"## Data loading: {args.images} images ({source}), GraVISTransform 4 views "
            f"@ {args.view_size}px, batch 16, num_workers=0",
            "",
            _table(report["data"]),
        ]
    if "save" in args.parts:
        report["save"] = bench_save(args)
        md += [
            "",
            "## Saving a GraVIS ResNet-50 checkpoint (weights + SGD momentum), "
            "fresh process per save",
            "",
            _table(report["save"]),
        ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
