"""benchmarks/partial_transfer.py: encoders, variants, splits, pairing with random init."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import partial_transfer
import pytest


def _study_out(root: Path, methods: list[str]) -> Path:
    for split in ("train", "val"):
        (root / "data" / "isic_64_10" / "folds" / "fold_0" / split).mkdir(parents=True)
    for method in methods:
        pretrain = root / "jobs" / f"isic2017-{method}-seed0-fold0" / "pretrain"
        pretrain.mkdir(parents=True)
        (pretrain / "backbone.pt").write_bytes(b"")
    return root


@pytest.mark.parametrize("split", ["validation", "test"])
def test_variants_pair_with_random_init_of_the_same_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: str
) -> None:
    out = _study_out(tmp_path / "study", ["byol"])
    rng = np.random.default_rng(0)
    scores: dict[tuple[str, int, int], float] = {}

    def fake(backbone, train, val, epochs, seed, fraction, random_stages=0):
        assert train.name == "train" and (val is None) == (split == "validation")
        method = "random" if backbone is None else backbone.parts[-3].split("-")[1]
        assert method != "random" or random_stages == 0
        scores[method, random_stages, seed] = float(rng.uniform(0.6, 0.9))
        return {"val_jaccard": scores[method, random_stages, seed]}

    monkeypatch.setattr(partial_transfer, "finetune", fake)
    output = tmp_path / "table.md"
    argv = [
        "--study-out", str(out), "--split", split, "--methods", "byol",
        "--variants", "all", "deep", "--finetune-seeds", "0", "1",
        "--label-fractions", "0.03", "--output", str(output),
    ]  # fmt: skip
    assert partial_transfer.main(argv) == 0
    deep = partial_transfer.VARIANTS["deep"]
    assert sorted(scores) == sorted(
        (m, k, s)
        for m, k in [("random", 0), ("byol", 0), ("byol", deep)]
        for s in (0, 1)
    )
    deltas = [scores["byol", deep, s] - scores["random", 0, s] for s in (0, 1)]
    assert "deep: conv1., bn1., layer1." in output.read_text()  # the layers, named
    row = next(x for x in output.read_text().splitlines() if "| byol | deep |" in x)
    assert f"{np.mean(deltas):+.3f} ± {np.std(deltas, ddof=1):.3f}" in row
    assert partial_transfer.main(argv) == 0 and len(scores) == 6  # rerun: nothing new


def test_a_missing_backbone_is_one_line(tmp_path: Path) -> None:
    out = _study_out(tmp_path / "study", [])
    with pytest.raises(SystemExit, match="no pretrained backbone at .*ap_byol"):
        partial_transfer.main(
            ["--study-out", str(out), "--split", "test", "--methods", "ap_byol",
             "--output", str(tmp_path / "t.md")]
        )  # fmt: skip
