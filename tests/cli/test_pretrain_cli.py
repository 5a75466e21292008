"""``lightly-derm pretrain``: end to end on tiny synthetic data, errors, config, resume."""

from __future__ import annotations

import csv
import json

import pytest
import pytorch_lightning as pl
import torch
import yaml

from lightly_derm.cli import main
from lightly_derm.jobs import pretrain
from lightly_derm.models import resnet
from tests.cli.conftest import TINY_PRETRAIN


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    return errors[0]


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_pretrain_synthetic_writes_the_run_folder(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code, stdout, _ = run(
        capsys, "pretrain", "--method", "gravis", "--out", str(out), *TINY_PRETRAIN
    )
    assert code == 0
    assert "SYNTHETIC" in stdout and "not patient data" in stdout
    for name in (
        "config.yaml",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "metrics.csv",
        "hparams.yaml",
        "backbone.pt",
        "summary.json",
        "plots/loss.png",
        "plots/views.png",
        "plots/embedding.png",
    ):
        assert (out / name).is_file(), name
    config = yaml.safe_load((out / "config.yaml").read_text())
    # 32 px and no --backbone: the demo's resnet18 with the small-image stem
    assert config["method"] == "gravis" and config["backbone"] == "resnet18-cifar"
    assert config["data"] is None and config["synthetic_images"] == 16
    summary = json.loads((out / "summary.json").read_text())
    assert summary["synthetic_data"] is True
    assert summary["global_step"] == 2  # 16 images / batch 8, 1 epoch
    # how far the two steps turned each ResNet stage, also said in one line
    change = summary["encoder_change"]
    assert list(change) == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    assert all(0 < c["turned"] < 90 and c["filters"] > 0 for c in change.values())
    assert "the backbone's filters turned" in stdout and "layer4 " in stdout
    # backbone.pt holds torchvision keys: loads strictly into a torchvision ResNet-18
    state = torch.load(out / "backbone.pt", weights_only=True)
    assert "layer4.1.bn2.weight" in state
    model = resnet("resnet18-cifar")
    model.load_state_dict(state, strict=True)
    last = torch.load(out / "checkpoints/last.ckpt", weights_only=False)
    assert last["global_step"] == 2
    assert torch.equal(
        last["state_dict"]["backbone.conv1.weight"], state["conv1.weight"]
    )
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert any(r.get("train_loss") for r in rows)
    assert any(r.get("train_loss_epoch") for r in rows)


def test_no_encoder_change_keeps_no_starting_copy(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = ("--method", "byol", "--out", str(out), "--no-encoder-change")
    code, stdout, _ = run(capsys, "pretrain", *argv, *TINY_PRETRAIN, "--no-plots")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["encoder_change"] is None
    assert "the backbone's filters turned" not in stdout
    last = torch.load(out / "checkpoints/last.ckpt", weights_only=False)
    assert not any("EncoderChange" in key for key in last.get("callbacks", {}))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "plot"), [("fgssl", "jigsaws.png"), ("ap_byol", "mined_pairs.png")]
)
def test_method_specific_plots(tmp_path, capsys, method, plot) -> None:
    out = tmp_path / method
    code, _, _ = run(
        capsys,
        "pretrain",
        "--method",
        method,
        "--out",
        str(out),
        *TINY_PRETRAIN,
        "--method-args",
        "warmup_steps=0" if method == "ap_byol" else "schedule=joint",
    )
    assert code == 0
    assert (out / "plots" / plot).is_file()
    assert (out / "plots" / "views.png").is_file()


@pytest.mark.slow
def test_image_folder_with_an_unreadable_image(image_folder, tmp_path, capsys) -> None:
    """Real data: a recursive folder; the broken file is skipped with one warning."""
    out = tmp_path / "run"
    with pytest.warns(
        UserWarning, match=r"skipped 1 unreadable image\(s\) of 12.*img_03"
    ):
        code, stdout, _ = run(
            capsys,
            "pretrain",
            "--method",
            "simclr",
            "--data",
            str(image_folder),
            "--out",
            str(out),
            "--input-size",
            "32",
            "--batch-size",
            "4",
            "--epochs",
            "1",
            "--max-steps",
            "1",
            "--no-plots",
            "--no-progress-bar",
            "--no-tensorboard",
            "--num-workers",
            "0",
        )
    assert code == 0
    assert "11 images, 11 labelled in 2 classes" in stdout
    config = yaml.safe_load((out / "config.yaml").read_text())
    # the method's default with real data, with the small-image stem at 32 px
    assert config["backbone"] == "resnet50-cifar"
    assert config["synthetic_images"] is None


@pytest.mark.slow
def test_gpu_augmentation_from_decoded_images(image_folder, tmp_path, capsys) -> None:
    """--augment gpu --cache-images: images decoded once, views made after the transfer
    (on the CPU here); the method gets augment='gpu' and the plots still work."""
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        code, stdout, err = run(
            capsys,
            "pretrain",
            "--method",
            "byol",
            "--data",
            str(image_folder),
            "--augment",
            "gpu",
            "--cache-images",
            "--backbone",
            "resnet18",
            "--out",
            str(out),
            "--input-size",
            "32",
            "--batch-size",
            "4",
            "--epochs",
            "1",
            "--embedding-images",
            "8",
            "--no-progress-bar",
            "--no-tensorboard",
            "--num-workers",
            "0",
        )
    assert code == 0, err
    assert "decoding every image once" in stdout
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["augment"] == "gpu" and config["cache_images"] is True
    saved = torch.load(out / "checkpoints/last.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["augment"] == "gpu"
    assert saved["global_step"] == 2  # 11 readable images, batches of 4, drop_last
    for name in ("views.png", "embedding.png", "loss.png"):
        assert (out / "plots" / name).stat().st_size > 0, name


# ------------------------------------------------------------------ errors
def test_unknown_method_lists_the_registered_ones(tmp_path, capsys) -> None:
    code, _, err = run(capsys, "pretrain", "--method", "gravs", "--out", str(tmp_path))
    assert code == 2
    line = one_error_line(err)
    assert "unknown method 'gravs'; did you mean 'gravis'?" in line
    assert "'simclr'" in line and "'byol'" in line and "'fgssl'" in line


def test_unknown_method_argument_names_the_valid_ones(tmp_path, capsys) -> None:
    code, _, err = run(
        capsys,
        "pretrain",
        "--method",
        "gravis",
        "--method-args",
        "lrr=0.1",
        "--out",
        str(tmp_path),
    )
    assert code == 2
    line = one_error_line(err)
    assert "unknown argument 'lrr' for method 'gravis'; did you mean 'lr'?" in line
    assert "num_views" in line
    code, _, err = run(
        capsys, "pretrain", "--method-args", "backbone=resnet50", "--out", str(tmp_path)
    )
    assert code == 2 and "set by --backbone" in one_error_line(err)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "{tmp}/missing"], "data not found"),
        (["--data", "{tmp}/empty"], "no images found"),
        (
            ["--data", "{tmp}/empty", "--labels", "{tmp}/missing.csv"],
            "labels CSV not found",
        ),
        (["--labels", "{tmp}/x.csv"], "--labels needs --data"),
        (["--backbone", "vgg16"], "backbone 'vgg16' is not a known ResNet"),
        (["--precision", "17"], "precision '17' is not a Lightning precision"),
        (["--batch-size", "1"], "batch_size must be an integer >= 2"),
        (["--method-args", "lr"], "--method-args takes key=value pairs"),
        (["--cache-images"], "--cache-images keeps decoded canvases for --augment gpu"),
        (
            ["--method-args", "augment=tpu"],
            "'augment' of method 'gravis' must be 'cpu' or 'gpu'",
        ),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, argv, message) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.csv").write_text("image,MEL\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run(capsys, "pretrain", "--out", str(tmp_path / "run"), *args)
    assert code == 2
    assert message in one_error_line(err)


def test_strict_makes_an_unreadable_image_an_error(
    image_folder, tmp_path, capsys
) -> None:
    code, _, err = run(
        capsys,
        "pretrain",
        "--data",
        str(image_folder),
        "--strict",
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 2
    line = one_error_line(err)
    assert "cannot read image" in line and "img_03.png" in line


def test_debug_shows_the_traceback(tmp_path, monkeypatch) -> None:
    with pytest.raises(KeyError, match="unknown method"):
        main(["--debug", "pretrain", "--method", "nope", "--out", str(tmp_path)])
    with pytest.raises(KeyError):
        main(["pretrain", "--debug", "--method", "nope", "--out", str(tmp_path)])
    monkeypatch.setenv("LIGHTLY_DERM_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["pretrain", "--method", "nope", "--out", str(tmp_path)])


def test_argparse_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["pretrain", "--epochs", "many"])
    assert info.value.code == 2
    err = capsys.readouterr().err  # jsonargparse names the option and the value
    assert '"epochs"' in err and "Expected a <class 'int'>. Got value: many" in err


# ------------------------------------------------------------------ config
def test_print_config_round_trip(tmp_path, capsys) -> None:
    out = str(tmp_path / "run")
    code, printed, _ = run(
        capsys,
        "pretrain",
        "--method",
        "byol",
        "--epochs",
        "3",
        "--out",
        out,
        "--method-args",
        "lr=0.01",
        "ema_start=0.99",
        "--print_config",
    )
    assert code == 0
    config = yaml.safe_load(printed)
    assert config["method"] == "byol" and config["epochs"] == 3
    assert config["method_args"] == {"lr": 0.01, "ema_start": 0.99}
    assert config["backbone"] == "resnet18" and config["input_size"] == 64  # demo
    assert config["precision"] == "32-true" and config["out"] == out
    path = tmp_path / "config.yaml"
    path.write_text(printed)
    code, again, _ = run(capsys, "pretrain", "--config", str(path), "--print_config")
    assert code == 0 and again == printed
    # the command line overrides the file; the method mapping form is accepted
    path.write_text("method: {name: gravis, num_views: 6}\nbatch-size: 16\n")
    code, again, _ = run(
        capsys, "pretrain", "--config", str(path), "--batch-size", "8", "--print_config"
    )
    config = yaml.safe_load(again)
    assert config["method"] == "gravis" and config["method_args"] == {"num_views": 6}
    assert config["batch_size"] == 8


def test_limit_is_an_option(capsys) -> None:
    code, printed, _ = run(capsys, "pretrain", "--limit", "24", "--print_config")
    assert code == 0 and yaml.safe_load(printed)["limit"] == 24
    code, _, err = run(capsys, "pretrain", "--limit", "1")
    assert code == 2 and "limit must be an integer >= 2" in one_error_line(err)


def test_config_file_errors(tmp_path, capsys) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("epochz: 3\n")
    code, _, err = run(capsys, "pretrain", "--config", str(path))
    assert code == 2
    assert "unknown option 'epochz'" in one_error_line(err)
    assert "did you mean 'epochs'?" in err
    path.write_text("- a\n- b\n")
    code, _, err = run(capsys, "pretrain", "--config", str(path))
    assert code == 2 and "must hold a mapping" in one_error_line(err)
    code, _, err = run(capsys, "pretrain", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2 and "config file not found" in one_error_line(err)


# ------------------------------------------------------------------ resume
class Interrupt(pl.Callback):
    """Presses Ctrl+C once training has reached ``step`` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_continues_from_the_saved_step(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    options = {
        "method": "gravis",
        "out": str(out),
        "synthetic_images": 32,
        "input_size": 32,
        "batch_size": 8,
        "epochs": 2,  # 4 steps per epoch: 8 steps in all
        "checkpoint_every_n_steps": 2,
        "log_every_n_steps": 1,
        "embedding_images": 0,
        "progress_bar": False,
        "tensorboard": False,
    }
    # Ctrl+C: SystemExit(130) after a graceful shutdown
    with pytest.raises(SystemExit):
        pretrain(callbacks=[Interrupt(step=7)], **options)
    assert "Continue with: pretrain(out=" in capsys.readouterr().err  # from Python
    saved = torch.load(out / "checkpoints/last.ckpt", weights_only=False)
    assert saved["global_step"] == 6  # the periodic checkpoint before step 7
    assert saved["epoch"] == 1  # mid-epoch: the second epoch's second step
    # resuming with a different run configuration is refused
    code, _, err = run(
        capsys, "pretrain", "--out", str(out), "--resume", "--batch-size", "4"
    )
    assert code == 2
    line = one_error_line(err)
    assert "cannot resume" in line
    assert "batch_size=4" in line and "started with batch_size=8" in line
    # starting over in the same folder is refused too
    code, _, err = run(capsys, "pretrain", "--out", str(out), "--no-progress-bar")
    assert code == 2 and "already holds a pretraining run" in one_error_line(err)

    code, stdout, _ = run(
        capsys, "pretrain", "--out", str(out), "--resume", "--no-progress-bar"
    )
    assert code == 0
    assert "resuming" in stdout and "(step 6)" in stdout
    last = torch.load(out / "checkpoints/last.ckpt", weights_only=False)
    assert last["global_step"] == 8  # the target, not 6 + 8
    assert last["epoch"] == 1  # saved at the end of the second (last) epoch
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] == 6 and summary["global_step"] == 8
    # metrics.csv is one continuous log: every step once, both epoch means
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    steps = [int(r["step"]) for r in rows if r.get("train_loss")]
    assert steps == list(range(8))
    assert len([r for r in rows if r.get("train_loss_epoch")]) == 2
    # ... and ends with the weights of an uninterrupted run (ResumableDataLoader +
    # ExactResume: the same batches, augmentations and random states after step 6)
    pretrain(**{**options, "out": str(tmp_path / "uninterrupted")})
    resumed = torch.load(out / "backbone.pt", weights_only=True)
    straight = torch.load(tmp_path / "uninterrupted/backbone.pt", weights_only=True)
    assert resumed.keys() == straight.keys()
    for key, value in straight.items():
        assert torch.equal(resumed[key], value), key


def test_resume_needs_a_run(tmp_path, capsys) -> None:
    code, _, err = run(capsys, "pretrain", "--out", str(tmp_path), "--resume")
    assert code == 2
    assert "nothing to resume" in one_error_line(err)
    (tmp_path / "config.yaml").write_text("method: gravis\n")
    code, _, err = run(capsys, "pretrain", "--out", str(tmp_path), "--resume")
    assert code == 2
    assert "no checkpoints/last.ckpt" in one_error_line(err)
