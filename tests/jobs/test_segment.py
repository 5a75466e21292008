from __future__ import annotations

import pytest

from lightly_derm.errors import ConfigError
from lightly_derm.jobs.segment import SegmentConfig, resolve_segment_config


def test_presets_and_derived_options(tmp_path) -> None:
    demo = resolve_segment_config(SegmentConfig())
    assert (demo.backbone, demo.input_size, demo.epochs) == ("resnet18", 64, 3)
    assert demo.val_fraction == 0.2 and demo.synthetic_images == 128
    real = resolve_segment_config(SegmentConfig(data=str(tmp_path)))
    assert (real.backbone, real.input_size, real.epochs) == ("resnet50", 256, 20)
    assert real.synthetic_images is None


def test_val_data_replaces_the_split(tmp_path) -> None:
    (tmp_path / "val").mkdir()
    config = resolve_segment_config(
        SegmentConfig(data=str(tmp_path), val_data=str(tmp_path / "val"))
    )
    assert config.val_fraction is None and config.folds is None
    with pytest.raises(ConfigError, match="--val-data excludes --val-fraction"):
        resolve_segment_config(
            SegmentConfig(data=str(tmp_path), val_data=str(tmp_path), folds=3)
        )
    with pytest.raises(ConfigError, match="--val-data needs --data"):
        resolve_segment_config(SegmentConfig(val_data=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="val_data folder not found"):
        resolve_segment_config(
            SegmentConfig(data=str(tmp_path), val_data=str(tmp_path / "nope"))
        )


def test_the_old_name_is_read_with_a_warning() -> None:
    with pytest.warns(FutureWarning, match="'image_size' is deprecated"):
        config = SegmentConfig.create({"image_size": 48}, {}, "segment")
    assert config.input_size == 48
    with pytest.warns(FutureWarning):
        assert config.image_size == 48


def test_a_random_encoder_gets_the_stem_pretrain_chooses(tmp_path) -> None:
    # none named, no checkpoint: the small-image stem below 64 px, as in pretrain
    small = resolve_segment_config(SegmentConfig(input_size=32))
    assert small.backbone == "resnet18-cifar"
    assert resolve_segment_config(SegmentConfig(input_size=64)).backbone == "resnet18"
    # named: kept as named
    named = resolve_segment_config(SegmentConfig(input_size=32, backbone="resnet18"))
    assert named.backbone == "resnet18"
    # a checkpoint's backbone is the checkpoint's (its stem from its weights)
    import torch
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    config = SegmentConfig(input_size=32, checkpoint=str(tmp_path / "r18.pth"))
    assert resolve_segment_config(config).backbone == "resnet18"
