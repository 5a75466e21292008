"""The jobs' evaluation and fine-tuning pipelines."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from lightly_derm.transforms import eval_transform, finetune_transform

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def test_eval_transform_is_deterministic_and_normalised() -> None:
    image = Image.new("L", (50, 40), 128)
    a, b = eval_transform(32)(image), eval_transform(32)(image)
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    torch.testing.assert_close(
        a[:, 0, 0], ((128 / 255 - MEAN) / STD).flatten(), atol=1e-4, rtol=0
    )
    assert finetune_transform(24)(image).shape == (3, 24, 24)


def test_eval_transform_takes_a_normalisation() -> None:
    from PIL import Image

    image = Image.new("RGB", (10, 10), (255, 0, 128))
    out = eval_transform(8, {"mean": [0.5] * 3, "std": [0.5] * 3})
    torch.testing.assert_close(
        out(image)[:, 0, 0], torch.tensor([1.0, -1.0, 0.0039]), atol=1e-3, rtol=0
    )


def test_the_old_import_path_warns_and_forwards() -> None:
    import lightly_derm.data as data
    import lightly_derm.jobs.transforms as old
    import lightly_derm.models as models
    import lightly_derm.transforms as transforms

    for name, home in (
        ("eval_transform", transforms),
        ("finetune_transform", transforms),
        ("renormalize_backbone_input", models),
        ("SyntheticSegmentationTransform", data),
    ):
        with pytest.warns(FutureWarning, match=f"moved to {home.__name__}.{name}"):
            assert getattr(old, name) is getattr(home, name)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        old.nothing  # noqa: B018
