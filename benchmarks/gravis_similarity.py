"""GraVIS's similarity settings: saturation of the sigmoid and sharpness of the ranking.

GraVISLoss (Smooth-AP) ranks views through σ((s_nk − s_nj)/τ). Two things decide
whether a (normalize, τ) setting trains: the sigmoid must not be saturated (otherwise
almost no triple (n, j, k) passes gradient), and the smoothed AP must follow the true
AP (otherwise the loss optimises a blurred ranking). For views of shared ISIC 2017
images (GraVISTransform, K = 4) embedded by :class:`~lightly_derm.methods.GraVIS`
(ResNet-18, default head), at initialisation and after a few training steps, it
reports per setting:

- ``unsaturated``: fraction of the triples (n, j ∈ G(n), k ≠ j) with |s_nk − s_nj|/τ
  < 4.6, where σ' is above 4 % of its peak (the triples that carry gradient);
- ``|AP_smooth − AP|``: mean over anchors and positives of the gap between the smoothed
  precision R_pos/R_all and the true one (ranks by counting);
- ``grad``: ‖∂L/∂z‖ over the embeddings, relative to the embeddings' norm.

Settings: cosine similarities (``normalize=True``) at τ ∈ {0.01, 0.05, 0.1, 0.2} (0.01 is
Smooth-AP's, 0.2 the previous default) and raw dot products at τ = 0.2 (the authors').

    OMP_NUM_THREADS=1 python benchmarks/gravis_similarity.py \\
        --output benchmarks/results/gravis_similarity_cpu.md
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

ISIC = Path("/work/shared/data/isic2017-seg-subset")
SETTINGS = [(True, 0.01), (True, 0.05), (True, 0.1), (True, 0.2), (False, 0.2)]


def metrics(
    z: torch.Tensor, group_ids: torch.Tensor, normalize: bool, tau: float
) -> dict:
    from lightly_derm.loss import GraVISLoss

    z = z.detach().double().requires_grad_(True)
    loss = GraVISLoss(temperature=tau, normalize=normalize)(z, group_ids)
    (grad,) = torch.autograd.grad(loss, z)
    e = F.normalize(z.detach(), dim=1) if normalize else z.detach()
    sim = e @ e.T
    n = sim.shape[0]
    same = group_ids[:, None] == group_ids[None, :]
    unsaturated, gaps = [], []
    for a in range(n):
        for j in torch.nonzero(same[a]).flatten().tolist():
            diff = (sim[a] - sim[a, j]) / tau
            others = torch.ones(n, dtype=torch.bool)
            others[j] = False
            unsaturated.append((diff[others].abs() < 4.6).double().mean())
            smooth_all = 1 + torch.sigmoid(diff[others]).sum()
            smooth_pos = 1 + torch.sigmoid(diff[others & same[a]]).sum()
            true_all = 1 + (diff[others] > 0).sum()
            true_pos = 1 + (diff[others & same[a]] > 0).sum()
            gaps.append(abs(smooth_pos / smooth_all - true_pos / true_all))
    return {
        "normalize": normalize,
        "tau": tau,
        "loss": float(loss.detach()),
        "unsaturated": float(torch.stack(unsaturated).mean()),
        "ap_gap": float(torch.stack(gaps).mean()),
        "grad": float(grad.norm() / z.detach().norm()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from lightly_derm.data import GroupedViewCollate
    from lightly_derm.loss import GraVISLoss
    from lightly_derm.methods import GraVIS

    torch.manual_seed(0)
    model = GraVIS(backbone="resnet18")
    transform = model.default_transform(input_size=args.size)
    images = []
    for path in sorted((ISIC / "images").glob("ISIC_*.jpg"))[: args.images]:
        with Image.open(path) as image:
            image.draft("RGB", (2 * args.size, 2 * args.size))
            images.append(image.convert("RGB"))
    collate = GroupedViewCollate()

    def batch():
        return collate([(transform(image), 0) for image in images])

    rows = []
    trained: dict[float, tuple[float, float]] = {}
    probe = batch()

    def measure(state: str) -> None:
        model.train()  # BatchNorm on batch statistics, as in training
        with torch.no_grad():
            z = model.forward_projection(probe.views)
        norm = float(z.norm(dim=1).mean())
        for normalize, tau in SETTINGS:
            row = {"state": state, "embedding_norm": norm}
            row.update(metrics(z, probe.group_ids, normalize, tau))
            rows.append(row)
            print(row, flush=True)

    measure("init")
    initial = copy.deepcopy(model.state_dict())
    # short runs from the same start with cosine at τ = 0.2 (the old default) and 0.01
    for tau in (0.2, 0.01):
        model.load_state_dict(initial)
        criterion = GraVISLoss(temperature=tau, normalize=True)
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
        torch.manual_seed(1)
        losses = []
        for _ in range(args.steps):
            b = batch()
            loss = criterion(model.forward_projection(b.views), b.group_ids)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
        print(
            f"training with cosine tau={tau}: loss {losses[0]:.4f} -> {losses[-1]:.4f}"
        )
        trained[tau] = (losses[0], losses[-1])
        measure(f"after {args.steps} steps at cosine τ = {tau}")

    command = "OMP_NUM_THREADS=1 python " + " ".join(shlex.quote(a) for a in sys.argv)
    lines = [
        "# GraVIS similarity settings: sigmoid saturation and ranking sharpness",
        "",
        f"Command: `{command}`",
        "",
        f"Device: cpu ({platform.machine()}); torch {torch.__version__}; GraVIS "
        f"(ResNet-18, head 512→2048→128), {args.images} ISIC 2017 images × 4 views at "
        f"{args.size} px (N = {4 * args.images}), BatchNorm in training mode. Other "
        f"states: after {args.steps} SGD steps (lr {args.lr}, momentum 0.9) from the "
        "same start with cosine similarities at τ = 0.2 or 0.01. unsaturated: fraction of triples with |Δs|/τ < 4.6; "
        "|AP_smooth − AP|: mean gap of smoothed and true precision; grad: "
        "‖∂L/∂z‖ / ‖z‖.",
        "",
        "| state | similarity | τ | loss | unsaturated | abs(AP_smooth − AP) | grad | "
        "mean ‖z‖ |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['state']} | {'cosine' if row['normalize'] else 'dot product'} | "
            f"{row['tau']} | {row['loss']:.4f} | {row['unsaturated']:.3f} | "
            f"{row['ap_gap']:.3f} | {row['grad']:.2e} | {row['embedding_norm']:.2f} |"
        )
    lines.append("")
    for tau, (first, last) in trained.items():
        lines.append(
            f"Training loss (its own τ) with cosine τ = {tau}: {first:.4f} → {last:.4f} "
            f"over {args.steps} steps."
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    args.output.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
