"""benchmarks/continued_lr.py: the grid, the split, the pairing with ImageNet, reruns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import continued_lr
import numpy as np
import pytest


def _study_out(root: Path) -> Path:
    for split in ("train", "val"):
        (root / "data" / "isic_64_10" / "folds" / "fold_0" / split).mkdir(parents=True)
    return root


def _one_fine_tune(out: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """The table's path and the arguments of a grid of one BYOL variant, one
    fine-tune at 10 %, on the validation split."""
    output = tmp_path / "table.md"
    return output, [
        "--study-out", str(out), "--split", "validation", "--methods", "byol",
        "--backbone-lr-scales", "1", "--finetune-seeds", "0", "--label-fractions",
        "0.1", "--work", str(tmp_path / "work"), "--output", str(output),
    ]  # fmt: skip


@pytest.mark.parametrize("split", ["validation", "test"])
def test_pairs_each_variant_with_imagenet_of_the_same_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: str
) -> None:
    out = _study_out(tmp_path / "study")
    rng = np.random.default_rng(0)
    pretrained: list[tuple[str, float, int]] = []
    scores: dict[tuple[str, float, int], float] = {}

    def fake_pretrain(
        method: str, scale: float, data: Path, run: Path, seed: int, **kwargs: Any
    ):
        assert data.name == "train" and data.parent.name == "fold_0"
        pretrained.append((method, scale, seed))
        return run

    def fake_finetune(
        checkpoint: str,
        fold: Path,
        how: str,
        fraction: float,
        seed: int,
        work: Path,
        input_size: int,
    ):
        assert input_size == 64
        assert how == split and fold.name == "fold_0"
        variant = (
            "imagenet" if checkpoint == continued_lr.IMAGENET else Path(checkpoint).name
        )
        scores[variant, fraction, seed] = float(rng.uniform(0.6, 0.9))
        return scores[variant, fraction, seed]

    monkeypatch.setattr(continued_lr, "pretrain_continued", fake_pretrain)
    monkeypatch.setattr(continued_lr, "finetune", fake_finetune)
    output = tmp_path / "table.md"
    argv = [
        "--study-out", str(out), "--split", split, "--methods", "byol",
        "--backbone-lr-scales", "1", "0.1", "--finetune-seeds", "0", "1", "2",
        "--label-fractions", "0.03", "--work", str(tmp_path / "work"),
        "--output", str(output),
    ]  # fmt: skip
    assert continued_lr.main(argv) == 0
    assert pretrained == [("byol", 1.0, 0), ("byol", 0.1, 0)]  # once per encoder
    assert len(scores) == 9
    deltas = [
        scores["fold0-byol-0.1-seed0", 0.03, s] - scores["imagenet", 0.03, s]
        for s in (0, 1, 2)
    ]
    row = next(x for x in output.read_text().splitlines() if "| byol@0.1 |" in x)
    assert f"{np.mean(deltas):+.3f} ± {np.std(deltas, ddof=1):.3f}" in row
    assert f"| {sum(d > 0 for d in deltas)}/3 |" in row
    # a rerun continues: nothing is pretrained or fine-tuned again
    assert continued_lr.main(argv) == 0
    assert len(pretrained) == 2 and len(scores) == 9


def test_another_optimizer_is_its_own_variant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _study_out(tmp_path / "study")
    pretrained: list[tuple[Any, ...]] = []

    def fake_pretrain(method, scale, data, run, seed, optimizer, lr, **kwargs):
        pretrained.append((method, scale, run.name, optimizer, lr))
        return run

    monkeypatch.setattr(continued_lr, "pretrain_continued", fake_pretrain)
    monkeypatch.setattr(continued_lr, "finetune", lambda *a, **k: 0.5)
    output, argv = _one_fine_tune(out, tmp_path)
    assert continued_lr.main(argv) == 0
    assert continued_lr.main([*argv, "--optimizer", "adamw", "--lr", "1e-4"]) == 0
    assert pretrained == [
        ("byol", 1.0, "fold0-byol-1-seed0", "sgd", continued_lr.LR),
        ("byol", 1.0, "fold0-byol-adamw0.0001-1-seed0", "adamw", 1e-4),
    ]
    assert "| byol-adamw0.0001@1 |" in output.read_text()
    rows = continued_lr.read_rows(output.with_suffix(".jsonl"))
    assert [r["variant"] for r in rows] == ["imagenet", "byol@1", "byol-adamw0.0001@1"]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_optimizer_and_rate_reach_the_method(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, optimizer: str
) -> None:
    import lightly_derm.jobs

    given: dict[str, Any] = {}
    monkeypatch.setattr(lightly_derm.jobs, "pretrain", lambda **k: given.update(k))
    continued_lr.pretrain_continued(
        "byol", 0.1, tmp_path, tmp_path / "run", 0, optimizer=optimizer, lr=2e-4
    )
    assert given["method_args"]["optimizer"] == optimizer
    assert given["method_args"]["lr"] == 2e-4
    assert given["method_args"]["backbone_lr"] == pytest.approx(2e-5)


@pytest.mark.parametrize(("scale", "expected"), [(1.0, None), (0.1, 0.00075)])
def test_backbone_lr_is_scale_times_the_heads_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scale: float, expected
) -> None:
    import lightly_derm.jobs

    given: dict[str, Any] = {}
    monkeypatch.setattr(lightly_derm.jobs, "pretrain", lambda **k: given.update(k))
    continued_lr.pretrain_continued("ap_byol", scale, tmp_path, tmp_path / "run", 3)
    assert given["method_args"].get("backbone_lr") == pytest.approx(expected)
    assert given["method_args"]["lr"] == continued_lr.LR
    assert given["backbone_weights"] == continued_lr.IMAGENET and given["seed"] == 3


@pytest.mark.parametrize(
    ("split", "where"),
    [("validation", {"val_fraction": 1 / 3}), ("test", {"val_data": "val"})],
)
def test_the_split_decides_what_is_scored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: str, where: dict
) -> None:
    import lightly_derm.jobs

    given: dict[str, Any] = {}

    def fake_segment(**kwargs: Any) -> dict:
        given.update(kwargs)
        return {"results": {"pretrained": {"val_jaccard": 0.5}}}

    monkeypatch.setattr(lightly_derm.jobs, "segment", fake_segment)
    fold = tmp_path / "fold_0"
    score = continued_lr.finetune("ckpt", fold, split, 0.03, 2, tmp_path / "seg")
    assert score == 0.5 and given["data"] == str(fold / "train")
    for key, value in where.items():
        assert given[key] == (str(fold / value) if key == "val_data" else value)
    assert ("val_data" in given) != ("val_fraction" in given)


def test_another_size_or_length_is_its_own_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _study_out(tmp_path / "study")
    pretrained: list[tuple[str, int, int]] = []
    finetuned: list[tuple[str, int]] = []

    def fake_pretrain(method, scale, data, run, seed, input_size, epochs, **kwargs):
        pretrained.append((run.name, input_size, epochs))
        return run

    def fake_finetune(checkpoint, fold, how, fraction, seed, work, input_size):
        finetuned.append((Path(checkpoint).name, input_size))
        return (
            0.5
            + 0.1 * (input_size == 128)
            + 0.01 * (checkpoint != continued_lr.IMAGENET)
        )

    monkeypatch.setattr(continued_lr, "pretrain_continued", fake_pretrain)
    monkeypatch.setattr(continued_lr, "finetune", fake_finetune)
    output, argv = _one_fine_tune(out, tmp_path)
    assert continued_lr.main(argv) == 0
    assert continued_lr.main([*argv, "--input-size", "128"]) == 0
    assert continued_lr.main([*argv, "--input-size", "128", "--epochs", "30"]) == 0
    assert pretrained == [
        ("fold0-byol-1-seed0", 64, 10),
        ("fold0-byol-1-128px-seed0", 128, 10),
        ("fold0-byol-1-128px-e30-seed0", 128, 30),
    ]
    # plain ImageNet once per size (it does not depend on the pretraining's length)
    assert finetuned == [
        ("imagenet:efficientnet-lite0", 64),
        ("fold0-byol-1-seed0", 64),
        ("imagenet:efficientnet-lite0", 128),
        ("fold0-byol-1-128px-seed0", 128),
        ("fold0-byol-1-128px-e30-seed0", 128),
    ]
    table = output.read_text()
    assert "pretrained 30 epochs at 128 px" in table
    # the 128-px rows only, each paired with the 128-px ImageNet fine-tune
    assert "| 10% | imagenet | 1 | 0.600 ± 0.000 | – | – |" in table
    assert "| 10% | byol@1 | 1 | 0.610 ± 0.000 | +0.010 ± 0.000 | 1/1 |" in table
    rows = continued_lr.read_rows(output.with_suffix(".jsonl"))
    assert [(r["input_size"], r["epochs"]) for r in rows] == [
        (64, None), (64, 10), (128, None), (128, 10), (128, 30)
    ]  # fmt: skip


def test_a_preset_method_gets_no_optimiser_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightly_derm.jobs

    given: dict[str, Any] = {}
    monkeypatch.setattr(lightly_derm.jobs, "pretrain", lambda **k: given.update(k))
    continued_lr.pretrain_continued("fgssl", None, tmp_path, tmp_path / "run", 0)
    assert given["method_args"] == {}
    assert given["backbone_weights"] == continued_lr.IMAGENET
    out = _study_out(tmp_path / "study")
    pretrained: list[tuple[str, float | None, str]] = []

    def fake_pretrain(method, scale, data, run, seed, **kwargs):
        pretrained.append((method, scale, run.name))
        return run

    monkeypatch.setattr(continued_lr, "pretrain_continued", fake_pretrain)
    monkeypatch.setattr(continued_lr, "finetune", lambda *a, **k: 0.5)
    output, argv = _one_fine_tune(out, tmp_path)
    assert continued_lr.main([*argv, "--methods", "--preset-methods", "fgssl"]) == 0
    assert pretrained == [("fgssl", None, "fold0-fgssl-preset-seed0")]
    assert "| fgssl@preset |" in output.read_text()
