"""Does pretraining move the backbone? Relative weight change per method, same data and steps.

A pretrained encoder can only help a downstream task if pretraining changed it. This
script trains every method named (lightly-derm's and lightly's baselines, each with its
own default arguments, transform and collate, created through the plugin registry) for
the same number of optimizer steps on the same images and reports, per method:

- ``moved``: ‖W_T − W_0‖ / ‖W_0‖ over all convolution weights of the backbone, and the
  same for ``conv1`` and the last block of ``layer4``;
- ``conv1 colour share``: the share of ``conv1``'s filter energy in the colour-opponent
  part (the filters minus their mean over the RGB channels). Random initialisation gives
  about 2/3; strong colour jitter and random grayscale in the views push it down, i.e.
  the first layer stops telling colours apart — which lesion segmentation relies on;
- the first and last training loss.

It answers "is this method's default learning rate in the right range for a short
run?" in minutes on a CPU, before any downstream evaluation is spent on an encoder that
is still at its random initialisation.

    python benchmarks/backbone_movement.py --data ../shared/data/isic2017-seg-subset \\
        --steps 20 --output benchmarks/results/backbone_movement_cpu.md
    python benchmarks/backbone_movement.py --data DIR --methods gravis \\
        --method-args lr=0.1 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightly_derm import registry  # noqa: E402
from lightly_derm.data import make_dataset  # noqa: E402

DEFAULT_METHODS = ("gravis", "fgssl", "ap_byol", "byol", "simclr", "barlow_twins")


def colour_share(weight: torch.Tensor) -> float:
    """Share of the filters' energy in their colour-opponent (zero RGB mean) part."""
    grey = weight.mean(dim=1, keepdim=True)
    return float(((weight - grey) ** 2).sum() / (weight**2).sum())


def _conv_weights(backbone: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().clone()
        for k, v in backbone.state_dict().items()
        if v.ndim == 4 and v.is_floating_point()
    }


def _relative(after: dict, before: dict, keys: list[str]) -> float:
    num = sum(float(((after[k] - before[k]) ** 2).sum()) for k in keys)
    den = sum(float((before[k] ** 2).sum()) for k in keys)
    return (num / den) ** 0.5


class _Losses(pl.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.values.append(float(loss))


def measure(
    name: str,
    data: str,
    steps: int,
    input_size: int,
    batch_size: int,
    backbone: str,
    seed: int,
    method_args: dict[str, Any],
) -> dict[str, Any]:
    """Trains one method for ``steps`` optimizer steps and measures its backbone."""
    pl.seed_everything(seed, verbose=False)
    method = registry.create("method", name, backbone=backbone, **method_args)
    before = _conv_weights(method.backbone)
    dataset = make_dataset(
        data,
        transform=method.default_transform(input_size=input_size),
        decode_size=2 * input_size,  # JPEGs decoded at reduced size, as pretrain does
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=method.default_collate(),
    )
    losses = _Losses()
    # A long nominal run, so the per-epoch cosine schedule stays near its start value.
    trainer = pl.Trainer(
        max_epochs=1000,
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[losses],
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(method, loader)
    after = _conv_weights(method.backbone)
    keys = list(before)
    last_block = [k for k in keys if k.startswith("layer4.") and ".1." in k] or keys
    return {
        "method": name,
        "method_args": method_args,
        "optimizer_steps": int(trainer.global_step),
        "batches": len(losses.values),
        "moved": _relative(after, before, keys),
        "moved_conv1": _relative(after, before, ["conv1.weight"])
        if "conv1.weight" in before
        else None,
        "moved_layer4_last": _relative(after, before, last_block),
        "conv1_colour_share_before": colour_share(before["conv1.weight"])
        if "conv1.weight" in before
        else None,
        "conv1_colour_share_after": colour_share(after["conv1.weight"])
        if "conv1.weight" in after
        else None,
        "loss_first": losses.values[0] if losses.values else None,
        "loss_last": losses.values[-1] if losses.values else None,
        "seconds": time.perf_counter() - start,
    }


def _value(text: str) -> Any:
    """A YAML value; numbers such as ``5e-4`` (a string in YAML 1.1) as floats."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _fmt(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def report(results: list[dict[str, Any]], header: str) -> str:
    """The Markdown table of the results."""
    lines = [
        header,
        "",
        "| method | args | optimizer steps | moved (all convs) | moved conv1 | moved "
        "layer4[-1] | conv1 colour share before → after | loss first → last |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        args = " ".join(f"{k}={v}" for k, v in r["method_args"].items()) or "defaults"
        lines.append(
            f"| {r['method']} | {args} | {r['optimizer_steps']} | {_fmt(r['moved'])} | "
            f"{_fmt(r['moved_conv1'])} | {_fmt(r['moved_layer4_last'])} | "
            f"{_fmt(r['conv1_colour_share_before'], 3)} → "
            f"{_fmt(r['conv1_colour_share_after'], 3)} | "
            f"{_fmt(r['loss_first'])} → {_fmt(r['loss_last'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="an image folder (e.g. ISIC)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument(
        "--method-args",
        nargs="*",
        default=[],
        help="KEY=VALUE (YAML values) for every method named",
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, help="write Markdown here (+ .json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    method_args = {k: _value(v) for k, v in (a.split("=", 1) for a in args.method_args)}
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    header = (
        f"Backbone movement after {args.steps} optimizer steps, {args.backbone}, "
        f"{args.input_size} px, batch {args.batch_size}, seed {args.seed}; data "
        f"{Path(args.data).name}; {platform.processor() or platform.machine()}, "
        f"{args.threads} thread(s), torch {torch.__version__}.\n\n`{command}`"
    )
    results = []
    for name in args.methods:
        results.append(
            measure(
                name,
                args.data,
                args.steps,
                args.input_size,
                args.batch_size,
                args.backbone,
                args.seed,
                method_args,
            )
        )
        print(json.dumps(results[-1]), flush=True)
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(report(results, header))
            args.output.with_suffix(".json").write_text(
                json.dumps({"command": command, "results": results}, indent=1)
            )
    print(report(results, header))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
