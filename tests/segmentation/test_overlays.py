from __future__ import annotations

import pytest
import torch
from PIL import Image

from lightly_derm.segmentation import plot_encoder_comparison, render_overlays


def _loop_dice(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Dice of two (H, W) masks in float64 with loops; 1 when both are empty."""
    inter = total = 0.0
    for i in range(prediction.shape[0]):
        for j in range(prediction.shape[1]):
            p, t = float(prediction[i, j] > 0.5), float(target[i, j] > 0.5)
            inter += p * t
            total += p + t
    return 1.0 if total == 0 else 2 * inter / total


def _discs(b: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.randint(size // 4, 3 * size // 4, (b, 2), generator=g)
    radii = torch.randint(2, size // 3, (b,), generator=g)
    masks = [
        ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2).float()
        for (cy, cx), r in zip(centres.tolist(), radii.tolist(), strict=True)
    ]
    return torch.stack(masks).unsqueeze(1)


@pytest.mark.parametrize("b,size,channels", [(1, 16, 3), (3, 40, 3), (2, 24, 1)])
def test_dice_titles_columns_and_legend(b: int, size: int, channels: int) -> None:
    target = _discs(b, size, 0)
    predictions = {
        "SSL (gravis)": torch.rand(b, 1, size, size) * 0.4 + target * 0.5,
        "random init": _discs(b, size, 1),
        "empty": torch.zeros(b, 1, size, size),
    }
    figure = plot_encoder_comparison(
        torch.randn(b, channels, size, size),
        target,
        predictions,
        image_names=[f"ISIC_{i}" for i in range(b)],
    )
    axes = figure.axes
    assert len(axes) == b * 5
    assert axes[0].get_title() == "image" and axes[1].get_title() == "ground truth"
    for c, (name, prediction) in enumerate(predictions.items(), start=2):
        reference = [_loop_dice(prediction[r, 0], target[r, 0]) for r in range(b)]
        assert figure.dice[name].tolist() == pytest.approx(reference, abs=1e-6)
        for r in range(b):
            title = axes[r * 5 + c].get_title().splitlines()
            assert title[-1].startswith(f"Dice {reference[r]:.2f}")
        mean = sum(reference) / b
        assert (
            axes[c].get_title() == f"{name}\nDice {reference[0]:.2f} (mean {mean:.2f})"
        )
    assert axes[5 * (b - 1)].get_ylabel() == f"ISIC_{b - 1}"
    assert figure.get_suptitle() == (
        "Lesion segmentation: SSL (gravis) vs. random init vs. empty"
    )
    labels = [t.get_text() for t in figure.legends[0].get_texts()]
    assert labels == ["ground truth", "ground truth outline", "prediction (> 0.5)"]


def test_saved_at_a_readable_size(tmp_path) -> None:
    target = _discs(6, 64, 2)
    path = tmp_path / "plots" / "compare.png"
    plot_encoder_comparison(
        torch.randn(6, 3, 64, 64),
        target,
        {"pretrained": target, "random init": torch.zeros_like(target)},
        path=path,
        title="resnet18: gravis vs. random init",
    )
    width, height = Image.open(path).size
    # 4 columns and 6 rows of 240 px panels (the old grid was 200 x 398 px in all)
    assert width >= 4 * 200 and height >= 6 * 200
    # the old grid still works
    assert (
        render_overlays(
            torch.randn(2, 3, 8, 8), target[:2, :, :8, :8], target[:2, :, :8, :8]
        ).dtype
        == torch.uint8
    )


def test_bad_input() -> None:
    images, target = torch.randn(2, 3, 16, 16), torch.zeros(2, 1, 16, 16)
    with pytest.raises(ValueError, match="at least one encoder"):
        plot_encoder_comparison(images, target, {})
    with pytest.raises(
        ValueError, match=r"predictions\['b'\] must be \(2, 1, 16, 16\).*\(2, 1, 8, 8\)"
    ):
        plot_encoder_comparison(
            images, target, {"a": target, "b": torch.zeros(2, 1, 8, 8)}
        )
    with pytest.raises(ValueError, match="images must be"):
        plot_encoder_comparison(torch.randn(2, 4, 16, 16), target, {"a": target})
    with pytest.raises(ValueError, match="image_names has 1 names for 2 images"):
        plot_encoder_comparison(images, target, {"a": target}, image_names=["x"])
