"""Training-step throughput of lightly-derm's methods against lightly's baselines.

    python benchmarks/throughput.py --device cuda --out benchmarks/results/throughput_cuda.md
    python benchmarks/throughput.py --device cpu --batch-size 8 --input-size 64 \\
        --warmup 1 --steps 3 --out benchmarks/results/throughput_cpu.md

One run times, for each backbone (``--backbones``, default ResNet-18 and ResNet-50),
full training steps (forward, backward, optimizer step) of

- lightly's BYOL, SimCLR and Barlow Twins, written as lightly's examples write them
  (lightly heads and losses, one forward per view, a plain training step; BYOL with
  lightly-derm BYOL's head widths 4096/256 so that AP-BYOL's overhead is what differs);
- lightly-derm's BYOL, AP-BYOL (TracIn miner on: ``warmup_steps=0``, ``layers="last"``),
  GraVIS (K = 4 views; also at half the images, so that it puts as many views through
  the backbone per step as SimCLR) and FG-SSL (progressive: 4 optimizer steps per batch;
  joint: 1),

on the same synthetic batch already on the device (``--batch-size`` images, default
256, at ``--input-size`` px, default 224), in the layout each expects (lightly: a list
of per-view tensors; lightly-derm: the image-major ``GroupedBatch`` its collate makes),
with bf16 autocast and channels-last on CUDA. Models are stepped round-robin
(``--warmup`` untimed rounds, then ``--steps`` timed ones), each step between two device
synchronisations; the median is reported, with peak memory (``max_memory_allocated``
during the step, on top of the model's own parameters, gradients and optimizer state)
and the host synchronisations in one step (CUDA: ``torch.cuda.set_sync_debug_mode``,
with where they happen; CPU: :func:`lightly_derm.utils.host_sync.record_host_syncs`).

Ratios are throughputs relative to the matching lightly baseline in the same run, in
the unit the issue sets: AP-BYOL and BYOL per image against lightly BYOL; GraVIS per
view against lightly SimCLR per view; FG-SSL per backbone forward pass (progressive: 8
per batch — 4 steps × 2 views, the first three through part of the backbone only;
joint: 5) against lightly Barlow Twins' (2 per batch). On the CPU, process CPU time on
one thread (``--threads``) is the timed quantity (robust to other jobs).

A last section times the backbone alone (forward + backward, bf16 on CUDA) on two views
fed as (a) two contiguous batches, (b) two strided views of an image-major (B·2) batch
(``GroupedBatch.view(k)``), (c) one call on the 2B images — see benchmarks/NOTES.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from lightly_derm.data import GroupedBatch  # noqa: E402
from lightly_derm.methods import APBYOL, BYOL, FGSSL, GraVIS  # noqa: E402
from lightly_derm.models import resnet  # noqa: E402
from lightly_derm.utils.host_sync import record_host_syncs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lightly_examples import LightlyBarlowTwins, LightlyBYOL, LightlySimCLR  # noqa: E402


# ---------------------------------------------------------------- the models
class Case:
    """One model in the run: how to build it, its batch, its unit of work."""

    def __init__(
        self,
        name: str,
        build: Callable[[str], nn.Module],
        views: int,
        images_factor: float = 1.0,
        passes: int = 2,
        baseline: str | None = None,
        unit: str = "image",
        manual: bool = False,
    ) -> None:
        self.name, self.build, self.views = name, build, views
        self.images_factor, self.passes = images_factor, passes
        self.baseline, self.unit, self.manual = baseline, unit, manual


def _lightly(cls: type) -> Callable[[str], nn.Module]:
    def build(backbone: str) -> nn.Module:
        net = resnet(backbone)
        return cls(net, net.feature_dim)

    return build


CASES = [
    Case("lightly BYOL", _lightly(LightlyBYOL), 2),
    Case("lightly SimCLR", _lightly(LightlySimCLR), 2),
    Case("lightly BarlowTwins", _lightly(LightlyBarlowTwins), 2),
    Case("BYOL", lambda b: BYOL(backbone=b), 2, baseline="lightly BYOL"),
    Case(
        "AP-BYOL",
        lambda b: APBYOL(backbone=b, warmup_steps=0, layers="last"),
        2,
        baseline="lightly BYOL",
    ),
    Case(
        "GraVIS K=4",
        lambda b: GraVIS(backbone=b, num_views=4),
        4,
        baseline="lightly SimCLR",
        unit="view",
    ),
    Case(
        "GraVIS K=4, B/2",
        lambda b: GraVIS(backbone=b, num_views=4),
        4,
        images_factor=0.5,
        baseline="lightly SimCLR",
        unit="view",
    ),
    Case(
        "FG-SSL progressive",
        lambda b: FGSSL(backbone=b, schedule="progressive"),
        2,
        passes=8,
        baseline="lightly BarlowTwins",
        unit="forward",
        manual=True,
    ),
    Case(
        "FG-SSL joint",
        lambda b: FGSSL(backbone=b, schedule="joint"),
        2,
        passes=5,
        baseline="lightly BarlowTwins",
        unit="forward",
        manual=True,
    ),
]
CASES_BY_NAME = {case.name: case for case in CASES}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """A built model with its optimizer, batch and step function."""

    def __init__(self, case: Case, backbone: str, args: argparse.Namespace) -> None:
        self.case = case
        self.device = torch.device(args.device)
        cuda = self.device.type == "cuda"
        self.memory_format = torch.channels_last if cuda else torch.contiguous_format
        torch.manual_seed(0)
        # torch's stubs leave out Module.to's memory_format, which it accepts
        self.model = case.build(backbone).to(  # type: ignore[call-overload]
            self.device, memory_format=self.memory_format
        )
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        if case.manual:  # Lightning's manual optimisation, without a Trainer
            self.model.optimizers = lambda *a, **k: self.optimizer  # type: ignore[method-assign]
            self.model.manual_backward = lambda loss, *a, **k: loss.backward()  # type: ignore[method-assign]
        self.images = max(2, round(args.batch_size * case.images_factor))
        self.batch = self._batch(args)
        self.autocast = cuda and not args.fp32
        self.state_bytes = sum(
            t.numel() * t.element_size()
            for t in list(self.model.parameters()) + list(self.model.buffers())
        )

    def _batch(self, args: argparse.Namespace) -> Any:
        g = torch.Generator().manual_seed(1)
        size, n, k = args.input_size, self.images, self.case.views
        views = torch.randn(n, k, 3, size, size, generator=g)  # image-major
        flat = views.flatten(0, 1).to(self.device, memory_format=self.memory_format)
        targets = torch.zeros(n, dtype=torch.long, device=self.device)
        names: list[str | None] = [f"{i}.jpg" for i in range(n)]
        if self.case.name.startswith("lightly"):
            per_view = [
                v.contiguous().to(self.device, memory_format=self.memory_format)
                for v in views.unbind(1)
            ]
            return (per_view, targets, names)
        group_ids = torch.arange(n * k, device=self.device) // k
        return GroupedBatch(flat, group_ids, targets, names)

    def step(self, index: int) -> None:
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.autocast
        ):
            loss = self.model.training_step(self.batch, index)
        if not self.case.manual:
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def optimizer_bytes(self) -> int:
        total = 0
        for state in self.optimizer.state.values():
            for value in state.values():
                if isinstance(value, Tensor):
                    total += value.numel() * value.element_size()
        grads = sum(
            p.numel() * p.element_size()
            for p in self.model.parameters()
            if p.requires_grad
        )
        return total + grads


def _count_syncs(runner: Runner, index: int) -> tuple[int, str]:
    """Host synchronisations in one step, and where (file:line counts)."""
    device = runner.device
    if device.type == "cuda":
        _sync(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                runner.step(index)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        _sync(device)
        hits = [w for w in caught if "synchroniz" in str(w.message)]
        places: dict[str, int] = {}
        for w in hits:
            where = f"{Path(w.filename).name}:{w.lineno}"
            places[where] = places.get(where, 0) + 1
        return len(hits), ", ".join(f"{k}×{v}" for k, v in places.items())
    with record_host_syncs() as records:
        runner.step(index)
    places = {}
    for record in records.syncs():
        where = record.location.split(" in ")[0]
        where = f"{Path(where.rsplit(':', 1)[0]).name}:{where.rsplit(':', 1)[1]}"
        places[where] = places.get(where, 0) + 1
    return len(records.syncs()), ", ".join(f"{k}×{v}" for k, v in places.items())


def run_backbone(backbone: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    runners: dict[str, Runner] = {}
    skipped: dict[str, str] = {}
    for name in args.models:
        case = CASES_BY_NAME[name]
        try:
            runner = Runner(case, backbone, args)
            runner.step(0)  # lazy initialisation (and the OOM check) outside the timing
            _sync(device)
            runners[name] = runner
        except torch.cuda.OutOfMemoryError:
            skipped[name] = "out of memory"
            runner = None  # type: ignore[assignment]
            if cuda:
                torch.cuda.empty_cache()
        print(f"[{backbone}] built {name}: {skipped.get(name, 'ok')}", flush=True)
    syncs = {name: _count_syncs(r, 1) for name, r in runners.items()}
    times: dict[str, list[float]] = {name: [] for name in runners}
    peaks: dict[str, int] = {name: 0 for name in runners}
    clock = time.perf_counter if cuda else time.process_time
    for i in range(args.warmup + args.steps):
        for name, runner in list(runners.items()):
            if cuda:
                _sync(device)
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            start = clock()
            try:
                runner.step(i + 2)
                _sync(device)
            except torch.cuda.OutOfMemoryError:
                skipped[name] = "out of memory"
                del runners[name]
                torch.cuda.empty_cache()
                continue
            elapsed = clock() - start
            if cuda:
                peaks[name] = max(
                    peaks[name], torch.cuda.max_memory_allocated(device) - before
                )
            if i >= args.warmup:
                times[name].append(elapsed)
    medians = {name: statistics.median(times[name]) for name in runners}
    rows = []
    for name in args.models:
        case = CASES_BY_NAME[name]
        if name not in runners:
            rows.append(
                {"backbone": backbone, "model": name, "note": skipped.get(name, "")}
            )
            continue
        runner, t = runners[name], medians[name]
        images = runner.images
        rate = {
            "image": images / t,
            "view": images * case.views / t,
            "forward": images * case.passes / t,
        }
        row: dict[str, Any] = {
            "backbone": backbone,
            "model": name,
            "images": images,
            "views": case.views,
            "ms_per_step": round(1e3 * t, 1),
            "images_per_s": round(images / t, 1),
            "views_per_s": round(images * case.views / t, 1),
            "forward_passes_per_s": round(images * case.passes / t, 1),
            "peak_step_mib": round(peaks[name] / 2**20) if cuda else "",
            "model_state_mib": round(
                (runner.state_bytes + runner.optimizer_bytes()) / 2**20
            ),
            "host_syncs": syncs[name][0],
            "sync_sites": syncs[name][1],
        }
        if case.baseline is not None and case.baseline in runners:
            base = runners[case.baseline]
            base_case = CASES_BY_NAME[case.baseline]
            base_t = medians[case.baseline]
            base_rate = {
                "image": base.images / base_t,
                "view": base.images * base_case.views / base_t,
                "forward": base.images * base_case.passes / base_t,
            }
            row["ratio"] = round(rate[case.unit] / base_rate[case.unit], 3)
            row["ratio_to"] = f"{case.baseline} per {case.unit}"
        rows.append(row)
        print(row, flush=True)
    del runners
    if cuda:
        torch.cuda.empty_cache()
    return rows


def run_layout(backbone: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Backbone fwd+bwd on two views: separate, strided image-major, one call."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    torch.manual_seed(0)
    net = resnet(backbone).to(device, memory_format=fmt).train()
    n, size = args.batch_size, args.input_size
    flat = torch.randn(n * 2, 3, size, size, device=device).to(memory_format=fmt)
    grouped = GroupedBatch(
        flat, torch.arange(2 * n, device=device) // 2, torch.zeros(n), [None] * n
    )
    strided = [grouped.view(0), grouped.view(1)]
    separate = [v.contiguous(memory_format=fmt) for v in strided]

    def forward_views(views: list[Tensor]) -> Tensor:
        return sum(net(v).float().square().mean() for v in views)  # type: ignore[return-value]

    variants = {
        "(a) two contiguous view batches": lambda: forward_views(separate),
        "(b) two strided views of image-major (GroupedBatch.view)": lambda: (
            forward_views(strided)
        ),
        "(c) one call on all 2B views (BatchNorm statistics shared)": lambda: (
            net(flat).float().square().mean()
        ),
    }
    clock = time.perf_counter if cuda else time.process_time
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(args.warmup + args.steps):
        for name, fn in variants.items():
            _sync(device)
            start = clock()
            with torch.autocast(
                device.type, dtype=torch.bfloat16, enabled=cuda and not args.fp32
            ):
                loss = fn()
            loss.backward()
            net.zero_grad(set_to_none=True)
            _sync(device)
            if i >= args.warmup:
                times[name].append(clock() - start)
    base = statistics.median(times["(a) two contiguous view batches"])
    rows = []
    for name in variants:
        t = statistics.median(times[name])
        rows.append(
            {
                "backbone": backbone,
                "layout": name,
                "ms": round(1e3 * t, 2),
                "speed_vs_a": round(base / t, 3),
            }
        )
        print(rows[-1], flush=True)
    return rows


# ---------------------------------------------------------------- report
def _table(rows: list[dict[str, Any]], keys: list[str] | None = None) -> str:
    keys = keys or list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


TARGETS = {
    "AP-BYOL": ("lightly BYOL per image", 0.95),
    "GraVIS K=4": ("lightly SimCLR per view", 0.95),
    "GraVIS K=4, B/2": ("lightly SimCLR per view", 0.95),
    "FG-SSL progressive": ("lightly BarlowTwins per forward pass", 0.9),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--models", nargs="+", default=[c.name for c in CASES])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (CPU: 1)"
    )
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    parser.add_argument("--cudnn-benchmark", action="store_true")
    parser.add_argument("--skip-layout", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write .md and .json")
    args = parser.parse_args()
    unknown = [m for m in args.models if m not in CASES_BY_NAME]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(CASES_BY_NAME)}")
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    elif args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    warnings.filterwarnings("ignore", message=".*self.log.*")
    warnings.filterwarnings("ignore", message=".*self.trainer.*")
    warnings.filterwarnings("ignore", message=".*optimizers.*")

    command = "python benchmarks/throughput.py " + " ".join(sys.argv[1:])
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    started = time.perf_counter()
    result: dict[str, Any] = {
        "command": command,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads"
        + (f", {gpu}" if gpu else "")
        + f", torch {torch.__version__}",
        "steps": [],
        "layout": [],
    }
    for backbone in args.backbones:
        result["steps"] += run_backbone(backbone, args)
        if not args.skip_layout:
            result["layout"] += run_layout(backbone, args)
    result["seconds"] = round(time.perf_counter() - started, 1)
    keys = [
        "backbone",
        "model",
        "images",
        "views",
        "ms_per_step",
        "images_per_s",
        "views_per_s",
        "forward_passes_per_s",
        "ratio",
        "ratio_to",
        "peak_step_mib",
        "model_state_mib",
        "host_syncs",
        "note",
    ]
    summary = []
    for row in result["steps"]:
        if row["model"] in TARGETS and "ratio" in row:
            unit, target = TARGETS[row["model"]]
            summary.append(
                {
                    "backbone": row["backbone"],
                    "model": row["model"],
                    "against": unit,
                    "ratio": row["ratio"],
                    "target": target,
                    "met": (
                        ("yes" if row["ratio"] >= target else "NO")
                        if device.type == "cuda"
                        else "n/a (CPU)"
                    ),
                }
            )
    print("\n" + _table(summary) if summary else "", flush=True)
    print(f"total {result['seconds']} s", flush=True)
    if args.out is None:
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    timing = (
        "process CPU time on the CPU threads given (robust to other jobs)"
        if device.type == "cpu"
        else "synchronised wall time, bf16 autocast, channels_last"
    )
    cpu_note = (
        [
            "**CPU numbers** from a small smoke run of the script on a shared CPU "
            "(fp32, no channels_last, tiny batch and images): they check that every "
            "model runs and show the relative cost of the extra work, but they are not "
            "the issue's targets, which are set for an H100 at batch 256, 224 px, "
            "bf16 (see benchmarks/NOTES.md for the GPU command).",
            "",
        ]
        if device.type == "cpu"
        else []
    )
    text = [
        f"# Training-step throughput ({args.device})",
        "",
        f"Command: `{command}`",
        "",
        *cpu_note,
        f"Machine: {result['machine']}. Batch {args.batch_size} images at "
        f"{args.input_size} px; median of {args.steps} steps after {args.warmup} "
        f"warm-up rounds, round-robin; {timing}. Total {result['seconds']} s.",
        "",
        "## Targets",
        "",
        _table(summary) if summary else "(no ratios)",
        "",
        "## All models",
        "",
        "ratio: throughput in the unit of `ratio_to` relative to that lightly baseline in "
        "this run. forward_passes_per_s counts backbone calls of one view batch (FG-SSL "
        "progressive 8 per batch, joint 5, the others 2 or K). peak_step_mib: peak "
        "memory of a step above the memory held before it; model_state_mib: parameters, "
        "buffers, gradients and optimizer state. host_syncs: in one step (sites in the "
        "JSON).",
        "",
        _table(result["steps"], keys),
        "",
    ]
    if result["layout"]:
        text += [
            "## Backbone on two views: memory layout",
            "",
            _table(result["layout"]),
            "",
        ]
    args.out.write_text("\n".join(text))


if __name__ == "__main__":
    main()
