"""benchmarks/isic_segmentation.py: the smoke path end to end, folds, sweep and selection."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pytest

isic = pytest.importorskip("isic_segmentation")


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path: Path, isic_dir: Path, one_thread) -> None:
    """2 folds of 6 pairs, a 2-variant sweep, pretraining, fine-tuning, tables."""
    out = tmp_path / "out"
    argv = [
        "--smoke", "--device", "cpu", "--jobs", "0", "--data", str(isic_dir), "--limit", "12",
        "--methods", "ap_byol", "--fractions", "0.5", "1.0", "--sweep", "ap_byol:normalize=false,true",
        "--finetune-steps", "2", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
        "--pretrain-epochs", "auto", "--max-pretrain-epochs", "1", "--calibration-steps", "1",
    ]  # fmt: skip
    summary = isic.main(argv)
    statuses = {
        p.stem: json.loads(p.read_text())["status"]
        for p in (out / "jobs").glob("*.json")
    }
    assert set(statuses.values()) == {"ok"}, statuses
    assert (
        len(statuses) == 2 + 2 + 2 + 2 * 2 * 2
    )  # sweep pretrain + fine-tune, pretrain, fine-tunes
    for key in ("ap_byol@0.5", "ap_byol@1", "random@0.5", "random@1"):
        assert summary[key]["runs"] == 2 and all(
            0 <= d <= 1 for d in summary[key]["dice"]
        )
    assert len(summary["ap_byol@1"]["dice_minus_random"]) == 2
    # the fine-tunes loaded the pretrained encoder; main pretraining used the chosen variant
    tuned = json.loads((out / "jobs" / "fold0__ap_byol.json").read_text())
    assert tuned["spec"]["variant"] in ({"normalize": False}, {"normalize": True})
    assert tuned["spec"]["tuning"]["chosen"] == tuned["spec"]["variant"]["normalize"]
    assert set(tuned["spec"]["train_ids"]).isdisjoint(
        json.loads((out / "jobs" / "fold0__ap_byol__frac1__seed0.json").read_text())[
            "spec"
        ]["test_ids"]
    )
    ft = json.loads((out / "jobs" / "fold1__ap_byol__frac0.5__seed0.json").read_text())
    assert re.match(
        r"loaded (\d+) of \1 encoder tensors; 0 missing", ft["result"]["transfer"]
    )
    assert ft["result"]["train_pairs"] == 3
    assert (
        json.loads((out / "jobs" / "fold1__random__frac0.5__seed0.json").read_text())[
            "result"
        ]["transfer"]
        is None
    )
    # --pretrain-epochs auto measured every variant and the fine-tuning step
    header = json.loads((out / "isic_segmentation_header.json").read_text())
    assert header["epochs_mode"].startswith("chosen by --pretrain-epochs auto")
    calibration = header["plan"]["calibration"]
    assert set(calibration["pretrain"]) == {
        "ap_byol",
        "ap_byol:normalize=false",
        "ap_byol:normalize=true",
    }
    assert calibration["finetune_s_per_step"] > 0
    assert header["plan"]["epochs"] == 1 and tuned["spec"]["epochs"] == 1
    assert tuned["spec"]["max_train_s"] >= 60
    markdown = (out / "isic_segmentation_results.md").read_text()
    assert "CPU smoke run, not a result" in markdown and "normalize=True" in markdown
    assert ".. list-table::" in (out / "isic_segmentation_results.rst").read_text()
    assert (
        isic.main(
            ["--aggregate-only", "--out", str(out), "--data", str(isic_dir)]
        ).keys()
        == summary.keys()
    )


def test_folds_partition_the_ids() -> None:
    ids = [f"ISIC_{i:07d}" for i in range(29)]
    folds = isic.make_folds(ids, 3, seed=0)
    assert sorted(i for fold in folds for i in fold) == ids
    assert sorted(len(f) for f in folds) == [9, 10, 10]
    assert folds == isic.make_folds(
        list(reversed(ids)), 3, seed=0
    )  # input order is irrelevant
    assert folds != isic.make_folds(ids, 3, seed=1)


def test_parse_sweep() -> None:
    assert isic.parse_sweep(
        ["gravis:num_views=4,8", "ap_byol:normalize=false,true", "fgssl:schedule=joint"]
    ) == {
        "gravis": ("num_views", [4, 8]),
        "ap_byol": ("normalize", [False, True]),
        "fgssl": ("schedule", ["joint"]),
    }
    assert isic.parse_sweep(["none"]) == {}
    with pytest.raises(ValueError, match="METHOD:ARG=V1,V2"):
        isic.parse_sweep(["gravis=4"])
    with pytest.raises(ValueError, match="'moco' is not one of"):
        isic.parse_sweep(["moco:k=1"])


def _tune_result(method: str, variant: dict, dice: float, status: str = "ok") -> dict:
    spec = {"phase": "tune", "kind": "finetune", "method": method, "variant": variant}
    return {
        "status": status,
        "spec": spec,
        "result": {"dice": dice} if status == "ok" else None,
    }


def test_select_variant_uses_inner_validation_means() -> None:
    sweep = {"gravis": ("num_views", [4, 8])}
    results = {
        "a": _tune_result("gravis", {"num_views": 4}, 0.70),
        "b": _tune_result("gravis", {"num_views": 4}, 0.60),
        "c": _tune_result("gravis", {"num_views": 8}, 0.66),
        "d": _tune_result("gravis", {"num_views": 8}, 0.0, status="failed"),
        "e": _tune_result("fgssl", {"num_views": 8}, 0.99),  # another method's sweep
    }
    chosen, record = isic.select_variant("gravis", sweep, results)
    assert (
        chosen == {"num_views": 8} and record["chosen"] == 8
    )  # 0.66 > mean(0.70, 0.60)
    assert record["scores"] == {"4": [0.70, 0.60], "8": [0.66]}
    assert isic.select_variant("gravis", sweep, {})[0] == {
        "num_views": 4
    }  # no result: default
    assert isic.select_variant("simclr", sweep, results) == ({}, {})  # not swept


def test_image_size_must_suit_the_unet() -> None:
    with pytest.raises(SystemExit):
        isic.parse_args(["--image-size", "100", "--data", "."])


def _job(job_id: str, kind: str, method: str, phase: str = "main", **spec) -> Any:
    return isic.Job(
        job_id,
        isic.pretrain_job,
        {"kind": kind, "method": method, "phase": phase, **spec},
    )


def test_plan_epochs_fits_the_budget(monkeypatch) -> None:
    monkeypatch.setattr(isic.os, "cpu_count", lambda: 2)
    args = argparse.Namespace(
        device="cpu", cpu_efficiency=1.0, gpu_efficiency=0.5, max_pretrain_epochs=100
    )
    ids = [f"{i}" for i in range(10)]
    jobs = [
        _job("tune_g8", "pretrain", "gravis", "tune", variant={"num_views": 8}, train_ids=ids),
        _job("g", "pretrain", "gravis", variant={}, train_ids=ids),
        _job("b", "pretrain", "byol", variant={}, train_ids=ids),
        _job("ft", "finetune", "byol", steps=10, batch_size=4, test_ids=ids[:6], train_ids=ids),
    ]  # fmt: skip
    cost = {
        "pretrain": {
            "gravis": {"device_s_per_image": 0.2, "cpu_s_per_image": 0.05},
            "gravis:num_views=8": {"device_s_per_image": 0.4, "cpu_s_per_image": 0.1},
            "byol": {"device_s_per_image": 0.1, "cpu_s_per_image": 0.02},
        },
        "finetune_s_per_step": 1.0,
    }
    plan = isic.plan_epochs(args, jobs, cost, available_s=100.0)
    # fine-tune: 10 steps + 6 test images / batch 4 / 3 = 10.5 core-s; an epoch: 10
    # images × (0.5 tune + 0.5 main gravis at its dearest variant + 0.12 byol) = 11.2;
    # 2 cores × 100 s = 200 → (200 − 10.5) / 11.2 = 16.9 → 16 epochs
    assert plan["core_s_finetune"] == 10.5 and plan["core_s_pretrain_per_epoch"] == 11.2
    assert plan["epochs"] == 16
    # caps: twice the job's own predicted time, at least a minute
    assert plan["max_train_s"] == {"tune_g8": 160.0, "g": 160.0, "b": 60.0}
    assert isic.plan_epochs(args, jobs, cost, available_s=1.0)["epochs"] == 1
    args.max_pretrain_epochs = 5
    assert isic.plan_epochs(args, jobs, cost, available_s=100.0)["epochs"] == 5


def test_pretrain_epochs_argument() -> None:
    assert isic.parse_args(["--data", "."]).pretrain_epochs == 40
    assert isic.parse_args(["--data", ".", "--smoke"]).pretrain_epochs == 1
    args = isic.parse_args(
        ["--data", ".", "--pretrain-epochs", "auto", "--budget-minutes", "30"]
    )
    assert (args.pretrain_epochs, args.time_budget_minutes) == ("auto", 30.0)
    with pytest.raises(SystemExit):
        isic.parse_args(["--data", ".", "--pretrain-epochs", "0"])
