"""Time and peak memory of GraVISLoss against the authors' O(N³) Smooth-AP formulation.

For B images × K views (N = B·K embeddings of width D) it measures one forward and
backward pass of:

- ``gravis``: ``GraVISLoss(normalize=False, exclude_self=False)`` — the authors'
  settings, O(N²·K) tensors;
- ``authors``: the authors' ``loss.py`` formulation written below ((N, N, N) tensors);
- ``attention``: ``GraVISLoss(variant="attention")``, O(N²);
- ``ntxent``: lightly's ``NTXentLoss`` on the same N embeddings as N/2 pairs, the
  lightly baseline a grouping loss is compared with.

Time: median of ``torch.utils.benchmark.Timer.blocked_autorange`` (CUDA-synchronised).
Peak memory: CUDA ``max_memory_allocated`` above the inputs; on CPU the peak of torch's
profiler memory timeline. Largest tensor: the most elements of any tensor made in
forward or backward. Also checks that ``gravis`` and ``authors`` give the same loss.

    python benchmarks/gravis_loss.py --device cpu --output benchmarks/results/gravis_loss_cpu.md
    python benchmarks/gravis_loss.py --device cuda --autocast bf16 \\
        --output benchmarks/results/gravis_loss_cuda.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from lightly.loss import NTXentLoss
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.benchmark import Timer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightly_derm.loss import GraVISLoss  # noqa: E402


def authors_smooth_ap(preds: torch.Tensor, num_id: int, anneal: float = 0.2):
    """The authors' loss.py (Smooth-AP reference code), device-agnostic."""
    n = preds.shape[0]
    k = n // num_id

    def sigmoid(x: torch.Tensor) -> torch.Tensor:
        return 1.0 / (1.0 + torch.exp(torch.clamp(-x / anneal, min=-50, max=50)))

    mask = 1.0 - torch.eye(n, device=preds.device)
    mask = mask.unsqueeze(dim=0).repeat(n, 1, 1)
    sim_all = torch.mm(preds, preds.t())
    sim_all_repeat = sim_all.unsqueeze(dim=1).repeat(1, n, 1)
    sim_diff = sim_all_repeat - sim_all_repeat.permute(0, 2, 1)
    sim_sg = sigmoid(sim_diff) * mask
    sim_all_rk = torch.sum(sim_sg, dim=-1) + 1
    xs = preds.view(num_id, k, preds.shape[1])
    pos_mask = 1.0 - torch.eye(k, device=preds.device)
    pos_mask = pos_mask.unsqueeze(dim=0).unsqueeze(dim=0).repeat(num_id, k, 1, 1)
    sim_pos = torch.bmm(xs, xs.permute(0, 2, 1))
    sim_pos_repeat = sim_pos.unsqueeze(dim=2).repeat(1, 1, k, 1)
    sim_pos_diff = sim_pos_repeat - sim_pos_repeat.permute(0, 1, 3, 2)
    sim_pos_sg = sigmoid(sim_pos_diff) * pos_mask
    sim_pos_rk = torch.sum(sim_pos_sg, dim=-1) + 1
    ap = torch.zeros(1, device=preds.device)
    for ind in range(num_id):
        block = slice(ind * k, (ind + 1) * k)
        pos_divide = torch.sum(sim_pos_rk[ind] / sim_all_rk[block, block])
        ap = ap + ((pos_divide / k) / n)
    return (1 - ap)[0]


class LargestTensor(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def peak_bytes(step: Callable[[], object], device: torch.device) -> int:
    """Peak memory above what is allocated before ``step``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(
        activities=[ProfilerActivity.CPU],
        profile_memory=True,
        record_shapes=True,
        with_stack=True,
    ) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # export_memory_timeline: deprecated, CPU-capable
        path = Path(tmp) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    return int(max((sum(s) for s in sizes), default=0))


def losses(
    batch_size: int,
) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    gravis = GraVISLoss(normalize=False, exclude_self=False)
    attention = GraVISLoss(variant="attention")
    ntxent = NTXentLoss(temperature=0.2)

    def pairs(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        half = z.shape[0] // 2
        return ntxent(z[:half], z[half : 2 * half])

    return {
        "gravis": gravis,
        "authors": lambda z, g: authors_smooth_ap(z, batch_size),
        "attention": attention,
        "ntxent": pairs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", default="4,8,16", help="images per batch")
    parser.add_argument("--views", default="2,4,10,20", help="views per image")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--autocast", choices=["none", "bf16"], default="none")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds")
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads (0: torch's)"
    )
    parser.add_argument(
        "--output", type=Path, help=".md file; a .json is written beside it"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    autocast = args.autocast == "bf16"
    rows = []
    for batch_size in map(int, args.batch_sizes.split(",")):
        for num_views in map(int, args.views.split(",")):
            n = batch_size * num_views
            gen = torch.Generator().manual_seed(n)
            # Raw dot products of order 1 (the authors' unnormalised embeddings).
            z0 = (torch.randn(n, args.dim, generator=gen) / args.dim**0.5).to(device)
            g = torch.arange(batch_size, device=device).repeat_interleave(num_views)
            values = {}
            for name, fn in losses(batch_size).items():
                z = z0.clone().requires_grad_(True)

                def step(fn=fn, z=z, g=g) -> torch.Tensor:
                    z.grad = None
                    with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                        loss = fn(z, g)
                    loss.backward()
                    return loss

                values[name] = float(step())
                timer = Timer("step()", globals={"step": step})
                seconds = timer.blocked_autorange(min_run_time=args.min_run_time).median
                peak = peak_bytes(step, device)
                with LargestTensor() as probe:
                    step()
                rows.append(
                    {
                        "images": batch_size,
                        "views": num_views,
                        "N": n,
                        "loss": name,
                        "ms": seconds * 1e3,
                        "peak_mib": peak / 2**20,
                        "largest_tensor": probe.numel,
                        "value": values[name],
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
            rows[-4]["abs_diff_vs_authors"] = abs(values["gravis"] - values["authors"])
    write(rows, args, device, argv)


def write(
    rows: list[dict], args: argparse.Namespace, device: torch.device, argv
) -> None:
    command = "python benchmarks/gravis_loss.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    by_key = {(r["images"], r["views"], r["loss"]): r for r in rows}
    lines = [
        "# GraVISLoss vs the authors' O(N³) Smooth-AP: forward + backward",
        "",
        f"Command: `{command}`",
        "",
        f"Device: {args.device} ({name}); torch {torch.__version__}; D = {args.dim}; "
        f"autocast: {args.autocast}; load average at the end: "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}. Time: median of "
        "blocked_autorange. Peak: memory above the inputs during one step. Largest: "
        "most elements of one tensor.",
        "",
        "| images | views | N | loss | time (ms) | × authors' time | peak (MiB) | "
        "× authors' peak | largest tensor | loss value |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ref = by_key[(r["images"], r["views"], "authors")]
        lines.append(
            f"| {r['images']} | {r['views']} | {r['N']} | {r['loss']} | {r['ms']:.2f} | "
            f"{r['ms'] / ref['ms']:.3f} | {r['peak_mib']:.2f} | "
            f"{r['peak_mib'] / ref['peak_mib'] if ref['peak_mib'] else float('nan'):.3f} | "
            f"{r['largest_tensor']:,} | {r['value']:.6f} |"
        )
    diffs = [r["abs_diff_vs_authors"] for r in rows if "abs_diff_vs_authors" in r]
    lines += [
        "",
        f"Largest |gravis − authors| loss difference over all sizes: {max(diffs):.2e}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        args.output.with_suffix(".json").write_text(
            json.dumps({"command": command, "device": name, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
