"""TracIn benchmark: batched Gram-matrix scores vs torch.func per-sample gradients, and
an AP-BYOL training step vs a plain lightly BYOL step.

    python benchmarks/tracin.py --out benchmarks/results/tracin_cpu.md
    python benchmarks/tracin.py --device cuda --out benchmarks/results/tracin_cuda.md

Part 1 scores the last Linear of a BYOL predictor (``--hidden-dim`` → ``--proj-dim``,
two views) for B in ``--batch-sizes``: ``pairwise_tracin`` (batched forward, one
``autograd.grad`` to the layer output, two Gram matrices) against per-sample gradients
from ``torch.func`` (``vmap(grad)``) dotted pairwise, both in float32 and from the same
inputs to the same (B, B) scores; the relative difference is reported as a check. Peak
memory: ``torch.cuda.max_memory_allocated`` on a GPU; on the CPU the peak RSS increase
(Linux ``VmHWM``, reset through ``/proc/self/clear_refs``) in a fresh child process per
case.

Part 2 times full training steps (forward, backward, SGD step) on one fixed batch:
lightly's own BYOL example module (heads, ``update_momentum``, ``cosine_schedule``,
``NegativeCosineSimilarity``, two forwards per network) against lightly-derm's BYOL and
APBYOL (miner on, ``warmup_steps=0``) on the same backbone, heads and batch. Models are
stepped round-robin so that load drifts hit all of them alike; the ratio is
t(lightly BYOL) / t(method), i.e. speed relative to lightly (≥ 0.95 is the target).
On CUDA: bf16 autocast, channels_last, CUDA-synchronised timing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from lightly_derm.methods import APBYOL, BYOL  # noqa: E402
from lightly_derm.miners import pairwise_tracin  # noqa: E402
from lightly_derm.models import resnet  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lightly_examples import LightlyBYOL  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- part 1: scores
def _inputs(batch: int, hidden: int, out: int, device: torch.device, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(2, batch, hidden, generator=generator).relu().to(device)
    z = torch.randn(2, batch, out, generator=generator).to(device)
    weight = (torch.randn(out, hidden, generator=generator) / hidden**0.5).to(device)
    bias = torch.zeros(out).to(device)
    return a, z, weight, bias


def _per_sample_loss(p: Tensor, z: Tensor) -> Tensor:
    """lightly's BYOL loss per sample; p, z (V=2, B, D) or (2, D) for one sample."""
    return -0.5 * (
        F.cosine_similarity(p[0], z[1], dim=-1)
        + F.cosine_similarity(p[1], z[0], dim=-1)
    )


def scores_gram(a: Tensor, z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    weight = weight.detach().requires_grad_()
    p = a @ weight.T + bias
    (g,) = torch.autograd.grad(_per_sample_loss(p, z).sum(), p)
    return pairwise_tracin([a], [g.detach()], bias=True)


def scores_torch_func(a: Tensor, z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    from torch.func import grad, vmap

    def loss_one(w: Tensor, b: Tensor, a_i: Tensor, z_i: Tensor) -> Tensor:
        return _per_sample_loss(a_i @ w.T + b, z_i)

    gw, gb = vmap(grad(loss_one, argnums=(0, 1)), in_dims=(None, None, 1, 1))(
        weight, bias, a, z
    )
    flat = torch.cat([gw.flatten(1), gb], dim=1)  # (B, D_out·D_in + D_out)
    return flat @ flat.T


METHODS = {"pairwise_tracin": scores_gram, "torch.func per-sample": scores_torch_func}


def _proc_status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> int:
    """Resets the peak RSS (Linux ``clear_refs``) and returns the current RSS in bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    current = _proc_status("VmRSS")
    return current if current is not None else _peak_rss()


def _peak_rss() -> int:
    peak = _proc_status("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _time_scores(name: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    a, z, weight, bias = _inputs(batch, args.hidden_dim, args.proj_dim, device)
    fn = METHODS[name]
    if device.type == "cpu":
        base = _reset_peak_rss()  # before the first call: the peak is a high-water mark
    fn(a, z, weight, bias)  # warm-up
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times, cpu_times = [], []
    for _ in range(args.repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(a, z, weight, bias)
        _sync(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _peak_rss() - base
    return {
        "ms": 1e3 * statistics.median(times),
        "cpu_ms": 1e3 * statistics.median(cpu_times),
        "peak_mib": max(peak, 0) / 2**20,
    }


def _child(queue: Any, name: str, batch: int, args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    queue.put(_time_scores(name, batch, args))


def _measure_scores(name: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    if args.device != "cpu":
        return _time_scores(name, batch, args)
    # A fresh process per case, so that the peak RSS belongs to this case.
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, name, batch, args))
    process.start()
    result = queue.get()
    process.join()
    return result


def part_scores(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    device = torch.device(args.device)
    for batch in args.batch_sizes:
        a, z, weight, bias = _inputs(batch, args.hidden_dim, args.proj_dim, device)
        reference = scores_torch_func(
            a.double(), z.double(), weight.double(), bias.double()
        )
        ours = scores_gram(a, z, weight, bias).double()
        rel = float((ours - reference).norm() / reference.norm())
        del a, z, reference, ours
        timings = {name: _measure_scores(name, batch, args) for name in METHODS}
        key = "cpu_ms" if args.device == "cpu" else "ms"  # CPU time: robust to load
        speedup = (
            timings["torch.func per-sample"][key] / timings["pairwise_tracin"][key]
        )
        for name, t in timings.items():
            rows.append(
                {
                    "B": batch,
                    "method": name,
                    "ms": round(t["ms"], 2),
                    "cpu_ms": round(t["cpu_ms"], 2) if args.device == "cpu" else "",
                    "peak_mib": round(t["peak_mib"], 1),
                    "speedup_vs_torch_func": round(speedup, 1)
                    if name == "pairwise_tracin"
                    else 1.0,
                    "rel_diff_vs_float64_torch_func": f"{rel:.1e}"
                    if name == "pairwise_tracin"
                    else "",
                }
            )
            print(rows[-1], flush=True)
    return rows


# ---------------------------------------------------------------- part 2: steps
def part_steps(args: argparse.Namespace) -> list[dict[str, Any]]:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dims = {
        "projection_hidden_dim": args.hidden_dim,
        "projection_dim": args.proj_dim,
        "prediction_hidden_dim": args.hidden_dim,
    }
    # Lightning modules whose training_step returns the loss tensor
    models: dict[str, Any] = {}
    torch.manual_seed(0)
    models["lightly BYOL (example)"] = LightlyBYOL(
        resnet(args.backbone),
        resnet(args.backbone).feature_dim,
        args.hidden_dim,
        args.proj_dim,
    )
    torch.manual_seed(0)
    models["lightly-derm BYOL"] = BYOL(backbone=args.backbone, **dims)
    for layers in args.layers:
        torch.manual_seed(0)
        models[f"APBYOL layers={layers}"] = APBYOL(
            backbone=args.backbone, warmup_steps=0, layers=layers, **dims
        )
    generator = torch.Generator().manual_seed(0)
    views = [
        torch.randn(
            args.step_batch, 3, args.input_size, args.input_size, generator=generator
        )
        for _ in range(2)
    ]
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    views = [v.to(device, memory_format=memory_format) for v in views]
    batch = (
        views,
        torch.zeros(args.step_batch, dtype=torch.long, device=device),
        [f"{i}.jpg" for i in range(args.step_batch)],
    )
    optimizers = {}
    for name, model in models.items():
        model.to(device, memory_format=memory_format).train()
        optimizers[name] = torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad], lr=0.06, momentum=0.9
        )

    def step(name: str) -> tuple[float, float]:
        model, optimizer = models[name], optimizers[name]
        _sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - start, time.process_time() - start_cpu

    syncs: dict[str, int | str] = {name: "n/a (CPU)" for name in models}
    if cuda:
        for name in models:
            step(name)  # lazy CUDA initialisation outside the count
        for name in models:
            # Count host syncs in one step (the timing syncs around it are outside).
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model, optimizer = models[name], optimizers[name]
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        loss = model.training_step(batch, 0)
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            syncs[name] = sum("synchroniz" in str(w.message) for w in caught)
            _sync(device)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
    for i in range(args.warmup + args.steps):
        for name in models:  # round-robin
            elapsed = step(name)
            if i >= args.warmup:
                times[name].append(elapsed)
    # On the CPU, process CPU time is robust to other jobs on the machine; on a GPU the
    # synchronised wall time is what counts.
    column = 0 if cuda else 1

    def median_of(name: str, index: int = column) -> float:
        return statistics.median(t[index] for t in times[name])

    base = median_of("lightly BYOL (example)")
    rows = []
    for name in times:
        median = median_of(name)
        rows.append(
            {
                "model": name,
                "backbone": args.backbone,
                "batch": f"{args.step_batch}×2 views @ {args.input_size}px",
                "ms_per_step": round(1e3 * median_of(name, 0), 1),
                "cpu_ms_per_step": round(1e3 * median, 1) if not cuda else "",
                "speed_vs_lightly_byol": round(base / median, 3),
                "host_syncs_per_step": syncs[name],
            }
        )
        print(rows[-1], flush=True)
    return rows


# ---------------------------------------------------------------- report
def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument(
        "--hidden-dim", type=int, default=4096, help="predictor hidden width"
    )
    parser.add_argument("--proj-dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--step-batch", type=int, default=256)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--layers", nargs="+", default=["last", "all"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-scores", action="store_true")
    parser.add_argument("--skip-steps", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=None, help="write .md and .json here"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*self.log.*")
    warnings.filterwarnings("ignore", message=".*self.trainer.*")

    command = "python benchmarks/tracin.py " + " ".join(sys.argv[1:])
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    note = (
        " The CPU is shared with other jobs: wall times are noisy; process CPU times "
        "(with --threads 1) are the comparable numbers."
        if device.type == "cpu"
        else ""
    )
    result: dict[str, Any] = {
        "command": command,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads"
        + (f", {gpu}" if gpu else "")
        + f", torch {torch.__version__}",
    }
    if not args.skip_scores:
        result["scores"] = part_scores(args)
    if not args.skip_steps:
        result["steps"] = part_steps(args)
    if args.out is None:
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    text = [
        f"# TracIn benchmark ({args.device})",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {result['machine']}.{note}",
        "",
    ]
    if "scores" in result:
        text += [
            f"## TracIn scores of the predictor's last Linear ({args.hidden_dim}→{args.proj_dim}, "
            "2 views), float32",
            "",
            "Time per call (median wall ms; on the CPU also process CPU ms, which the "
            "speed-up uses), peak extra memory; the relative difference is to float64 "
            "torch.func scores.",
            "",
            _table(result["scores"]),
            "",
        ]
    if "steps" in result:
        text += [
            "## Training step (forward, backward, SGD step) on one fixed batch",
            "",
            "speed_vs_lightly_byol = t(lightly BYOL example) / t(model), from process CPU "
            "time on the CPU and synchronised wall time on a GPU; target ≥ 0.95 for APBYOL "
            "layers=last.",
            "",
            _table(result["steps"]),
            "",
        ]
    args.out.write_text("\n".join(text))


if __name__ == "__main__":
    main()
