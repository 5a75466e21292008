from __future__ import annotations

import pytest
import yaml

from lightly_derm.data import SyntheticLesions
from lightly_derm.jobs.pretrain import (
    PretrainConfig,
    resolve_config,
    resume_config,
    with_transform,
)


def test_defaults_depend_on_the_data(tmp_path) -> None:
    demo = resolve_config(PretrainConfig(method="fgssl"))
    assert (demo.backbone, demo.input_size, demo.epochs, demo.batch_size) == (
        "resnet18",
        64,
        8,
        16,
    )
    assert demo.synthetic_images == 256 and demo.num_workers == 0
    assert demo.out == "runs/fgssl" and demo.decode_size == 128
    real = resolve_config(PretrainConfig(method="byol", data=str(tmp_path)))
    assert (real.backbone, real.input_size, real.epochs) == ("resnet50", 224, 100)
    assert real.batch_size == 32
    assert real.synthetic_images is None
    with pytest.raises(ValueError, match="apply to the built-in synthetic data only"):
        resolve_config(PretrainConfig(data=str(tmp_path), synthetic_images=8))
    with pytest.raises(ValueError, match="input_size must be an integer >= 8"):
        resolve_config(PretrainConfig(input_size=4))


def test_a_classifier_needs_labels(tmp_path) -> None:
    from lightly_derm.jobs.pretrain import _create_method

    config = resolve_config(PretrainConfig(method="fgssl_classifier"))
    unlabelled = SyntheticLesions(4, 32)
    unlabelled.targets[:] = -1
    with pytest.raises(ValueError, match="is a classifier .* needs labelled data"):
        _create_method(config, unlabelled)
    model = _create_method(config, SyntheticLesions(4, 32, num_classes=4))
    assert model.num_classes == 4  # from the data


def test_with_transform_copies() -> None:
    data = SyntheticLesions(4, 32)
    copied = with_transform(data, len)
    assert copied.transform is len and data.transform is None
    with pytest.raises(TypeError, match="no transform attribute"):
        with_transform([1, 2], len)  # type: ignore[arg-type]


def test_resume_config_allows_hardware_changes_only(tmp_path) -> None:
    saved = resolve_config(
        PretrainConfig(method="gravis", out=str(tmp_path), method_args={"lr": 0.1})
    )
    saved.save(tmp_path / "config.yaml")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    merged = resume_config(
        PretrainConfig(out=str(tmp_path), precision="bf16-mixed", num_workers=2)
    )
    assert merged.precision == "bf16-mixed" and merged.num_workers == 2
    assert merged.method_args == {"lr": 0.1} and merged.epochs == saved.epochs
    # the same values again are fine; a change of what the run is is not
    resume_config(
        PretrainConfig(out=str(tmp_path), method="gravis", method_args={"lr": 0.1})
    )
    with pytest.raises(
        ValueError, match=r"cannot resume .* with method_args=\{'lr': 0.2\}"
    ):
        resume_config(PretrainConfig(out=str(tmp_path), method_args={"lr": 0.2}))
    with pytest.raises(ValueError, match="epochs=9: the run was started with epochs=8"):
        resume_config(PretrainConfig(out=str(tmp_path), epochs=9))
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["method"] == "gravis"


def test_the_keyword_names_of_the_study_driver(tmp_path) -> None:
    """The names scripts pass to the job functions resolve in every job."""
    from lightly_derm.jobs.evaluate import EvaluateConfig, resolve_evaluate_config
    from lightly_derm.jobs.segment import SegmentConfig, resolve_segment_config

    common = {
        "data": str(tmp_path),
        "backbone": "resnet18",
        "input_size": 32,
        "batch_size": 4,
        "seed": 1,
        "out": str(tmp_path / "out"),
        "accelerator": "cpu",
        "devices": 1,
    }
    pretrain = resolve_config(
        PretrainConfig.create(
            {}, {**common, "method": "simclr", "epochs": 1, "max_steps": 2}, "pretrain"
        )
    )
    assert (pretrain.method, pretrain.max_steps, pretrain.input_size) == (
        "simclr",
        2,
        32,
    )
    checkpoint = tmp_path / "r18.pt"
    import torch
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), checkpoint)
    segment = resolve_segment_config(
        SegmentConfig.create(
            {},
            {**common, "checkpoint": str(checkpoint), "label_fraction": 0.5,
             "baseline": True, "epochs": 1},
            "segment",
        )
    )  # fmt: skip
    assert (segment.label_fraction, segment.baseline, segment.input_size) == (
        0.5,
        True,
        32,
    )
    evaluate = resolve_evaluate_config(
        EvaluateConfig.create({}, {**common, "checkpoint": str(checkpoint)}, "evaluate")
    )
    assert evaluate.input_size == 32 and evaluate.devices == 1


def test_messages_name_keywords_from_python(tmp_path) -> None:
    """Called from Python, the messages name ``cache_images=True``, not ``--cache-images``."""
    from lightly_derm.jobs import console

    with pytest.raises(ValueError) as caught:
        resolve_config(PretrainConfig(cache_images=True, out=str(tmp_path)))
    message = str(caught.value)
    assert "cache_images=True keeps decoded canvases for augment='gpu'" in message
    assert "--" not in message
    console.set_command_line(True)
    try:
        with pytest.raises(ValueError, match="--cache-images keeps .* --augment gpu"):
            resolve_config(PretrainConfig(cache_images=True, out=str(tmp_path)))
    finally:
        console.set_command_line(False)


def test_limit_trains_on_the_first_images_sorted_by_path(tmp_path) -> None:
    from lightly_derm.jobs.pretrain import (
        RESUME_FIXED,
        _create_method,
        _describe_data,
        pretrain_dataset,
        training_data,
    )
    from tests.data.images import save_rgb

    root = tmp_path / "images"
    for name in ("z.png", "m.png", "a.png", "k.png", "b.png"):  # written unsorted
        save_rgb(root / name, 40, 40, seed=len(name))
    config = resolve_config(
        PretrainConfig(
            method="simclr",
            data=str(root),
            backbone="resnet18",
            input_size=32,
            batch_size=8,
            limit=3,
        )
    )
    source = pretrain_dataset(config, transform=None)
    data = training_data(config, _create_method(config, source), source)
    assert [data.source[i][2] for i in range(len(data.source))] == [
        "a.png",
        "b.png",
        "k.png",
    ]
    assert data.batch_size == 3 and len(data.train_dataloader()) == 1
    said = _describe_data(config, source, data.source)
    assert "the first 3 of 5 images (limit=3)" in said
    assert "limit" in RESUME_FIXED  # another limit is other data
    with pytest.raises(ValueError, match="limit must be an integer >= 2"):
        resolve_config(PretrainConfig(limit=1))
