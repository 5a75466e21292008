"""``lightly-derm evaluate``: end to end on tiny synthetic data and an image folder, errors."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
import yaml

from lightly_derm.data import SyntheticLesions
from lightly_derm.evaluation import extract_features, knn_evaluate
from lightly_derm.models import resnet
from lightly_derm.transforms import eval_transform
from tests.cli.test_pretrain_cli import one_error_line, run

TINY = [
    "--synthetic-images",
    "24",
    "--synthetic-test-images",
    "12",
    "--input-size",
    "32",
    "--finetune-epochs",
    "1",
    "--finetune-batch-size",
    "8",
    "--no-progress-bar",
]


@pytest.fixture
def state_dict_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_evaluate_synthetic_from_a_state_dict(
    state_dict_file, tmp_path, capsys
) -> None:
    out = tmp_path / "eval"
    code, stdout, _ = run(
        capsys,
        "evaluate",
        "--checkpoint",
        str(state_dict_file),
        "--out",
        str(out),
        "--fractions",
        "0.5",
        "1",
        *TINY,
    )
    assert code == 0
    assert "backbone resnet18" in stdout  # told from the tensors' layout
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["synthetic"] is True
    assert "synthetic" in results["data"]["source"]
    assert (
        results["data"]["train_images"] == 24 and results["data"]["test_images"] == 12
    )
    assert set(results["finetune"]) == {"0.5", "1"}
    assert results["finetune"]["0.5"]["finetune_num_train"] == 12
    for scores in (results["knn"], results["linear"], *results["finetune"].values()):
        for key, value in scores.items():
            if key.endswith("accuracy"):
                assert 0.0 <= value <= 1.0, key
    # wiring: the job's kNN equals kNN on the features of the same images, computed here
    backbone = resnet("resnet18", weights=state_dict_file)
    transform = eval_transform(32)
    train = SyntheticLesions(24, 32, num_classes=3, split="train", transform=transform)
    test = SyntheticLesions(12, 32, num_classes=3, split="test", transform=transform)
    expected = knn_evaluate(
        extract_features(backbone, train), extract_features(backbone, test), 3
    )
    assert results["knn"]["knn_accuracy"] == pytest.approx(expected["knn_accuracy"])
    table = (out / "results.md").read_text()
    for row in (
        "| kNN (k=20, frozen) | 24 |",
        "| linear probe (frozen) | 24 |",
        "| fine-tune 50% (1 epochs) | 12 |",
    ):
        assert row in table
    assert "synthetic" in table
    assert (out / "plots" / "embedding.png").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["fractions"] == [0.5, 1.0]


def test_evaluate_a_run_folder_binary_auc(tiny_run, capsys) -> None:
    """A pretrain run folder: its backbone, input size; two classes give an AUC."""
    code, _, _ = run(
        capsys,
        "evaluate",
        "--checkpoint",
        str(tiny_run),
        "--synthetic-classes",
        "2",
        "--fractions",
        *TINY[:4],
        "--no-progress-bar",
        "--no-plots",
    )
    assert code == 0
    results = json.loads((tiny_run / "evaluation" / "results.json").read_text())
    assert results["checkpoint"].endswith("backbone.pt")
    assert results["input_size"] == 32 and results["finetune"] == {}
    assert results["knn"]["knn_auc"] is not None
    assert 0.0 <= results["linear"]["linear_auc"] <= 1.0


def test_evaluate_an_image_folder_with_a_stratified_split(
    image_folder, state_dict_file, tmp_path, capsys
) -> None:
    out = tmp_path / "eval"
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        code, _, _ = run(
            capsys,
            "evaluate",
            "--checkpoint",
            str(state_dict_file),
            "--data",
            str(image_folder),
            "--input-size",
            "32",
            "--fractions",
            "--out",
            str(out),
            "--test-fraction",
            "0.2",
            "--no-progress-bar",
            "--no-plots",
        )
    assert code == 0
    data = json.loads((out / "results.json").read_text())["data"]
    assert "stratified" in data["split"] and data["classes"] == ["a", "b"]
    # 5 readable images of a, 6 of b: one of each held out
    assert (data["train_images"], data["test_images"]) == (9, 2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backbone", "resnet19"], "resnet19"),
        (["--checkpoint", "{tmp}/nope.ckpt"], "checkpoint not found"),
        (["--checkpoint", "{tmp}"], "no checkpoint in the folder"),
        (["--checkpoint", "{tmp}/junk.pt"], "cannot tell which backbone"),
        (["--checkpoint", "{tmp}/r18.pt", "--data", "{tmp}/flat"], "has no labels"),
        (
            ["--checkpoint", "{tmp}/junk.pt", "--fractions", "0"],
            "fraction must be in (0, 1]",
        ),
    ],
)
def test_evaluate_bad_input_is_one_line(tmp_path, capsys, argv, message) -> None:
    torch.save({"weight": torch.zeros(2, 2)}, tmp_path / "junk.pt")
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    from tests.data.images import save_rgb

    for i in range(4):
        save_rgb(tmp_path / "flat" / f"{i}.png", seed=i)
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run(capsys, "evaluate", *args, "--out", str(tmp_path / "out"))
    assert code == 2
    assert message in one_error_line(err)


def test_evaluate_confusion_limit_and_overwrite(
    state_dict_file, tmp_path, capsys
) -> None:
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(state_dict_file), "--out", str(out)]
    code, _, err = run(capsys, *argv, "--fractions", "1", "--limit", "10", *TINY)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["train_images"] == 10
    assert results["data"]["test_images"] == 10
    assert results["method"] == "pretrained"
    scores = {
        "knn": results["knn"],
        "linear": results["linear"],
        "finetune_1": results["finetune"]["1"],
    }
    assert set(results["confusion"]) == set(scores)
    for protocol, report in results["confusion"].items():
        prefix = protocol.split("_")[0] + "_"
        matrix = report["matrix"]
        assert sum(map(sum, matrix)) == 10
        correct = sum(matrix[i][i] for i in range(len(matrix)))
        # the matrix holds the same predictions as the protocol's accuracy
        assert correct / 10 == pytest.approx(scores[protocol][prefix + "accuracy"])
        recalls = []
        for i, name in enumerate(report["classes"]):  # recall from the matrix, by loops
            total = sum(matrix[i])
            expected = matrix[i][i] / total if total else None
            assert report["recall"][name] == pytest.approx(expected)
            recalls += [expected] if total else []
        assert sum(recalls) / len(recalls) == pytest.approx(
            scores[protocol][prefix + "balanced_accuracy"]
        )
        assert (out / "plots" / f"confusion_{protocol}.png").is_file()
    table = (out / "results.md").read_text()
    assert "Per-class recall" in table and "| fine-tuning on 100% |" in table
    assert isinstance(results["warnings"], list)
    # an earlier evaluation is kept unless --overwrite
    (out / "plots" / "mine.png").write_bytes(b"mine")
    code, _, err = run(capsys, *argv, "--fractions", "--limit", "10", *TINY)
    assert code == 2 and "already holds evaluation results" in one_error_line(err)
    code, _, err = run(
        capsys, *argv, "--fractions", "--limit", "10", "--overwrite", *TINY
    )
    assert code == 0, err
    # --overwrite deleted what the first evaluation wrote, not the user's file
    assert (out / "plots" / "mine.png").read_bytes() == b"mine"
    assert not (out / "plots" / "confusion_finetune_1.png").exists()
    assert (out / "plots" / "confusion_knn.png").is_file()


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_evaluate_results_without_a_record_are_refused(
    tmp_path, capsys, overwrite
) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    (out / "results.json").write_text("{}")  # e.g. written before the record existed
    code, _, err = run(capsys, "evaluate", "--out", str(out), *overwrite, *TINY)
    assert code == 2
    assert (
        "holds files no lightly-derm run recorded writing (results.json); a run "
        "would replace them"
    ) in one_error_line(err)
    assert [p.name for p in out.iterdir()] == ["results.json"]


def test_evaluate_warns_about_one_predicted_class() -> None:
    from lightly_derm.evaluation import confusion_report
    from lightly_derm.jobs.evaluate import _warnings

    collapsed = confusion_report([0, 0, 0], [0, 1, 1], ["a", "b", "c"])
    lines = _warnings({"knn": collapsed, "linear": collapsed})
    assert any("no images of c" in line for line in lines)
    assert sum("predicts one class" in line for line in lines) == 2
    fine = confusion_report([0, 1, 2], [0, 1, 2], ["a", "b", "c"])
    assert _warnings({"knn": fine}) == []


def test_evaluate_baseline_scores_an_untrained_backbone(tmp_path, capsys) -> None:
    torch.manual_seed(123)  # not the baseline's initialisation (seed 0)
    checkpoint = tmp_path / "other.pth"
    torch.save(torchvision.models.resnet18().state_dict(), checkpoint)
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--out", str(out)]
    code, _, err = run(capsys, *argv, "--baseline", "--fractions", "1", *TINY)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    baseline = results["baseline"]
    assert set(baseline) >= {"knn", "linear", "finetune", "confusion"}
    assert baseline["knn"]["knn_k"] == results["knn"]["knn_k"]  # same settings
    # other weights, other features: the scores differ from the checkpoint's
    assert baseline["knn"] != results["knn"] or baseline["linear"] != results["linear"]
    table = (out / "results.md").read_text()
    assert "| random init: kNN" in table and "| random init: fine-tune" in table
    assert (out / "plots" / "confusion_knn_random_init.png").is_file()


def test_evaluate_without_a_checkpoint_is_the_random_init_of_a_baseline(
    tmp_path, capsys
) -> None:
    """No checkpoint: an untrained backbone, with the stem pretrain would choose."""
    out = tmp_path / "random"
    code, stdout, err = run(capsys, "evaluate", "--out", str(out), "--fractions", *TINY)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["backbone"] == "resnet18-cifar"  # 32 px, no backbone named
    assert results["checkpoint"] is None and results["method"] == "random init"
    assert "small-image stem" in stdout and "(below 64 px)" in stdout
    assert "untrained resnet18-cifar (random init)" in (out / "results.md").read_text()
    assert not (tmp_path / "evaluation").exists()
    # a named backbone is kept as named (ImageNet stem)
    out = tmp_path / "named"
    argv = ["evaluate", "--backbone", "resnet18", "--out", str(out), "--fractions"]
    code, stdout, err = run(capsys, *argv, *TINY)
    assert code == 0, err
    named = json.loads((out / "results.json").read_text())
    assert named["backbone"] == "resnet18" and "small-image stem" not in stdout
    # the same untrained backbone as the baseline of a resnet18 checkpoint
    torch.manual_seed(123)
    checkpoint = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), checkpoint)
    out = tmp_path / "baseline"
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--out", str(out)]
    code, stdout, err = run(capsys, *argv, "--baseline", "--fractions", *TINY)
    assert code == 0, err
    assert "the checkpoint's architecture" in stdout
    baseline = json.loads((out / "results.json").read_text())["baseline"]
    assert baseline["knn"] == named["knn"] and baseline["linear"] == named["linear"]
