from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, MeanIoU

from lightly_derm.segmentation import (
    LesionSegmentationMetric,
    binary_dice_jaccard,
    thresholded_jaccard,
)


def reference_scores(pred: np.ndarray, target: np.ndarray, threshold: float = 0.65):
    """Per-image Dice, Jaccard and thresholded Jaccard by counting pixels one by one."""
    dice, jaccard, thresholded = [], [], []
    for b in range(pred.shape[0]):
        tp = fp = fn = 0
        for i in range(pred.shape[2]):
            for j in range(pred.shape[3]):
                p, g = bool(pred[b, 0, i, j]), bool(target[b, 0, i, j])
                tp += p and g
                fp += p and not g
                fn += g and not p
        if tp + fp + fn == 0:  # both empty: perfect
            d = jac = 1.0
        else:
            d = 2.0 * tp / (2.0 * tp + fp + fn)
            jac = float(tp) / (tp + fp + fn)
        dice.append(d)
        jaccard.append(jac)
        thresholded.append(jac if jac >= threshold else 0.0)
    return np.array(dice), np.array(jaccard), np.array(thresholded)


def _random_masks(shape, seed, density=0.4):
    rng = np.random.default_rng(seed)
    target = (rng.random(shape) < density).astype(np.float64)
    # predictions that agree with the target to a varying degree per image
    flip = rng.random(shape) < rng.uniform(0.0, 0.5, size=(shape[0], 1, 1, 1))
    pred = np.where(flip, 1 - target, target)
    return pred, target


SHAPES = [(3, 1, 5, 7), (4, 1, 16, 16), (1, 1, 9, 4)]


@pytest.mark.parametrize("shape", SHAPES)
def test_per_image_scores_match_hand_computation(shape) -> None:
    pred, target = _random_masks(shape, seed=sum(shape))
    ref_dice, ref_jac, _ = reference_scores(pred, target)
    dice, jaccard = binary_dice_jaccard(
        torch.from_numpy(pred) > 0.5, torch.from_numpy(target).float()
    )
    np.testing.assert_allclose(dice.double().numpy(), ref_dice, rtol=1e-6)
    np.testing.assert_allclose(jaccard.double().numpy(), ref_jac, rtol=1e-6)


def test_metric_accumulates_batches_and_thresholds() -> None:
    """Two batches of logits, with hand-made cases around the 0.65 threshold."""
    pred1, target1 = _random_masks((4, 1, 8, 8), seed=1)
    # image 0: J = 12/16 = 0.75 (kept); image 1: J = 10/16 = 0.625 (counts as 0)
    t = np.zeros((1, 8, 8))
    t[0, :4, :4] = 1
    p075, p0625 = t.copy(), t.copy()
    p075[0, 3, :4] = 0  # 12 of 16 predicted, no false positive
    p0625[0, 3, :4] = 0
    p0625[0, 2, :2] = 0
    # image 2: both empty (1.0); image 3: empty target, one false positive (0.0)
    empty, one = np.zeros((1, 8, 8)), np.zeros((1, 8, 8))
    one[0, 5, 5] = 1
    pred2 = np.stack([p075, p0625, empty, one])
    target2 = np.stack([t, t, empty, empty])
    metric = LesionSegmentationMetric()
    for pred, target in ((pred1, target1), (pred2, target2)):
        logits = torch.from_numpy(np.where(pred > 0, 3.0, -3.0)).float()
        metric(logits, torch.from_numpy(target).float())
    pred = np.concatenate([pred1, pred2])
    target = np.concatenate([target1, target2])
    ref_dice, ref_jac, ref_thr = reference_scores(pred, target)
    assert ref_jac[4] == pytest.approx(0.75) and ref_thr[4] == pytest.approx(0.75)
    assert ref_jac[5] == pytest.approx(0.625) and ref_thr[5] == 0
    assert ref_jac[6] == 1.0 and ref_jac[7] == 0.0
    scores = metric.aggregate()
    assert scores["dice"].item() == pytest.approx(ref_dice.mean(), rel=1e-6)
    assert scores["jaccard"].item() == pytest.approx(ref_jac.mean(), rel=1e-6)
    assert scores["jaccard_thresholded"].item() == pytest.approx(
        ref_thr.mean(), rel=1e-6
    )
    per_image = metric.per_image()
    np.testing.assert_allclose(
        per_image["jaccard_thresholded"].numpy(), ref_thr, rtol=1e-6
    )
    metric.reset()
    with pytest.raises(ValueError, match="before any batch"):
        metric.aggregate()


def test_probabilities_and_booleans() -> None:
    pred, target = _random_masks((3, 1, 6, 6), seed=7)
    ref = reference_scores(pred, target)
    probs = LesionSegmentationMetric(logits=False)
    probs(
        torch.from_numpy(np.where(pred > 0, 0.9, 0.2)).float(), torch.from_numpy(target)
    )
    booleans = LesionSegmentationMetric()
    booleans(torch.from_numpy(pred > 0), torch.from_numpy(target))
    for metric in (probs, booleans):
        assert metric.aggregate()["jaccard"].item() == pytest.approx(
            ref[1].mean(), rel=1e-6
        )


def test_agrees_with_monai_dice_and_iou() -> None:
    pred, target = _random_masks((5, 1, 12, 10), seed=11)
    y_pred, y = torch.from_numpy(pred).float(), torch.from_numpy(target).float()
    dice_metric = DiceMetric(include_background=True, ignore_empty=False)
    iou_metric = MeanIoU(include_background=True, ignore_empty=False)
    dice_metric(y_pred, y)
    iou_metric(y_pred, y)
    ours = LesionSegmentationMetric()
    ours(y_pred > 0.5, y)
    scores = ours.aggregate()
    assert scores["dice"].item() == pytest.approx(
        dice_metric.aggregate().item(), rel=1e-6
    )
    assert scores["jaccard"].item() == pytest.approx(
        iou_metric.aggregate().item(), rel=1e-6
    )


def test_thresholded_jaccard_and_nan() -> None:
    values = torch.tensor([0.9, 0.65, 0.6499, 0.0, float("nan")])
    out = thresholded_jaccard(values)
    assert out[:4].tolist() == pytest.approx([0.9, 0.65, 0.0, 0.0])
    assert torch.isnan(out[4])
    metric = LesionSegmentationMetric(empty_score=float("nan"))
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, :2, :2] = 1
    metric(target > 0, target)  # image 1 is empty on both sides: left out
    assert metric.aggregate()["jaccard"].item() == 1.0


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"\(2, 1, 4, 4\) and \(2, 4, 4\)"):
        binary_dice_jaccard(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match=r"\(2, 2, 4, 4\)"):
        LesionSegmentationMetric()(torch.zeros(2, 2, 4, 4), torch.zeros(2, 2, 4, 4))


def _metric_on_rank(rank: int, world_size: int, logits, target) -> dict:
    metric = LesionSegmentationMetric()
    mine = slice(rank * 4, (rank + 1) * 4)  # 4 images per rank, in two batches
    metric(logits[mine][:1], target[mine][:1])
    metric(logits[mine][1:], target[mine][1:])
    return {**metric.aggregate(), "jaccard_per_image": metric.per_image()["jaccard"]}


@pytest.mark.slow
@pytest.mark.distributed
def test_distributed_equals_single_process_on_the_concatenated_batch() -> None:
    from tests.utils.distributed import run_distributed

    pred, target = _random_masks((8, 1, 6, 5), seed=21)
    logits = torch.from_numpy(np.where(pred > 0, 2.0, -2.0)).float()
    target_t = torch.from_numpy(target).float()
    ref_dice, ref_jac, ref_thr = reference_scores(pred, target)
    results = run_distributed(_metric_on_rank, world_size=2, args=(logits, target_t))
    for result in results:  # every rank sees the gathered scores of all 8 images
        np.testing.assert_allclose(
            result["jaccard_per_image"].numpy(), ref_jac, rtol=1e-6
        )
        assert result["dice"].item() == pytest.approx(ref_dice.mean(), rel=1e-6)
        assert result["jaccard"].item() == pytest.approx(ref_jac.mean(), rel=1e-6)
        assert result["jaccard_thresholded"].item() == pytest.approx(
            ref_thr.mean(), rel=1e-6
        )
