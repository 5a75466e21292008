"""``segment(val_data=...)``: a folder as the validation set instead of a split of ``data``."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightly_derm.jobs.segment import (
    SegmentConfig,
    resolve_segment_config,
    segmentation_data,
)


def _isic(root: Path, ids: range) -> Path:
    from PIL import Image

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in ids:
        Image.new("RGB", (20, 16), (i, 40, 80)).save(
            root / "images" / f"ISIC_{i:07d}.jpg"
        )
        Image.new("L", (20, 16), 255).save(
            root / "masks" / f"ISIC_{i:07d}_segmentation.png"
        )
    return root


def test_val_data_is_the_validation_set(tmp_path: Path) -> None:
    train = _isic(tmp_path / "train", range(0, 10))
    val = _isic(tmp_path / "val", range(10, 14))
    cfg = resolve_segment_config(
        SegmentConfig(data=str(train), val_data=str(val), label_fraction=0.5)
    )
    assert cfg.val_fraction is None and cfg.folds is None
    (module,), split = segmentation_data(cfg)
    assert sorted(p["id"] for p in module.val_pairs) == [
        f"ISIC_{i:07d}" for i in range(10, 14)
    ]
    assert len(module.all_train_pairs) == 10 and len(module.train_pairs) == 5
    assert str(val) in split


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"val_fraction": 0.3}, "--val-data excludes --val-fraction and --folds"),
        ({"folds": 2}, "--val-data excludes --val-fraction and --folds"),
        ({"data": None}, "--val-data needs --data"),
        ({"val_data": "{tmp}/nope"}, "val_data folder not found"),
    ],
)
def test_bad_options(tmp_path: Path, options: dict, match: str) -> None:
    train = _isic(tmp_path / "train", range(4))
    values = {"data": str(train), "val_data": str(train), **options}
    values = {
        k: v.format(tmp=tmp_path) if isinstance(v, str) else v
        for k, v in values.items()
    }
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        resolve_segment_config(SegmentConfig(**values))
