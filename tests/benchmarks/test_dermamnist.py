"""benchmarks/dermamnist.py: the smoke path end to end, and the epoch planning."""

from __future__ import annotations

import argparse
import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

dermamnist = pytest.importorskip("dermamnist")


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        struct.pack(">i", n) for n in array.shape
    )
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def fashion_folder(root: Path, n_train: int = 60, n_test: int = 20) -> Path:
    """A tiny Fashion-MNIST-layout folder: 10 classes of bright/dark 28×28 squares."""
    rng = np.random.default_rng(0)
    root.mkdir()
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 * label : 2 * label + 8, 4:24] += 150
        _idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        _idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path: Path, dermamnist_dir: Path, one_thread) -> None:
    """Both datasets, one dermatology method, both baselines, inline; tables and JSON."""
    out = tmp_path / "out"
    argv = [
        "--smoke", "--device", "cpu", "--jobs", "0", "--loader-workers", "0",
        "--dermamnist", str(dermamnist_dir), "--fashion-mnist", str(fashion_folder(tmp_path / "fmnist")),
        "--fashion-val", "20", "--methods", "fgssl", "--limit-train", "16", "--limit-eval", "20",
        "--batch-size", "8", "--probe-iters", "20",
        "--epochs", "auto", "--max-epochs", "1", "--calibration-steps", "3", "--time-budget-minutes", "20", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    summary = dermamnist.main(argv)
    for dataset in ("dermamnist", "fashion_mnist"):
        assert {m: r["status"] for m, r in summary[dataset].items()} == {
            "fgssl": "ok",
            "random": "ok",
            "supervised": "ok",
        }
        fgssl = summary[dataset]["fgssl"]
        assert fgssl["epochs_done"] == 1 and fgssl["method_kwargs"]["grids"] == [
            7,
            4,
            2,
        ]
        for protocol in ("knn", "linear"):
            for split in ("val", "test"):
                assert 0 <= fgssl[protocol][split]["balanced_accuracy"] <= 1
        assert fgssl["knn"]["k"] in dermamnist.KNN_K
        assert fgssl["linear"]["weight_decay"] in dermamnist.PROBE_WEIGHT_DECAY
        assert 0 <= summary[dataset]["supervised"]["finetune"]["test"]["accuracy"] <= 1
    saved = json.loads((out / "dermamnist_results.json").read_text())
    # --epochs auto measured the method's step on the device and its augmentation cost
    assert saved["epochs_mode"].startswith("chosen by --epochs auto")
    assert saved["calibration"]["fgssl"]["device_s_per_step"] > 0
    assert saved["calibration"]["fgssl"]["cpu_s_per_image"] > 0
    assert saved["calibration"]["eval"]["device_s_per_image"] > 0
    assert saved["plan"]["max_train_s"]["dermamnist/fgssl"] >= 60  # the CPU caps
    assert saved["plan"]["epochs"] == {
        "dermamnist": 1,
        "fashion_mnist": 1,
    }  # --max-epochs
    # stratified caps: 40 training images (4 per class) → 2 per class of the 16 asked;
    # DermaMNIST keeps at least one image of each of its 7 classes
    assert saved["data"]["fashion_mnist"]["sizes"] == {
        "train": 20,
        "val": 20,
        "test": 20,
    }
    assert 16 <= saved["data"]["dermamnist"]["sizes"]["train"] <= 16 + 7
    markdown = (out / "dermamnist_results.md").read_text()
    assert (
        "CPU smoke run, not a result" in markdown and "lightly-derm FG-SSL" in markdown
    )
    assert (
        "majority class (quoted, MedMNIST v2) | — | — | — | — | — | 0.669" in markdown
    )
    assert ".. list-table::" in (out / "dermamnist_results.rst").read_text()
    # the tables can be rebuilt from the job files alone
    assert (
        dermamnist.main(["--aggregate-only", "--out", str(out)]).keys()
        == summary.keys()
    )


def test_plan_fits_the_budget() -> None:
    args = argparse.Namespace(
        methods=["simclr", "gravis"], baselines=["random"], datasets=["dermamnist", "fashion_mnist"],
        batch_size=100, epochs="auto", fashion_epochs="auto", max_epochs=200, gpu_efficiency=0.5,
        cpu_efficiency=1.0, loader_workers="auto", fashion_share=0.5,
    )  # fmt: skip
    data = {
        "dermamnist": {"sizes": {"train": 1000}},
        "fashion_mnist": {"sizes": {"train": 10000}},
    }
    cost = {
        "simclr": {"cpu_s_per_image": 1e-4, "device_s_per_step": 0.01},
        "gravis": {"cpu_s_per_image": 3e-4, "device_s_per_step": 0.03},
    }
    plan = dermamnist.plan(args, data, cost, available_s=100.0)
    # DermaMNIST: 10 steps × 0.04 s = 0.4 s device per epoch → 0.8 s at 50 % efficiency,
    # CPU 1000 × 4e-4 = 0.4 core-s: device-bound; half of 100 s → 62 epochs.
    assert plan["epochs"]["dermamnist"] == 62
    assert plan["epochs"]["fashion_mnist"] == 6
    args.max_epochs = 10
    assert (
        dermamnist.plan(args, data, cost, available_s=100.0)["epochs"]["dermamnist"]
        == 10
    )
    args.epochs, args.fashion_epochs = "3", "2"
    fixed = dermamnist.plan(args, data, cost, available_s=1.0)
    assert fixed["epochs"] == {"dermamnist": 3, "fashion_mnist": 2}
    # loader workers follow the augmentation work (GraVIS 3× SimCLR's per image)
    workers = fixed["workers"]
    assert (
        workers[("fashion_mnist", "gravis")] > workers[("fashion_mnist", "simclr")] >= 1
    )


def test_cpu_plan_shares_the_cores_and_caps_each_job(monkeypatch) -> None:
    """On the CPU, steps, augmentation and evaluation share the cores; jobs get caps."""
    monkeypatch.setattr(dermamnist.os, "cpu_count", lambda: 2)
    args = argparse.Namespace(
        methods=["simclr", "gravis"], baselines=["random"], datasets=["dermamnist"], device="cpu",
        batch_size=100, epochs="auto", fashion_epochs="auto", max_epochs=1000, gpu_efficiency=0.5,
        cpu_efficiency=1.0, loader_workers="auto", fashion_share=0.5,
    )  # fmt: skip
    data = {"dermamnist": {"sizes": {"train": 1000, "val": 100, "test": 100}}}
    cost = {
        "simclr": {"cpu_s_per_image": 1e-4, "device_s_per_step": 0.01},
        "gravis": {"cpu_s_per_image": 3e-4, "device_s_per_step": 0.03},
        "eval": {"device_s_per_image": 1e-3},
    }
    plan = dermamnist.plan(args, data, cost, available_s=100.0)
    # evaluation: 3 jobs × 1,200 images × 1 ms = 3.6 core-s → 1.8 s on 2 cores;
    # an epoch: (10 steps × 0.04 s + 1,000 × 4e-4 s) / 2 cores = 0.4 s → 98.2 / 0.4
    assert plan["epochs"]["dermamnist"] == 245
    assert plan["estimate"]["dermamnist"]["eval_device_s_all_jobs"] == 3.6
    # caps: twice the job's own work (simclr 245 × 0.2 s, gravis 245 × 0.6 s), ≥ 60 s
    assert plan["max_train_s"] == {
        ("dermamnist", "simclr"): 98.0,
        ("dermamnist", "gravis"): 294.0,
    }
    # on a GPU the same costs are device-bound (0.4 s / 50 %) and nothing is capped
    args.device = "cuda"
    gpu = dermamnist.plan(args, data, cost, available_s=100.0)
    assert gpu["epochs"]["dermamnist"] == 125 and gpu["max_train_s"] == {}


def test_small_resnet_keeps_spatial_detail() -> None:
    model = dermamnist.small_resnet("resnet18")
    maps = model.layer1(
        model.maxpool(model.relu(model.bn1(model.conv1(torch.zeros(1, 3, 28, 28)))))
    )
    assert maps.shape[-2:] == (28, 28)
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 512)


def test_bad_epochs_argument() -> None:
    with pytest.raises(SystemExit):
        dermamnist.parse_args(["--epochs", "many"])
    with pytest.raises(SystemExit):
        dermamnist.parse_args(["--fashion-share", "1.5"])


def test_epochs_defaults_and_budget_alias() -> None:
    args = dermamnist.parse_args(["--device", "cpu", "--budget-minutes", "40"])
    assert (args.epochs, args.fashion_epochs, args.time_budget_minutes) == (
        "auto",
        "auto",
        40.0,
    )
    smoke = dermamnist.parse_args(["--smoke"])
    assert (smoke.epochs, smoke.fashion_epochs) == ("1", "1")
    assert dermamnist.parse_args(["--smoke", "--epochs", "auto"]).epochs == "auto"
