from __future__ import annotations

import pytest
import torch

from lightly_derm.transforms import Cutout
from lightly_derm.transforms.gpu import cutout, sample_cutout


@pytest.mark.parametrize(
    "height,width,holes,length", [(32, 32, 3, 8), (20, 30, 1, 7), (9, 40, 4, 32)]
)
def test_equals_cpu_cutout(height, width, holes, length) -> None:
    """Same centres: the batched holes equal lightly-derm's per-image Cutout."""
    images = torch.rand(4, 3, height, width)
    expected, centres = [], []
    for i in range(4):
        torch.manual_seed(100 + i)
        expected.append(Cutout(holes, length)(images[i]))
        torch.manual_seed(
            100 + i
        )  # Cutout draws rows, then columns, from the global RNG
        cy = torch.randint(height, (holes, 1))
        cx = torch.randint(width, (holes, 1))
        centres.append(torch.cat([cy, cx], dim=1))
    out = cutout(images, torch.stack(centres), length)
    torch.testing.assert_close(out, torch.stack(expected), rtol=0, atol=0)


def test_centres_uniform() -> None:
    centres = sample_cutout(20000, 10, 7, 1, generator=torch.Generator().manual_seed(0))
    rows = torch.bincount(centres[:, 0, 0], minlength=10).float() / 20000
    cols = torch.bincount(centres[:, 0, 1], minlength=7).float() / 20000
    assert (rows - 0.1).abs().max() < 0.01 and (cols - 1 / 7).abs().max() < 0.01
    assert centres.dtype == torch.long


def test_bad_centres() -> None:
    with pytest.raises(ValueError, match="centres"):
        cutout(torch.rand(2, 3, 8, 8), torch.zeros(2, 3), 4)
