"""benchmarks/isic_segmentation.py: the smoke path end to end, folds, sweep and selection."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

isic = pytest.importorskip("isic_segmentation")


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path: Path, isic_dir: Path, one_thread) -> None:
    """2 folds of 6 pairs, a 2-variant sweep, pretraining, fine-tuning, tables."""
    out = tmp_path / "out"
    argv = [
        "--smoke", "--device", "cpu", "--jobs", "0", "--data", str(isic_dir), "--limit", "12",
        "--methods", "ap_byol", "--fractions", "0.5", "1.0", "--sweep", "ap_byol:normalize=false,true",
        "--finetune-steps", "2", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
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
