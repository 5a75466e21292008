from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from lightly_derm.data import SyntheticLesions
from lightly_derm.evaluation import finetune_evaluate, stratified_subset
from lightly_derm.models import resnet

TO_TENSOR = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


def test_low_label_finetune_runs_and_leaves_backbone_alone() -> None:
    train = SyntheticLesions(
        num_images=40, image_size=32, num_classes=2, transform=TO_TENSOR
    )
    test = SyntheticLesions(
        num_images=12, image_size=32, num_classes=2, split="test", transform=TO_TENSOR
    )
    # a small CNN with BatchNorm keeps the test fast; any backbone module works
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    result = finetune_evaluate(
        backbone,
        train,
        test,
        fraction=0.25,
        epochs=1,
        batch_size=8,
        trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False},
    )
    assert (
        result["finetune_num_train"]
        == len(stratified_subset(train.targets, 0.25))
        == 10
    )
    assert result["finetune_num_samples"] == 12 and result["finetune_fraction"] == 0.25
    assert 0.0 <= result["finetune_accuracy"] <= 1.0
    assert result["finetune_auc"] is None or 0.0 <= result["finetune_auc"] <= 1.0
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert "finetune_predictions" not in result  # only when asked for


@pytest.mark.parametrize(("classes", "test_images"), [(2, 9), (3, 15)])
def test_predictions_match_the_scores_and_a_loop_built_confusion_matrix(
    classes: int, test_images: int
) -> None:
    from lightly_derm.evaluation import confusion_report

    train = SyntheticLesions(
        num_images=24, image_size=32, num_classes=classes, transform=TO_TENSOR
    )
    test = SyntheticLesions(
        num_images=test_images,
        image_size=32,
        num_classes=classes,
        split="test",
        transform=TO_TENSOR,
    )
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    result = finetune_evaluate(
        backbone,
        train,
        test,
        epochs=1,
        batch_size=8,
        trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False},
        return_predictions=True,
    )
    predicted = result["finetune_predictions"]
    assert predicted.dtype == torch.int64 and predicted.shape == (test_images,)
    targets = [int(t) for t in test.targets]
    matrix = [[0] * classes for _ in range(classes)]  # rows true, columns predicted
    for target, prediction in zip(targets, predicted.tolist(), strict=True):
        matrix[target][prediction] += 1
    correct = sum(matrix[c][c] for c in range(classes))
    assert result["finetune_accuracy"] == pytest.approx(correct / test_images)
    recalls = [matrix[c][c] / sum(matrix[c]) for c in range(classes) if sum(matrix[c])]
    assert result["finetune_balanced_accuracy"] == pytest.approx(
        sum(recalls) / len(recalls)
    )
    report = confusion_report(predicted, targets, num_classes=classes)
    assert report["matrix"] == matrix


def test_needs_targets() -> None:
    class NoTargets(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.zeros(3, 8, 8), 0

    with pytest.raises(ValueError, match="targets attribute"):
        finetune_evaluate(resnet("resnet18"), NoTargets(), NoTargets())
    with pytest.raises(ValueError, match="fraction"):
        data = SyntheticLesions(4, 16, transform=TO_TENSOR)
        finetune_evaluate(resnet("resnet18"), data, data, fraction=np.float64(2.0))


def test_scores_on_the_requested_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """device and autocast_dtype reach the scoring pass (Lightning leaves the model on the CPU)."""
    import lightly_derm.evaluation.finetune as finetune

    calls = []
    real = finetune.extract_features

    def recording(*args, **kwargs):
        calls.append((kwargs.get("device"), kwargs.get("autocast_dtype")))
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune, "extract_features", recording)
    data = SyntheticLesions(
        num_images=8, image_size=16, num_classes=2, transform=TO_TENSOR
    )
    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    result = finetune_evaluate(
        backbone,
        data,
        data,
        epochs=1,
        batch_size=4,
        device="cpu",
        autocast_dtype=torch.bfloat16,
        trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False},
    )
    assert calls == [("cpu", torch.bfloat16)]
    assert result["finetune_num_samples"] == 8


def test_one_class_training_labels_are_refused() -> None:
    from torch import nn

    from lightly_derm.errors import DataError

    class _OneClass(torch.utils.data.Dataset):
        targets = np.zeros(6, dtype=np.int64)
        classes = ["not_melanoma", "melanoma"]

        def __len__(self) -> int:
            return 6

        def __getitem__(self, i):
            return torch.zeros(3, 8, 8), 0

    with pytest.raises(DataError, match="one class only .*class 0 'not_melanoma'"):
        finetune_evaluate(nn.Flatten(), _OneClass(), _OneClass())
