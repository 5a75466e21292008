"""benchmarks/gpu_views_kornia.py: its statistics against SciPy, and a tiny run."""

from __future__ import annotations

import gpu_views_kornia as bench
import pytest
import torch
from scipy import stats


@pytest.mark.parametrize("sizes", [(50, 80), (300, 200), (1000, 1000)])
def test_ks_distances_equal_scipys(sizes: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(sizes[0])
    a = torch.rand(sizes[0], generator=g, dtype=torch.float64) * 3 - 1
    b = torch.randn(sizes[1], generator=g, dtype=torch.float64)
    assert bench.ks_distance(a, b) == pytest.approx(
        stats.ks_2samp(a.numpy(), b.numpy()).statistic, abs=1e-12
    )
    assert bench.ks_uniform(a, -1.0, 2.0) == pytest.approx(
        stats.kstest(a.numpy(), stats.uniform(loc=-1.0, scale=3.0).cdf).statistic,
        abs=1e-12,
    )
    assert bench.ks_uniform(b, -1.0, 2.0) > 0.1  # the test can fail


def test_kornia_views_have_our_layout() -> None:
    images = torch.randint(0, 256, (3, 3, 20, 20), dtype=torch.uint8)
    for name, views in (("gravis", 4), ("byol", 2)):
        theirs = bench.KorniaViews(name, 16)
        ours = bench.ours(name, 16)
        assert theirs.num_views == ours.num_views == views
        with torch.no_grad():
            assert theirs(images).shape == ours(images).shape == (3 * views, 3, 16, 16)
