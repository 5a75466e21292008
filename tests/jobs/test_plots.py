from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from PIL import Image

from lightly_derm.jobs.plots import (
    denormalize,
    pca_2d,
    plot_embedding,
    plot_jigsaws,
    plot_metrics,
    plot_mined_pairs,
    plot_views,
    read_metrics,
    views_figure,
    wrap_label,
)


@pytest.mark.parametrize("shape", [(30, 5), (12, 40), (3, 2)])
def test_pca_2d_matches_an_svd_reference(shape) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * torch.arange(
        1, shape[1] + 1
    )
    got = pca_2d(x).double().numpy()
    centred = x.double().numpy() - x.double().numpy().mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    reference = centred @ vt[:2].T
    for k in range(2):  # components are defined up to sign
        sign = np.sign(got[:, k] @ reference[:, k]) or 1.0
        np.testing.assert_allclose(sign * got[:, k], reference[:, k], atol=1e-4)
    with pytest.raises(ValueError, match="N >= 2"):
        pca_2d(torch.randn(1, 4))


def test_denormalize_inverts_imagenet_normalisation() -> None:
    images = torch.rand(2, 3, 8, 8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(denormalize((images - mean) / std), images)
    assert denormalize(torch.zeros(1, 1, 4, 4), None, None).shape == (1, 3, 4, 4)


@pytest.mark.slow
def test_plots_write_pngs(tmp_path) -> None:
    views = plot_views(torch.randn(12, 3, 16, 16), 3, tmp_path / "v.png", ["a", "b"])
    jig = plot_jigsaws(
        torch.randn(2, 3, 16, 16),
        [torch.randn(2, 3, 16, 16)] * 2,
        [4, 2],
        tmp_path / "j.png",
    )
    pairs = plot_mined_pairs(
        torch.randn(9, 3, 8, 8),
        torch.randn(9, 3, 8, 8),
        tmp_path / "m.png",
        anchor_labels=[0, 1, -1] * 3,
        mined_labels=[1] * 9,
        classes=["x", "y"],
        step=3,
    )
    emb = plot_embedding(
        torch.randn(20, 6), tmp_path / "e.png", [0, 1, -1, 2] * 5, ["p", "q", "r"]
    )
    for path in (views, jig, pairs, emb):
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 50
    with pytest.raises(ValueError, match="K = num_views = 3"):
        plot_views(torch.randn(10, 3, 8, 8), 3, tmp_path / "x.png")
    with pytest.raises(ValueError, match="one grid per jigsaw"):
        plot_jigsaws(
            torch.randn(1, 3, 8, 8),
            [torch.randn(1, 3, 8, 8)],
            [2, 4],
            tmp_path / "x.png",
        )
    with pytest.raises(ValueError, match="targets has 3 entries for 20"):
        plot_embedding(torch.randn(20, 6), tmp_path / "x.png", [0, 1, 2])


def test_metrics_plot_reads_lightning_csv(tmp_path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(
        "epoch,step,train_loss,train_loss_epoch,val_dice\n"
        "0,0,1.5,,\n0,1,1.25,,\n0,1,,1.4,0.6\n"
    )
    series = read_metrics(path)
    assert series["train_loss"] == [(0.0, 1.5), (1.0, 1.25)]
    assert series["val_dice"] == [(1.0, 0.6)] and "epoch" not in series
    assert plot_metrics(path, tmp_path / "loss.png").is_file()
    path.write_text("epoch,step,val_dice\n0,0,0.5\n")
    with pytest.raises(ValueError, match="holds no loss"):
        plot_metrics(path, tmp_path / "loss.png")


@pytest.mark.parametrize("n", [1, 7, 60])
def test_smooth_matches_a_float64_reference(n: int) -> None:
    import numpy as np

    from lightly_derm.jobs.plots import smooth

    values = np.random.default_rng(n).normal(size=n).tolist()
    for weight in (0.0, 0.6, 0.9):
        expected = []
        for i in range(n):  # the weighted mean of the past, weights w^(i-j)
            w = np.array([weight ** (i - j) for j in range(i + 1)], dtype=np.float64)
            expected.append(float((w * np.array(values[: i + 1])).sum() / w.sum()))
        assert np.allclose(smooth(values, weight), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="weight"):
        smooth(values, 1.0)


def test_wrap_label_keeps_every_character() -> None:
    for text in ("a", "x" * 50, "train/melanoma/ISIC_0000002_downsampled.jpg", ""):
        for width in (1, 7, 16, 22):
            lines = wrap_label(text, width).split("\n")
            assert "".join(lines) == text
            assert all(len(line) <= width for line in lines)
    assert wrap_label("abc_defgh", 5) == "abc_\ndefgh"  # breaks after a separator
    with pytest.raises(ValueError, match="width"):
        wrap_label("a", 0)


def test_views_figure_shows_full_row_labels_inside_the_figure() -> None:
    names = [
        "train/seborrheic_keratosis/ISIC_0012345_downsampled.jpg",
        "nevus/ISIC_0000001.jpg",
    ]
    figure = views_figure(torch.randn(6, 3, 16, 16), 3, names)
    texts = [t.get_text().replace("\n", "") for t in figure.findobj(Text)]
    for name in names:
        assert name in texts
    FigureCanvasAgg(figure).draw()  # lay out as savefig does; nothing may stick out
    for axis in figure.axes[::3]:
        box = axis.yaxis.label.get_window_extent()
        assert box.x0 >= 0 and box.x1 <= figure.bbox.x1
