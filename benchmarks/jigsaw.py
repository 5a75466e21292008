"""Batched jigsaw (Triton kernel on CUDA, one gather elsewhere) vs the copy floor.

For a batch of B images (C = 3) of S × S pixels and each grid g (tiles per side) it times:

- ``batched``: :func:`lightly_derm.transforms.jigsaw_shuffle` on the whole batch — what
  :class:`~lightly_derm.methods.FGSSL` does on the GPU — including drawing the B
  permutations, on its default path: the Triton kernel of
  :mod:`lightly_derm.transforms.jigsaw_kernel` for CUDA tensors, one ``index_select``
  of tile-row segments otherwise;
- ``permute only``: the same path on fixed permutations (``permute_tiles(check=False)``),
  i.e. ``batched`` without drawing the permutations;
- ``index_select``: ``jigsaw_shuffle`` forced onto the portable gather
  (``LIGHTLY_DERM_JIGSAW_BACKEND=index_select``), the previous default on CUDA; on the
  CPU it is the default path, so the column is left out there;
- ``per_image``: the same function called image by image and stacked, what a
  per-sample transform in the data loader (:class:`~lightly_derm.transforms.HierarchicalJigsaw`)
  costs when run on the same device;
- ``tile_loop``: the FG-SSL/PMG authors' algorithm, a Python loop of g² tile swaps on the
  whole batch (one permutation for the batch, not per sample), written out below;
- ``copy floor``: the bytes a permutation must read and write (2 · B·C·S²·itemsize)
  over the device's copy bandwidth, measured once as ``dst.copy_(src)`` of the largest
  batch into a preallocated ``dst`` (the memory-bandwidth lower bound of any jigsaw);
- ``clone``: ``images.clone()``, the floor of any out-of-place operation *including*
  allocating its output. On the GPU the caching allocator makes this equal to the copy
  floor; on the CPU, fresh large allocations are page-faulted in by the kernel, which
  often costs more than the copy itself, and every out-of-place op (the jigsaw too)
  pays it.

Time: median of ``--repeats`` runs after warm-up; on the GPU each run is timed by CUDA
events around the call (no host synchronisation between runs, so the host's launch
overhead counts only where the GPU waits for it). The ``batched`` output is checked
against the per-image result and against ``index_select`` for the same permutations.
On CUDA, ``peak MiB`` is ``torch.cuda.max_memory_allocated`` above the input batch.
``--sweep`` also times the kernel with a few other block shapes (for tuning
:func:`~lightly_derm.transforms.jigsaw_kernel.block_config`).

    python benchmarks/jigsaw.py --device cpu --batch-size 256 \\
        --output benchmarks/results/jigsaw_cpu.md
    python benchmarks/jigsaw.py --device cuda --batch-size 256 --repeats 50 \\
        --skip-loops --alternatives --sweep --output benchmarks/results/jigsaw_cuda.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightly_derm.transforms import jigsaw as jigsaw_module  # noqa: E402
from lightly_derm.transforms import (  # noqa: E402
    jigsaw_shuffle,
    permute_tiles,
    random_tile_permutations,
)


def authors_tile_loop(images: torch.Tensor, grid: int) -> torch.Tensor:
    """The algorithm of PMG's and FG-SSL's jigsaw: g² swaps of tile 0 with a random tile.

    One random order of the tiles for the whole batch; each step swaps the top-left tile
    with the next tile of the order (square tiles of side S // g, as the authors assume).
    """
    side = images.shape[-1] // grid
    out = images.clone()

    def tile(index: int) -> tuple[slice, slice]:
        row, col = divmod(index, grid)
        return slice(row * side, (row + 1) * side), slice(col * side, (col + 1) * side)

    first = tile(0)
    for index in torch.randperm(grid * grid).tolist():
        other = tile(index)
        saved = out[..., first[0], first[1]].clone()
        out[..., first[0], first[1]] = out[..., other[0], other[1]].clone()
        out[..., other[0], other[1]] = saved
    return out


def advanced_index(images: torch.Tensor, grid: int, perm: torch.Tensor) -> torch.Tensor:
    """Alternative one-kernel gather: advanced indexing of the (B, C, g, th, g, tw) view.

    Five broadcast index tensors (b, c, source tile row, pixel row, source tile column)
    put the result straight into NCHW order; no index of the image's size is built.
    """
    b, c, h, w = images.shape
    th, tw = h // grid, w // grid
    view = images.unflatten(3, (grid, tw)).unflatten(2, (grid, th))
    q = perm.view(b, 1, grid, 1, grid)
    src_i = torch.div(q, grid, rounding_mode="floor")
    dev = images.device
    return view[
        torch.arange(b, device=dev).view(b, 1, 1, 1, 1),
        torch.arange(c, device=dev).view(1, c, 1, 1, 1),
        src_i,
        torch.arange(th, device=dev).view(1, 1, 1, th, 1),
        q - src_i * grid,
    ].view(b, c, h, w)


def tile_major(images: torch.Tensor, grid: int, perm: torch.Tensor) -> torch.Tensor:
    """Alternative in three passes: tiles to (B·g², C·th·tw), gather whole tiles, back."""
    b, c, h, w = images.shape
    th, tw = h // grid, w // grid
    tiles = images.view(b, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(b * grid * grid, -1)
    offset = torch.arange(b, device=images.device).view(b, 1) * grid * grid
    out = tiles.index_select(0, (perm + offset).reshape(-1))
    out = out.view(b, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5)
    return out.reshape(b, c, h, w)


def per_image(images: torch.Tensor, grid: int) -> torch.Tensor:
    return torch.stack([jigsaw_shuffle(image[None], grid)[0][0] for image in images])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], object], device: torch.device, repeats: int, warmup: int
) -> float:
    """Median time in ms: CUDA events around each call on the GPU, wall time on the CPU."""
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(repeats)
        ]
        for first, last in events:
            first.record()
            fn()
            last.record()
        sync(device)
        return statistics.median(first.elapsed_time(last) for first, last in events)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


class forced_backend:
    """Sets ``LIGHTLY_DERM_JIGSAW_BACKEND`` for the duration of a ``with`` block."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def __enter__(self) -> None:
        self.saved = os.environ.get(jigsaw_module.BACKEND_ENV)
        os.environ[jigsaw_module.BACKEND_ENV] = self.backend

    def __exit__(self, *args: object) -> None:
        if self.saved is None:
            del os.environ[jigsaw_module.BACKEND_ENV]
        else:
            os.environ[jigsaw_module.BACKEND_ENV] = self.saved


def kernel_configs(images: torch.Tensor, grid: int) -> tuple[Any, list[Any]]:
    """The kernel's default block config for this batch and a few neighbours."""
    from lightly_derm.transforms import jigsaw_kernel as jk

    _, channels, height, width = images.shape
    tile_bytes = width // grid * images.element_size()
    if jk._channels_last(images):
        tile_bytes *= channels
    word = next(w for w in (8, 4, 2, 1) if tile_bytes % w == 0)
    tile_h, tile_words = height // grid, tile_bytes // word
    default = jk.block_config(tile_h, tile_words * grid, tile_words, word)
    bh, bw, warps, vec = default
    variants = [
        jk.BlockConfig(max(1, bh // 2), bw, max(1, warps // 2), vec),
        jk.BlockConfig(bh * 2, bw, min(16, warps * 2), vec),
        jk.BlockConfig(bh, bw, max(1, warps // 2), vec),
        jk.BlockConfig(bh, bw, min(16, warps * 2), vec),
        jk.BlockConfig(bh * 2, max(vec, bw // 2), warps, vec),
        jk.BlockConfig(max(1, bh // 2), bw * 2, warps, vec),
    ]
    unique = []
    for config in variants:
        if config != default and config not in unique:
            unique.append(config)
    return default, unique


def copy_bandwidth(src: torch.Tensor, repeats: int) -> float:
    """Bytes read + written per second by ``dst.copy_(src)``."""
    dst = torch.empty_like(src)
    ms = timed(lambda: dst.copy_(src), src.device, max(repeats, 5), 2)
    return 2 * src.numel() * src.element_size() / (ms / 1e3)


def divisors(size: int, low: int, high: int) -> list[int]:
    return [g for g in range(low, high + 1) if size % g == 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    parser.add_argument(
        "--grids",
        type=int,
        nargs="+",
        default=None,
        help="default: every divisor of the size from 2 to 32",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16", "uint8"],
    )
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--loop-repeats", type=int, default=1, help="repeats of the slow loops"
    )
    parser.add_argument(
        "--skip-loops", action="store_true", help="time only batched and floor"
    )
    parser.add_argument(
        "--alternatives",
        action="store_true",
        help="also time two other gathers (advanced indexing; tile-major in 3 passes)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also time the kernel with other block shapes (CUDA only)",
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    memory_format = (
        torch.channels_last if args.channels_last else torch.contiguous_format
    )
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"{platform.machine()}, {torch.get_num_threads()} threads"
    probe = torch.empty(1, 3, 2, 2, device=device)
    uses_kernel = jigsaw_module._use_kernel(probe)
    if uses_kernel:
        import triton

        path = f"Triton kernel (triton {triton.__version__})"
    else:
        path = "index_select"
    sweep = args.sweep and uses_kernel

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    largest = torch.rand(
        args.batch_size, 3, max(args.sizes), max(args.sizes), device=device
    )
    bandwidth = copy_bandwidth(largest.to(dtype), args.repeats)
    del largest

    rows = []
    for size in args.sizes:
        images = (torch.rand(args.batch_size, 3, size, size, device=device) * 255).to(
            dtype
        )
        images = images.contiguous(memory_format=memory_format)
        nbytes = images.numel() * images.element_size()
        floor_ms = 2 * nbytes / bandwidth * 1e3
        clone_ms = timed(images.clone, device, args.repeats, args.warmup)
        for grid in args.grids or divisors(size, 2, 32):
            if size % grid:
                print(f"skip size {size} grid {grid}: does not divide", file=sys.stderr)
                continue
            # correctness: the batched path equals image-by-image permutation, and
            # (where the kernel runs) the index_select path on the whole batch
            _, perm = jigsaw_shuffle(images[:4], grid)
            batched_out = permute_tiles(images[:4], perm)
            singles = torch.cat(
                [permute_tiles(images[i : i + 1], perm[i : i + 1]) for i in range(4)]
            )
            assert torch.equal(batched_out, singles)
            full_perm = random_tile_permutations(args.batch_size, grid, device=device)
            expected = jigsaw_module._permute_tiles_index_select(
                images, grid, full_perm
            )
            assert torch.equal(permute_tiles(images, full_perm, check=False), expected)

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            batched = timed(
                partial(jigsaw_shuffle, images, grid), device, args.repeats, args.warmup
            )
            peak = (
                (torch.cuda.max_memory_allocated(device) - base) / 2**20
                if device.type == "cuda"
                else None
            )
            permute_only = timed(
                partial(permute_tiles, images, full_perm, check=False),
                device,
                args.repeats,
                args.warmup,
            )
            row = {
                "size": size,
                "grid": grid,
                "tile": size // grid,
                "batched_ms": batched,
                "floor_ms": floor_ms,
                "batched_over_floor": batched / floor_ms,
                "permute_only_ms": permute_only,
                "permute_only_over_floor": permute_only / floor_ms,
                "clone_ms": clone_ms,
                "batched_over_clone": batched / clone_ms,
                "batched_gbps": 2 * nbytes / (batched / 1e3) / 1e9,
                "peak_mib": peak,
            }
            if uses_kernel:
                with forced_backend("index_select"):
                    row["index_select_ms"] = timed(
                        partial(jigsaw_shuffle, images, grid),
                        device,
                        args.repeats,
                        args.warmup,
                    )
                row["index_select_over_floor"] = row["index_select_ms"] / floor_ms
                row["index_select_over_batched"] = row["index_select_ms"] / batched
            if sweep:
                from lightly_derm.transforms import jigsaw_kernel as jk

                default, variants = kernel_configs(images, grid)
                out = torch.empty_like(images)
                results = []
                for config in [default, *variants]:
                    call = partial(
                        jk.permute_tiles_triton,
                        images,
                        grid,
                        full_perm,
                        out=out,
                        config=config,
                    )
                    call()
                    assert torch.equal(out, expected), config
                    results.append(
                        [*config, timed(call, device, args.repeats, args.warmup)]
                    )
                row["sweep"] = results
                best = min(results, key=lambda r: r[-1])
                row["sweep_default_ms"] = results[0][-1]
                row["sweep_best"] = best
                del out
            if args.alternatives:
                for alt_name, fn in (
                    ("advanced_index", advanced_index),
                    ("tile_major", tile_major),
                ):
                    assert torch.equal(fn(images, grid, full_perm), expected), alt_name
                    row[f"{alt_name}_ms"] = timed(
                        partial(fn, images, grid, full_perm),
                        device,
                        args.repeats,
                        args.warmup,
                    )
                    row[f"{alt_name}_over_floor"] = row[f"{alt_name}_ms"] / floor_ms
            del expected
            if not args.skip_loops:
                row["per_image_ms"] = timed(
                    partial(per_image, images, grid), device, args.loop_repeats, 1
                )
                row["tile_loop_ms"] = timed(
                    partial(authors_tile_loop, images, grid),
                    device,
                    args.loop_repeats,
                    1,
                )
                row["per_image_over_batched"] = row["per_image_ms"] / batched
                row["tile_loop_over_batched"] = row["tile_loop_ms"] / batched
            rows.append(row)
            print(json.dumps(row), flush=True)

    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    command = "python " + shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    result = {
        "command": command,
        "device": f"{device.type} ({device_name})",
        "torch": torch.__version__,
        "batched_path": path,
        "batch_size": args.batch_size,
        "dtype": args.dtype,
        "channels_last": args.channels_last,
        "copy_bandwidth_gbps": bandwidth / 1e9,
        "load_average_1min": [load_before, load_after],
        "rows": rows,
    }
    if args.output is None:
        print(json.dumps(result, indent=1))
        return
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")

    def fmt(value: float | None, digits: int = 2) -> str:
        return "–" if value is None else f"{value:,.{digits}f}"

    timing = (
        "median of CUDA-event times around each call"
        if device.type == "cuda"
        else "median wall time"
    )
    lines = [
        "# Jigsaw: batched (one pass) vs index_select, per-image loop and the copy floor",
        "",
        f"Command: `{command}`",
        "",
        f"Device: {device.type} ({device_name}); torch {torch.__version__}; batched path: "
        f"{path}; B = {args.batch_size}, C = 3, {args.dtype}"
        f"{', channels-last' if args.channels_last else ''}; measured copy "
        f"bandwidth {bandwidth / 1e9:.1f} GB/s (read + write). Time: {timing}, "
        f"{args.repeats} runs (loops: {args.loop_repeats}). Floor: 2·bytes / copy "
        "bandwidth; clone: `images.clone()`, an out-of-place copy including the "
        "allocation. `batched` draws the permutations and permutes (`jigsaw_shuffle`); "
        "`permute only` permutes with fixed permutations (`permute_tiles(check=False)`); "
        "`index_select` is `jigsaw_shuffle` forced onto the portable gather. "
        "`tile loop` is the authors' algorithm (one permutation for the whole batch). "
        f"Host 1-minute load average {load_before or 0:.2f} at the start, "
        f"{load_after or 0:.2f} at the end "
        f"({os.cpu_count()} CPUs): other jobs share the machine when it exceeds the CPUs.",
        "",
        "| size | grid | tile px | batched (ms) | copy floor (ms) | batched / floor | "
        "permute only (ms) | permute only / floor | index_select (ms) | "
        "index_select / floor | clone (ms) | batched GB/s | per-image (ms) | "
        "per-image / batched | tile loop (ms) | tile loop / batched | peak MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['grid']} | {r['tile']} | {fmt(r['batched_ms'], 3)} | "
            f"{fmt(r['floor_ms'], 3)} | {fmt(r['batched_over_floor'])} | "
            f"{fmt(r['permute_only_ms'], 3)} | {fmt(r['permute_only_over_floor'])} | "
            f"{fmt(r.get('index_select_ms'), 3)} | "
            f"{fmt(r.get('index_select_over_floor'))} | {fmt(r['clone_ms'], 3)} | "
            f"{fmt(r['batched_gbps'], 1)} | {fmt(r.get('per_image_ms'))} | "
            f"{fmt(r.get('per_image_over_batched'), 1)} | {fmt(r.get('tile_loop_ms'))} | "
            f"{fmt(r.get('tile_loop_over_batched'), 1)} | {fmt(r['peak_mib'], 0)} |"
        )
    if sweep:
        lines += [
            "",
            "Kernel block shapes (`permute_tiles_triton(config=...)`, fixed permutations, "
            "preallocated output): the default of `block_config` and the fastest of "
            "its neighbours (block_h, block_w in words, warps, words per access).",
            "",
            "| size | grid | default | default (ms) | / floor | best | best (ms) | / floor |",
            "|---:|---:|---|---:|---:|---|---:|---:|",
        ]
        for r in rows:
            d, b = r["sweep"][0], r["sweep_best"]
            lines.append(
                f"| {r['size']} | {r['grid']} | {tuple(d[:4])} | {fmt(d[4], 3)} | "
                f"{fmt(d[4] / r['floor_ms'])} | {tuple(b[:4])} | {fmt(b[4], 3)} | "
                f"{fmt(b[4] / r['floor_ms'])} |"
            )
    if args.alternatives:
        lines += [
            "",
            "Other gathers (same permutations, without drawing them), for comparison:",
            "",
            "| size | grid | permute only (ms) | advanced indexing (ms) | / floor | "
            "tile-major 3 passes (ms) | / floor |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['size']} | {r['grid']} | {fmt(r['permute_only_ms'], 3)} | "
                f"{fmt(r['advanced_index_ms'], 3)} | "
                f"{fmt(r['advanced_index_over_floor'])} | "
                f"{fmt(r['tile_major_ms'], 3)} | {fmt(r['tile_major_over_floor'])} |"
            )
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output} and {args.output.with_suffix('.json')}")


if __name__ == "__main__":
    main()
