"""benchmarks/finetune_length.py: which fine-tunes run, how they pair, what a rerun skips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import finetune_length
import numpy as np
import pytest


def _study_out(root: Path, methods: list[str], seed: int) -> Path:
    for split in ("train", "val"):
        (root / "data" / "isic_64_10" / "folds" / "fold_0" / split).mkdir(parents=True)
    for method in methods:
        pretrain = root / "jobs" / f"isic2017-{method}-seed{seed}-fold0" / "pretrain"
        pretrain.mkdir(parents=True)
        (pretrain / "backbone.pt").write_bytes(b"")
    return root


def test_pairs_each_method_with_random_init_of_the_same_fine_tune_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _study_out(tmp_path / "study", ["gravis"], seed=1)
    rng = np.random.default_rng(0)
    scores: dict[tuple[str, int], float] = {}
    calls: list[dict[str, Any]] = []

    def fake(
        backbone: Path | None,
        train: Path,
        val: Path,
        epochs: int,
        seed: int,
        label_fraction: float = 0.1,
        **kwargs: Any,
    ) -> dict[str, float]:
        method = "random" if backbone is None else backbone.parts[-3].split("-")[1]
        assert train.name == "train" and val.name == "val" and epochs == 7
        calls.append({"method": method, "seed": seed, **kwargs})
        scores[method, seed] = float(rng.uniform(0.5, 0.9))
        return {"val_jaccard": scores[method, seed], "val_dice": 0.9}

    monkeypatch.setattr(finetune_length, "finetune", fake)
    output = tmp_path / "table.md"
    argv = [
        "--study-out", str(out), "--pretrain-seeds", "1", "--finetune-seeds", "0", "1",
        "2", "--methods", "random", "gravis", "simclr", "--epochs", "7",
        "--freeze-epochs", "3", "--encoder-lr-scale", "0.1", "--output", str(output),
    ]  # fmt: skip
    assert finetune_length.main(argv) == 0
    # simclr has no backbone.pt: skipped; every run got the freeze options
    assert sorted((c["method"], c["seed"]) for c in calls) == [
        ("gravis", 0), ("gravis", 1), ("gravis", 2),
        ("random", 0), ("random", 1), ("random", 2),
    ]  # fmt: skip
    assert all(
        c["freeze_epochs"] == 3
        and c["frozen"] is False
        and c["encoder_lr_scale"] == 0.1
        for c in calls
    )
    deltas = [scores["gravis", s] - scores["random", s] for s in (0, 1, 2)]
    row = next(line for line in output.read_text().splitlines() if "| gravis |" in line)
    assert f"{np.mean(deltas):+.3f} ± {np.std(deltas, ddof=1):.3f}" in row
    assert f"| {sum(d > 0 for d in deltas)}/3 |" in row
    # a rerun continues: nothing is fine-tuned again
    assert finetune_length.main(argv) == 0
    assert len(calls) == 6


def test_encoder_lr_scale_reaches_the_pretrained_encoder_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made: list[Any] = []

    class Stop(Exception):
        pass

    def fake_model(**kwargs: Any) -> None:
        made.append((kwargs["lr"], kwargs["encoder_lr"]))
        raise Stop

    monkeypatch.setattr(finetune_length, "ISICSegmentationDataModule", lambda **k: None)
    monkeypatch.setattr(finetune_length, "find_isic_pairs", lambda d: [])
    monkeypatch.setattr(finetune_length, "LesionSegmentation", fake_model)
    for backbone in (tmp_path / "backbone.pt", None):
        with pytest.raises(Stop):
            finetune_length.finetune(
                backbone, tmp_path, tmp_path, 1, 0, encoder_lr_scale=0.1
            )
    assert made == [(1e-3, pytest.approx(1e-4)), (1e-3, None)]


@pytest.mark.parametrize("random_stages", [0, 2])
def test_random_stages_reach_a_pretrained_encoder_and_no_val_dir_holds_out_a_third(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, random_stages: int
) -> None:
    made: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def fake_model(**kwargs: Any) -> None:
        made.update(kwargs)
        raise Stop

    monkeypatch.setattr(
        finetune_length, "ISICSegmentationDataModule", lambda **k: made.update(k)
    )
    monkeypatch.setattr(finetune_length, "find_isic_pairs", lambda d: [])
    monkeypatch.setattr(finetune_length, "LesionSegmentation", fake_model)
    backbone = tmp_path / "backbone.pt"
    for file, expected in ((backbone, random_stages), (None, 0)):
        made.clear()
        with pytest.raises(Stop):
            finetune_length.finetune(
                file, tmp_path, None, 1, 0, random_stages=random_stages
            )
        assert made["val_fraction"] == pytest.approx(1 / 3) and "val_pairs" not in made
        assert made["pretrained"] == file and made["random_stages"] == expected


@pytest.mark.parametrize("shrink", [0.3, 1.7])
def test_rescale_to_init_restores_the_norms_and_keeps_the_function(
    shrink: float,
) -> None:
    """Reference: norms in float64 per tensor; the encoder's training-mode outputs
    (batch-norm statistics of the batch, eps 1e-30 so the invariance is exact) before and
    after, on random images, in float64."""
    import torch

    from lightly_derm.segmentation import LesionSegmentation

    torch.manual_seed(0)
    init = LesionSegmentation(backbone="lightly-derm-resnet18").net.encoder.double()
    trained = LesionSegmentation(backbone="lightly-derm-resnet18").net.encoder.double()
    with torch.no_grad():  # a "pretraining": other directions, other norms per tensor
        for i, p in enumerate(trained.parameters()):
            p.add_(0.2 * torch.randn_like(p) * p.std())
            if p.ndim == 4:
                p.mul_(shrink * (1 + 0.1 * i))
    images = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    for m in trained.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1e-30
    trained.train()
    before = [f.detach().clone() for f in trained(images)]
    finetune_length.rescale_to_init(trained, init)
    after = trained(images)
    for x, y in zip(before, after, strict=True):
        torch.testing.assert_close(y, x, rtol=1e-9, atol=1e-9)
    named = dict(init.named_parameters())
    convs = [(n, p) for n, p in trained.named_parameters() if p.ndim == 4]
    assert len(convs) == 20  # ResNet-18: stem, 16 block convs, 3 downsamples
    for name, p in convs:
        assert float(p.double().norm()) == pytest.approx(
            float(named[name].double().norm()), rel=1e-5
        )
    assert not torch.equal(convs[0][1], named[convs[0][0]])  # directions kept
